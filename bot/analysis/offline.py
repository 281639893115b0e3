"""`proctor analyze`: a recorded interview in, events and score out (`bot.report.files` writes the report).

Decoding runs in the calling thread, the object detector (YOLO, stateless) in a thread of its own and every
other detector and the rules in one more, in the samples' order; at most ``IN_FLIGHT`` samples are in flight
(bounded, so a long file never piles up in memory). All of them release the GIL in their native code, so
they overlap on a multi-core machine.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bot.analysis.detectors import ModelPaths
from bot.analysis.events import Event
from bot.analysis.frames import AudioChunk
from bot.analysis.pipeline import Analyzer, Detectors
from bot.analysis.policy import Policy
from bot.analysis.recording import MediaInfo, probe, sample_file
from bot.analysis.rules import EventChange
from bot.analysis.score import Score, score

IN_FLIGHT = 2  # samples queued for the detector thread at most


@dataclass
class Analysis:
    info: MediaInfo
    events: list[Event]
    score: Score
    timings: dict[str, dict[str, float]]
    samples: int
    wall_seconds: float
    media_seconds: float


def analyze_file(video: str | Path, *, models: ModelPaths | None = None, audio: str | Path | None = None,
                 policy: Policy | None = None, detectors: Detectors | None = None,
                 progress: bool | None = None, on_progress: Callable[[float], None] | None = None) -> Analysis:
    """Run the detectors and rules over a recording (`detectors` given, or loaded from `models` and closed
    at the end). `progress`: a progress bar on stderr; `on_progress(t)`: called with the media time reached
    (`proctor analyze` over many files sums them in one bar). MediaError on bad input."""
    policy = policy or Policy()
    info = probe(video)
    own = detectors is None
    if detectors is None:
        if models is None:
            raise ValueError("analyze_file needs the model paths or loaded detectors")
        detectors = Detectors.load(policy, models)
    analyzer = Analyzer(policy, detectors)
    events: dict[str, Event] = {}

    def apply(changes: list[EventChange]) -> None:
        for change in changes:
            old = events.get(change.event.id)
            if old is not None and change.event.snapshot is None:
                change.event.snapshot = old.snapshot  # evidence is taken when the event opens
            events[change.event.id] = change.event

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=round(info.duration, 1) if info.duration else None, unit="s", disable=not show,
               desc=Path(video).name, bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s [{elapsed}<{remaining}]")

    def on_frame(t: float) -> None:
        if bar.total is None or t <= bar.total:
            bar.update(t - bar.n)
        if on_progress is not None:
            on_progress(t)

    started = time.perf_counter()
    pending: deque[Future] = deque()
    last_t = 0.0
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="detect") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="objects") as yolo:
            for item in sample_file(video, policy.sampling, audio=audio, on_frame=on_frame):
                if isinstance(item, AudioChunk):
                    last_t = max(last_t, item.t + item.duration)
                    pending.append(pool.submit(analyzer.audio, item))
                else:
                    last_t = max(last_t, item.t)
                    seen = yolo.submit(analyzer.objects, item.frame).result if "objects" in item.due else None
                    pending.append(pool.submit(analyzer.frame, item, objects=seen))
                while len(pending) > IN_FLIGHT:
                    apply(pending.popleft().result())
            while pending:
                apply(pending.popleft().result())
            end = max(last_t, info.duration or 0.0)
            apply(analyzer.finish(end))
    finally:
        bar.close()
        if own:
            detectors.close()
    ordered = sorted(events.values(), key=lambda e: (e.start, e.type))
    return Analysis(info=info, events=ordered, score=score(ordered, policy),
                    timings=analyzer.timings.summary(), samples=analyzer.samples,
                    wall_seconds=time.perf_counter() - started, media_seconds=end)
