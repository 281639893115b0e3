"""The fleet's figures on this machine, with real processes: one ``proctor serve --no-worker`` node, ``proctor
worker`` processes, Debian's redis-server, the embedded database, and aiortc candidates (in this process,
apart from the workers) streaming a still of two people (``multiple_faces`` opens within seconds).

    .venv/bin/python benchmarks/bench_fleet.py idle            # CPU and RSS of an idle worker
    .venv/bin/python benchmarks/bench_fleet.py failover -n 5   # SIGKILL of the worker -> bot back in the call
    .venv/bin/python benchmarks/bench_fleet.py admit --max 8   # calls one worker takes before its load threshold
    .venv/bin/python benchmarks/bench_fleet.py spread --calls 4 --seconds 30   # calls over two workers

Workers report their calls' counters with their heartbeat (``per_call``); the tables read them from Redis.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.fleet.jobs import RedisDispatch
from tests.support.candidate import CandidatePeer
from tests.support.clients import TEST_API_KEY, Listener, http
from tests.support.fleet_procs import ProctorProcess, fleet_env
from tests.support.paths import MEDIA
from tests.support.redis_server import RedisServer
from tests.support.scenario import Segment, compose, still
from tests.support.servers import MongoServer, free_port

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            kids.setdefault(int(raw[raw.rfind(b")") + 2:].split()[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_rss(pid: int) -> tuple[float, float]:
    """CPU seconds and RSS MiB of a process and its children."""
    cpu = rss = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            cpu += (int(rest[11]) + int(rest[12])) / TICKS
            rss += int(rest[21]) * PAGE / 2**20
        except (OSError, IndexError):
            pass
    return cpu, rss


class Fleet:
    def __init__(self, root: Path, workers: int, **env: str) -> None:
        self.root = root
        self.redis = RedisServer(root / "redis")
        self.mongo = MongoServer(root / "mongo")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.node: ProctorProcess | None = None
        self.workers: list[ProctorProcess] = []
        self.n = workers
        self.dispatch: RedisDispatch | None = None
        self.people: list[tuple[str, str, Listener, CandidatePeer]] = []

    def common(self) -> dict[str, str]:
        return {"MONGODB_URI": self.mongo.uri, "REDIS_URL": self.redis.url, "PROCTOR_SECRET_KEY": "bench",
                "PROCTOR_API_KEY": TEST_API_KEY, **self.env}

    async def __aenter__(self) -> Fleet:
        self.redis.start()
        await self.mongo.start()
        self.node = ProctorProcess("node", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(self.port)],
                                   fleet_env(**self.common(), PROCTOR_DATA_DIR=str(self.root / "node")), self.root)
        await self.node.start()
        for i in range(self.n):
            await self.add_worker(f"w{i + 1}")
        await self.node.wait_http(self.url)
        self.dispatch = RedisDispatch(self.redis.url)
        return self

    async def add_worker(self, name: str) -> ProctorProcess:
        w = ProctorProcess(name, ["worker", "--worker-id", name], fleet_env(**self.common()), self.root)
        await w.start()
        await w.wait_log(rf"worker {name}: up to", 60)
        self.workers.append(w)
        return w

    async def call(self, video: Path, name: str = "Bench", encoded: Path | None = None) -> tuple[str, int]:
        status, created, _ = await http("POST", f"{self.url}/api/interviews",
                                        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                                        json={"candidate_name": name, "interviewer_email": "b@example.com"})
        assert status == 201, created
        iid = created["id"]
        tok = parse_qs(urlsplit(created["interviewer_url"]).query)["token"][0]
        listener = Listener()
        await listener.connect(self.url, tok)
        cand = CandidatePeer(self.url, parse_qs(urlsplit(created["candidate_url"]).query)["token"][0], video,
                             encoded=encoded)
        await cand.start()
        self.people.append((iid, tok, listener, cand))
        status, body, _ = await http("POST", f"{self.url}/api/interviews/{iid}/bot",
                                     headers={"Authorization": f"Bearer {tok}"})
        return iid, status

    async def __aexit__(self, *exc: object) -> None:
        for _, _, listener, cand in self.people:
            await cand.stop()
            await listener.sio.disconnect()
        for p in [*self.workers, self.node]:
            if p is not None:
                p.kill(signal.SIGTERM if p is self.node else signal.SIGKILL)
                await p.stop(10)
        if self.dispatch:
            await self.dispatch.close()
        await self.mongo.stop(kill=True)
        self.redis.stop()


def media(root: Path) -> Path:
    path = root / "two_people.mp4"
    compose(path, [Segment("two", 20.0, still(MEDIA / "images/two_people.jpg"))])
    return path


async def idle(root: Path, seconds: float) -> None:
    async with Fleet(root, 1) as fleet:
        w = fleet.workers[0]
        await asyncio.sleep(3)
        c0, _ = cpu_rss(w.pid)
        await asyncio.sleep(seconds)
        c1, rss = cpu_rss(w.pid)
        print(f"idle worker over {seconds:.0f} s: CPU {(c1 - c0) / seconds * 100:.2f}% of one core, RSS {rss:.0f} MiB")


async def failover(root: Path, rounds: int) -> None:
    video = media(root)
    async with Fleet(root, 2, PROCTOR_WORKER_TIMEOUT="10") as fleet:
        assert fleet.node is not None and fleet.dispatch is not None
        iid, status = await fleet.call(video, "Failover")
        assert status == 202
        listener = fleet.people[0][2]
        back, alert = [], []
        spare = 3
        for r in range(rounds):
            joined = len(re.findall(rf"bot \S+ joined interview {iid}", fleet.node.log()))
            if r == 0:
                await fleet.node.wait_log(rf"bot \S+ joined interview {iid}", 60)
                joined = 1
            deadline = time.monotonic() + 60
            while not any(a["change"] == "opened" for _, a in listener.alerts[-1:]) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)
            running = await fleet.dispatch.worker_of(iid)
            victim = next(w for w in fleet.workers if w.name == running)
            seen = len(listener.alerts)
            t0 = time.monotonic()
            victim.kill()
            fleet.workers.remove(victim)
            while len(re.findall(rf"bot \S+ joined interview {iid}", fleet.node.log())) <= joined:
                await asyncio.sleep(0.05)
            back.append(time.monotonic() - t0)
            while not any(a["change"] == "opened" for _, a in listener.alerts[seen:]):
                await asyncio.sleep(0.05)
            alert.append(time.monotonic() - t0)
            print(f"round {r + 1}: bot back in the call {back[-1]:.1f} s after SIGKILL, new alert {alert[-1]:.1f} s")
            await fleet.add_worker(f"w{spare}")
            spare += 1
        print(f"SIGKILL -> bot back in the call: median {statistics.median(back):.1f} s "
              f"(min {min(back):.1f}, max {max(back):.1f}, n={len(back)}); -> new alert: median "
              f"{statistics.median(alert):.1f} s; PROCTOR_WORKER_TIMEOUT=10")


async def admit(root: Path, most: int) -> None:
    # the calls of bench_calls.py: a face and speech, sent pre-encoded as a browser would (VP8 at 8 frames/s,
    # Opus in 60 ms packets), so the candidates here cost ~15 ms of CPU per second each, not an encoder's ~250
    from bench_calls import recording  # a sibling script: benchmarks/ is on sys.path when this one runs

    video, encoded = recording(root)
    async with Fleet(root, 1, PROCTOR_MAX_BOTS=str(most)) as fleet:
        assert fleet.dispatch is not None
        taken = 0
        for i in range(most):
            _, status = await fleet.call(video, f"Admit {i}", encoded=encoded)
            load = (await fleet.dispatch.workers()).get("w1", {})
            print(f"call {i + 1}: HTTP {status}; worker load before it: cpu {load.get('cpu')}, "
                  f"calls {load.get('calls')}")
            if status != 202:
                break
            taken += 1
            await asyncio.sleep(8)  # the load average sees the new call before the next invitation
        load = (await fleet.dispatch.workers()).get("w1", {})
        print(f"one worker took {taken} call(s) before PROCTOR_LOAD_THRESHOLD=0.7 of {os.cpu_count()} cores "
              f"(last load {load.get('cpu')}, RSS {load.get('rss_mb')} MiB)")


async def spread(root: Path, calls: int, seconds: float) -> None:
    video = media(root)
    async with Fleet(root, 2, PROCTOR_LOAD_THRESHOLD="0.99") as fleet:
        assert fleet.dispatch is not None
        for i in range(calls):
            _, status = await fleet.call(video, f"Spread {i}")
            assert status == 202
            await asyncio.sleep(1.5)  # one claim per worker heartbeat: let the other worker take the next
        await asyncio.sleep(seconds)
        workers = await fleet.dispatch.workers()
        print(f"{calls} calls over {len(workers)} workers, {seconds:.0f} s")
        print("worker  call      frames/s  audio chunks  RSS MiB")
        for name, load in sorted(workers.items()):
            for iid, c in load.get("per_call", {}).items():
                print(f"{name:6}  {iid[:8]}  {c.get('fps', 0):8.1f}  {c.get('audio_chunks', 0):12d}  "
                      f"{c.get('rss_mb', 0):7.0f}")
            print(f"{name:6}  total CPU {load.get('cpu', 0) * 100:.0f}% of the machine, RSS {load.get('rss_mb')} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("idle").add_argument("--seconds", type=float, default=20)
    sub.add_parser("failover").add_argument("-n", type=int, default=5)
    sub.add_parser("admit").add_argument("--max", type=int, default=8)
    s = sub.add_parser("spread")
    s.add_argument("--calls", type=int, default=4)
    s.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.what == "idle":
            asyncio.run(idle(root, args.seconds))
        elif args.what == "failover":
            asyncio.run(failover(root, args.n))
        elif args.what == "admit":
            asyncio.run(admit(root, args.max))
        else:
            asyncio.run(spread(root, args.calls, args.seconds))


if __name__ == "__main__":
    main()
