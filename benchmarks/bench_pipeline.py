"""Whole-pipeline speed of `proctor analyze` on this machine.

Composes a 60 s, 640x480, 15 fps interview from the shared media (faces,
objects, speech, black, frozen) and analyses it with the default policy, then
prints decoded frames per second, sampled frames per second, the real-time
factor, per-detector milliseconds and peak memory.

    .venv/bin/python benchmarks/bench_pipeline.py [--seconds 60] [--video FILE]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.models import model_paths
from bot.analysis.offline import analyze_file
from bot.analysis.pipeline import Detectors
from bot.analysis.policy import Policy
from bot.analysis.recording import iter_video, probe
from bot.settings import Settings
from tests.support.paths import MEDIA
from tests.support.scenario import Segment, black, clip, compose, frozen, still


def scenario(path: Path, seconds: float) -> Path:
    parts = [
        Segment("a", 10, clip(MEDIA / "video/student.mkv")),
        Segment("b", 5, still(MEDIA / "images/two_people.jpg")),
        Segment("c", 10, clip(MEDIA / "video/thanks.mkv")),
        Segment("d", 5, still(MEDIA / "images/desk_phone_laptop_book.jpg")),
        Segment("e", 10, still(MEDIA / "images/astronaut.png"), speech=MEDIA / "audio/english.wav"),
        Segment("f", 5, black()),
        Segment("g", 10, frozen(MEDIA / "video/thanks.mkv")),
        Segment("h", 5, clip(MEDIA / "video/head-pose-face-detection-female.gif")),
    ]
    scale = seconds / sum(p.seconds for p in parts)
    for p in parts:
        p.seconds *= scale
    compose(path, parts)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--video", type=Path, help="analyse this file instead of a composed one")
    args = ap.parse_args()
    policy, settings = Policy(), Settings.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or scenario(Path(tmp) / "bench.mp4", args.seconds)
        info = probe(video)
        started = time.perf_counter()
        decoded = sum(1 for _ in iter_video(video))
        decode_s = time.perf_counter() - started
        started = time.perf_counter()
        detectors = Detectors.load(policy, model_paths(settings))
        load_s = time.perf_counter() - started
        try:
            result = analyze_file(video, policy=policy, detectors=detectors, progress=False)
        finally:
            detectors.close()
    wall = result.wall_seconds
    print(f"media: {info.width}x{info.height}, {result.media_seconds:.1f} s, {decoded} frames")
    print(f"models loaded in {load_s * 1000:.0f} ms; decode alone: {decoded / decode_s:.0f} frames/s")
    print(f"pipeline: {wall:.2f} s wall = {result.media_seconds / wall:.1f}x real time, "
          f"{decoded / wall:.0f} decoded frames/s, {result.samples / wall:.1f} analysed frames/s "
          f"({result.samples} sampled of {decoded})")
    print(f"events: {len(result.events)}, score {result.score.value:.1f} ({result.score.risk})")
    print("detector        n     mean ms   p50 ms   p95 ms")
    for name, t in sorted(result.timings.items()):
        print(f"{name:12} {t['n']:5d}   {t['mean']:8.2f} {t['p50']:8.2f} {t['p95']:8.2f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
