"""N live calls on this machine, the bots' own figures: candidates in a separate process, bots in the fleet.

Starts Debian's redis-server, the embedded database, one ``proctor serve --no-worker`` node and one ``proctor
worker`` (up to N calls, refusing none by load or by pace, ``PROCTOR_OVERCOMMIT``: this measures, it does not
admit), then a separate process with N aiortc candidates streaming a composed recording with a face and speech
(10 s of a person talking, then 8 s of an empty room with a laptop: face_missing and a laptop each loop, so
alerts keep coming), pre-encoded as a browser would send it to the bot: VP8 at the 8 frames/s and 500 kbit/s
the bot asks for, and Opus in the 60 ms packets it asks for (Chromium follows all three: tests/test_browser.py),
sent packet by packet, so the candidates cost little. The bench process holds one interviewer
socket per call.

It prints a table per call and one line anyone can compare:

    SUMMARY calls=N face_fps_min=X object_fps_min=X audio_chunks_per_s_min=X alert_p95_ms=X cpu_ms_per_call_s=X
            floor_ms_per_call_s=X rss_mib_per_call=X pss_mib_per_call=X

The floor is the sum of each detector family's CPU milliseconds (measured here, on the same recording, in this
process before the calls start) times its rate in the default policy.

    .venv/bin/python benchmarks/bench_calls.py --calls 8 --seconds 40
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.analysis.frames import AudioChunk, VideoFrame
from bot.analysis.policy import Policy
from tests.support.clients import Listener, http
from tests.support.fleet_procs import ProctorProcess, fleet_env
from tests.support.paths import MEDIA, shared_models
from tests.support.redis_server import RedisServer
from tests.support.scenario import Segment, clip, compose, load_audio, read_clip, still
from tests.support.servers import MongoServer, free_port

TICKS = os.sysconf("SC_CLK_TCK")
OPERATOR_KEY = "bench-operator-key-0123456789"  # PROCTOR_API_KEY of the bench's node
PER_PROCESS = 2  # candidates per process


def recording(root: Path) -> tuple[Path, Path]:
    """The composed recording (mp4, for the floor), and the same as the browser would send it to the bot: VP8 at
    the bot's 8 frames/s with a key frame every 2 s, and Opus in the 60 ms packets the bot's offer asks for (webm,
    sent packet by packet)."""
    path = root / "call.mp4"
    compose(path, [Segment("talking", 10.0, clip(MEDIA / "video/student.mkv"), speech=MEDIA / "audio/english.wav"),
                   Segment("empty", 8.0, still(MEDIA / "images/room_laptop.jpg"))])
    webm = root / "call.webm"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-r", "8", "-c:v", "libvpx",
                    "-b:v", "500k", "-deadline", "realtime", "-g", "16", "-c:a", "libopus", "-ar", "48000",
                    "-ac", "1", "-b:a", "32k", "-frame_duration", "60", str(webm)], check=True)
    return path, webm


def floor_ms(path: Path) -> tuple[float, dict[str, float]]:
    """CPU ms per call-second of the detectors alone: each family's CPU time per run times its rate."""
    import cv2

    from bot.analysis.pipeline import Analyzer, Detectors

    cv2.setNumThreads(1)  # as in a call's process (bot/callproc.py)
    policy = Policy()
    detectors = Detectors.load(policy, shared_models(), threads=1)
    analyzer = Analyzer(policy, detectors)
    images = read_clip(path)
    s = policy.sampling
    try:
        for i in range(10):  # warm-up
            analyzer.frame(VideoFrame(t=i * 0.2, image=images[i]), frozenset({"faces", "objects", "camera"}))
        per: dict[str, float] = {}
        for name, rate in (("faces", s.face_fps), ("objects", s.object_fps), ("camera", s.camera_fps)):
            n = 40 if name != "objects" else 15
            detector = getattr(detectors, name)
            t0 = time.process_time()
            for i in range(n):
                detector.process(VideoFrame(t=10 + i / rate, image=images[(i * 3) % len(images)]))
            per[name] = (time.process_time() - t0) / n * 1000 * rate
        ident = detectors.identity
        if ident is not None:  # one embedding per check, at the settled seat's rate (a face tracked unbroken)
            frame = VideoFrame(t=0.0, image=images[0])
            face = detectors.faces.process(frame)
            t0 = time.process_time()
            for _ in range(5):
                ident.embed(ident.chip(frame.image, face.landmarks))
            per["identity"] = (time.process_time() - t0) / 5 * 1000 / s.identity_settled_every
        samples = load_audio(MEDIA / "audio/english.wav")
        step = int(s.audio_chunk * 16000)
        chunks = [samples[i:i + step] for i in range(0, len(samples) - step, step)][:20]
        t0 = time.process_time()
        for i, c in enumerate(chunks):
            analyzer.audio(AudioChunk(t=100 + i * s.audio_chunk, samples=c, sample_rate=16000))
        per["audio"] = (time.process_time() - t0) / len(chunks) * 1000 / s.audio_chunk
    finally:
        detectors.close()
    return sum(per.values()), per


