"""Live calls on this machine: frames analysed per second per call, and alert latency.

Starts the real server (embedded database), N aiortc candidates streaming the shared
no-face video with speech through the server's signaling, one interviewer listener per
call, and invites the real bot into each call. After the run it prints, per call, the
frames analysed per second and the latency from the frame the bot took to the alert on the
interviewer's socket. Everything runs in this one process, so the candidates' video
encoding (what browsers would do elsewhere) shares the 2 cores with the bots.

With ``--janus`` the calls are held in a Janus VideoRoom instead (Debian's ``janus``, started
as in the tests): each candidate publishes the same media there, each interview is created
with that room, and the bot receives through the Janus adapter. Janus's own CPU is measured
from /proc and shown beside the process's.

    .venv/bin/python benchmarks/bench_live.py [--calls 2] [--seconds 20] [--janus]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import Settings
from signaling import tokens
from tests.support.candidate import CandidatePeer
from tests.support.clients import Listener, http, served
from tests.support.janus_publisher import JanusPublisher
from tests.support.janus_server import PIN, ROOM, JanusServer
from tests.support.paths import MEDIA

VIDEO, AUDIO = MEDIA / "video/one-by-one-person-detection.mp4", MEDIA / "audio/english.wav"


async def main(calls: int, seconds: float, janus: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env()
        settings.data_dir, settings.max_bots, settings.secret_key = Path(tmp), calls, "bench"
        server = JanusServer(Path(tmp) / "janus") if janus else None
        if server is not None:
            server.start()
        try:
            async with served(settings, bots=True) as srv:
                await run_calls(srv, calls, seconds, server)
        finally:
            if server is not None:
                server.stop()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_calls(srv, calls: int, seconds: float, janus: JanusServer | None = None) -> None:
    settings, store, worker, url = srv.settings, srv.store, srv.bots, srv.url
    janus_pid = janus.proc.pid if janus is not None and janus.proc is not None else None
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    janus0 = process_cpu(janus_pid) if janus_pid else 0.0
    people = []
    try:
        for i in range(calls):
            name = f"Bench {i}"
            body: dict = {"candidate_name": name, "interviewer_email": "b@example.com"}
            if janus is not None:
                body["room"] = {"kind": "janus", "url": janus.url, "room": ROOM, "pin": PIN, "candidate": name}
            status, iv, _ = await http("POST", url + "/api/interviews", headers=srv.operator,  # as an operator
                                       json=body)
            assert status == 201, iv
            listener = Listener()
            await listener.connect(url, tokens.issue(settings.secret_key, iv["id"], "interviewer", 600))
            cand: CandidatePeer | JanusPublisher
            if janus is None:
                cand = CandidatePeer(url, tokens.issue(settings.secret_key, iv["id"], "candidate", 600), VIDEO, AUDIO)
            else:
                cand = JanusPublisher(janus.url, ROOM, name, pin=PIN, video=VIDEO, audio=AUDIO)
            await cand.start()
            await worker.invite(await store.get_interview(iv["id"]),
                                tokens.issue(settings.secret_key, iv["id"], "bot", 600), url)
            people.append((iv["id"], listener, cand))
        await asyncio.sleep(seconds)
        cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        janus1 = process_cpu(janus_pid) if janus_pid else 0.0
        frames = sum(worker.sessions[iid].stats.frames_analysed for iid, _, _ in people)
        where = "through Janus (VideoRoom, HTTP API)" if janus else "built-in call"
        print(f"{calls} call(s), {where}, {seconds:.0f} s, {settings.host}, default policy (faces 5/s, objects 1/s)")
        print("call  frames/s  audio chunks/s  alerts  latency ms (median / max, frame taken -> interviewer)")
        for n, (iid, listener, _) in enumerate(people):
            s = worker.sessions[iid]
            fired = {eid: taken for change, eid, taken, _ in s.stats.fired if change == "opened"}
            lat = [(got - fired[a["event"]["id"]]) * 1000 for got, a in listener.alerts
                   if a["change"] == "opened" and a["event"]["id"] in fired]
            span = time.monotonic() - s.stats.started
            text = f"{statistics.median(lat):6.0f} / {max(lat):4.0f}" if lat else "     - /    -"
            print(f"{n:4d}  {s.stats.fps():8.1f}  {s.stats.audio_chunks / span:14.1f}  {len(lat):6d}  {text}")
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        wall = wall1 - wall0
        print(f"process CPU {cpu / wall * 100:.0f}% of one core (bots + candidates' encoders), "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        if janus_pid:
            print(f"janus CPU {(janus1 - janus0) / wall * 100:.0f}% of one core")
        print(f"CPU per call {(cpu + janus1 - janus0) / wall / calls * 100:.0f}% of one core"
              + (" (process + janus)" if janus_pid else ""))
        # a loaded machine analyses fewer frames (and spends less): per analysed frame compares the two modes
        print(f"CPU per analysed frame {(cpu + janus1 - janus0) / max(1, frames) * 1000:.0f} ms "
              f"({frames} frames; loading the models and the candidates' encoders included)")
    finally:
        for _, listener, cand in people:
            await cand.stop()
            await listener.sio.disconnect()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--janus", action="store_true", help="hold the calls in a Janus VideoRoom (Debian's janus)")
    a = ap.parse_args()
    asyncio.run(main(a.calls, a.seconds, a.janus))
