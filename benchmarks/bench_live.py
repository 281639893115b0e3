"""Live calls on this machine: frames analysed per second per call, and alert latency.

Starts the real server (embedded database), N aiortc candidates streaming the shared
no-face video with speech through the server's signaling, one interviewer listener per
call, and invites the real bot into each call. After the run it prints, per call, the
frames analysed per second and the latency from the frame the bot took to the alert on the
interviewer's socket. Everything runs in this one process, so the candidates' video
encoding (what browsers would do elsewhere) shares the 2 cores with the bots.

    .venv/bin/python benchmarks/bench_live.py [--calls 2] [--seconds 20]
"""
from __future__ import annotations

import argparse
import asyncio
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
from tests.support.paths import MEDIA


async def main(calls: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env()
        settings.data_dir, settings.max_bots, settings.secret_key = Path(tmp), calls, "bench"
        async with served(settings, bots=True) as srv:
            await run_calls(srv, calls, seconds)


async def run_calls(srv, calls: int, seconds: float) -> None:
    settings, store, worker, url = srv.settings, srv.store, srv.bots, srv.url
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    people = []
    try:
        for i in range(calls):
            status, iv, _ = await http("POST", url + "/api/interviews", headers=srv.operator,  # as an operator
                                       json={"candidate_name": f"Bench {i}", "interviewer_email": "b@example.com"})
            assert status == 201, iv
            listener = Listener()
            await listener.connect(url, tokens.issue(settings.secret_key, iv["id"], "interviewer", 600))
            cand = CandidatePeer(url, tokens.issue(settings.secret_key, iv["id"], "candidate", 600),
                                 MEDIA / "video/one-by-one-person-detection.mp4", MEDIA / "audio/english.wav")
            await cand.start()
            await worker.invite(await store.get_interview(iv["id"]),
                                tokens.issue(settings.secret_key, iv["id"], "bot", 600), url)
            people.append((iv["id"], listener, cand))
        await asyncio.sleep(seconds)
        cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        print(f"{calls} call(s), {seconds:.0f} s, {settings.host}, default policy (faces 5/s, objects 1/s)")
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
        print(f"process CPU {cpu / (wall1 - wall0) * 100:.0f}% of one core (bots + candidates' encoders), "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        for _, listener, cand in people:
            await cand.stop()
            await listener.sio.disconnect()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    asyncio.run(main(a.calls, a.seconds))