def q95(values: list[float]) -> float:
    """The 95th percentile, within the values (few alerts per call: never extrapolated past the largest)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def candidates_main(server: str, tokens: list[str], video: str, encoded: str, ready: Any, stop: Any) -> None:
    """The candidates' process: one aiortc peer per call sending the pre-encoded recording, until told to stop."""
    from tests.support.candidate import CandidatePeer

    # The candidates stand in for browsers on machines of their own: they get the CPU they need (~15 ms per
    # candidate-second) on time, so a saturated machine does not make them send late or skip frames, which the
    # bots would be blamed for. Raising their priority needs root (or CAP_SYS_NICE); without it they run as is.
    try:
        os.nice(-10)
    except OSError:
        print("candidates: cannot raise their priority (not root); on a saturated machine they may send late")

    async def run() -> None:
        peers = [CandidatePeer(server, tok, video, encoded=encoded) for tok in tokens]
        for p in peers:
            await p.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for p in peers:
            await p.stop()

    asyncio.run(run())


def pss_mib(pid: int) -> float:
    """Proportional set size: the process's own pages plus its share of the pages it shares (libraries' code
    is one copy for every call process, which RSS counts in full for each)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the call process is one process; onnxruntime threads count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / TICKS
    except (OSError, IndexError):
        return 0.0


async def main(calls: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video, encoded = recording(root)
        floor, per = floor_ms(video)
        redis, mongo = RedisServer(root / "redis"), MongoServer(root / "mongo")
        redis.start()
        await mongo.start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        common = {"MONGODB_URI": mongo.uri, "REDIS_URL": redis.url, "PROCTOR_SECRET_KEY": "bench",
                  "PROCTOR_API_KEY": OPERATOR_KEY,
                  "PROCTOR_MAX_BOTS": str(calls), "PROCTOR_LOAD_THRESHOLD": "10", "PROCTOR_OVERCOMMIT": "1"}
        node = ProctorProcess("node", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
                              fleet_env(**common, PROCTOR_DATA_DIR=str(root / "node")), root)
        worker = ProctorProcess("w1", ["worker", "--worker-id", "w1"], fleet_env(**common), root)
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        cand_procs: list[Any] = []
        listeners: list[Listener] = []
        from bot.fleet.jobs import RedisDispatch
        dispatch = RedisDispatch(redis.url)
        try:
            await node.start()
            await worker.start()
            await node.wait_http(url)
            await worker.wait_log(r"worker w1: up to", 60)
            made = []
            for i in range(calls):
                status, created, _ = await http("POST", f"{url}/api/interviews", json={
                    "candidate_name": f"Bench {i}", "interviewer_email": "b@example.com"},
                    headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
                assert status == 201, created
                q = {k: parse_qs(urlsplit(created[k]).query)["token"][0] for k in ("interviewer_url", "candidate_url")}
                listener = Listener()
                await listener.connect(url, q["interviewer_url"])
                listeners.append(listener)
                made.append((created["id"], q["interviewer_url"], q["candidate_url"]))
            tokens = [m[2] for m in made]
            for k in range(0, calls, PER_PROCESS):  # aiortc senders are Python: a few per process keep pace
                ready = ctx.Event()
                proc = ctx.Process(target=candidates_main,
                                   args=(url, tokens[k:k + PER_PROCESS], str(video), str(encoded), ready, stop))
                proc.start()
                cand_procs.append(proc)
                await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
            for iid, tok, _ in made:
                status, body, _ = await http("POST", f"{url}/api/interviews/{iid}/bot",
                                             headers={"Authorization": f"Bearer {tok}"})
                assert status == 202, body
                await asyncio.sleep(1.2)  # one claim per worker heartbeat
            await asyncio.sleep(8)  # every bot joined and warmed up
            before = (await dispatch.workers())["w1"]["per_call"]
            cpu0 = {iid: proc_cpu(c["pid"]) for iid, c in before.items()}
            others0 = {"candidates": sum(proc_cpu(p.pid) for p in cand_procs),
                       "worker + node": proc_cpu(worker.proc.pid) + proc_cpu(node.proc.pid)}
            t0 = time.monotonic()
            n_alerts = [len(lst.alerts) for lst in listeners]
            await asyncio.sleep(seconds)
            span = time.monotonic() - t0
            after = (await dispatch.workers())["w1"]["per_call"]
            cpu1 = {iid: proc_cpu(c["pid"]) for iid, c in after.items()}
            others1 = {"candidates": sum(proc_cpu(p.pid) for p in cand_procs),
                       "worker + node": proc_cpu(worker.proc.pid) + proc_cpu(node.proc.pid)}
            pss = {iid: pss_mib(c["pid"]) for iid, c in after.items()}
        finally:
            stop.set()
            for proc in cand_procs:
                proc.join(20)
            for lst in listeners:
                await lst.sio.disconnect()
            await worker.stop(30)
            await node.stop(30)
            await dispatch.close()
            await mongo.stop(kill=True)
            redis.stop()

    rows, lat_all = [], []
    slowest: list[tuple[float, str]] = []
    print(f"{calls} call(s), {span:.0f} s measured, default policy (faces 5/s, objects 1/s, audio 2 chunks/s); "
          f"candidates in {len(cand_procs)} process(es) of their own, sending pre-encoded media")
    print("call      faces/s  objects/s  audio/s  lost  received/s  alerts  latency p95 ms  CPU ms/s  RSS MiB  "
          "PSS MiB  objects deferred  samples dropped")
    for (iid, _, _), lst, n0 in zip(made, listeners, n_alerts, strict=True):
        b, a = before.get(iid), after.get(iid)
        if not b or not a:
            print(f"{iid[:8]}  (no figures: the call was not running)")
            continue

        # over the span between the call's own two snapshots (its figures reach the heartbeat up to ~2 s late)
        own_span = a["at"] - b["at"] if a.get("at") and b.get("at") and a["at"] > b["at"] else span

        def rate(key: str, sub: str | None = None, b: dict = b, a: dict = a, own_span: float = own_span) -> float:
            x0 = b.get(key, 0) if sub is None else b.get(key, {}).get(sub, 0)
            x1 = a.get(key, 0) if sub is None else a.get(key, {}).get(sub, 0)
            return (x1 - x0) / own_span

        typed = [((got - al["taken_at"]) * 1000, al["event"]["type"]) for got, al in lst.alerts[n0:]
                 if al["change"] == "opened" and "taken_at" in al]
        lat = [ms for ms, _ in typed]
        lat_all += lat
        slowest += typed
        cpu = (cpu1.get(iid, 0) - cpu0.get(iid, 0)) / span * 1000
        p95 = q95(lat)
        row = dict(faces=rate("samples", "faces"), objects=rate("samples", "objects"), audio=rate("audio_chunks"),
                   lost=a.get("audio_dropped", 0) - b.get("audio_dropped", 0), recv=rate("frames_received"),
                   alerts=len(lat), p95=p95, cpu=cpu, rss=a.get("rss_mb", 0), pss=pss.get(iid, 0.0))
        rows.append(row)
        print(f"{iid[:8]}  {row['faces']:7.1f}  {row['objects']:9.1f}  {row['audio']:7.1f}  {row['lost']:4d}  "
              f"{row['recv']:10.1f}  {row['alerts']:6d}  {p95:14.0f}  {cpu:8.0f}  {row['rss']:7.0f}  "
              f"{row['pss']:7.0f}  "
              f"{a.get('objects_deferred', 0) - b.get('objects_deferred', 0):16d}  "
              f"{a.get('samples_dropped', 0) - b.get('samples_dropped', 0):15d}")
    if not rows:
        return
    p95_all = q95(lat_all)
    print("slowest alerts (ms, type): " + ", ".join(f"{ms:.0f} {kind}" for ms, kind in sorted(slowest)[-5:][::-1]))
    cpu_per = statistics.mean(r["cpu"] for r in rows)
    print("floor (detectors alone, CPU ms per call-second): " + ", ".join(f"{k} {v:.0f}" for k, v in per.items())
          + f" = {floor:.0f}; measured / floor = {cpu_per / floor:.2f}x")
    print("the rest, CPU ms per call-second: " + ", ".join(
        f"{k} {(others1[k] - others0[k]) / span * 1000 / calls:.0f}" for k in others0))
    print(json.dumps({"load_average": os.getloadavg()}))
    print(f"SUMMARY calls={calls} face_fps_min={min(r['faces'] for r in rows):.1f} "
          f"object_fps_min={min(r['objects'] for r in rows):.1f} "
          f"audio_chunks_per_s_min={min(r['audio'] for r in rows):.1f} alert_p95_ms={p95_all:.0f} "
          f"cpu_ms_per_call_s={cpu_per:.0f} floor_ms_per_call_s={floor:.0f} "
          f"rss_mib_per_call={statistics.mean(r['rss'] for r in rows):.0f} "
          f"pss_mib_per_call={statistics.mean(r['pss'] for r in rows):.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    asyncio.run(main(args.calls, args.seconds))
