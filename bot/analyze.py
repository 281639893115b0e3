"""`proctor analyze`: a recorded interview in, events, score and report out.

Decoding runs in the calling thread and detection in one worker thread, with
at most a couple of samples in flight between them (bounded, so a long file
never piles up in memory). Both release the GIL in their native code, so the
two overlap on a multi-core machine.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from bot.events import Event
from bot.frames import AudioChunk
from bot.media import MediaInfo, probe, sample_file
from bot.pipeline import Analyzer, Detectors
from bot.policy import Policy
from bot.report import ReportData, build_csv, build_json, build_pdf
from bot.rules import EventChange
from bot.score import Score, score
from bot.settings import Settings

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


def analyze_file(video: str | Path, *, audio: str | Path | None = None, policy: Policy | None = None,
                 settings: Settings | None = None, detectors: Detectors | None = None,
                 progress: bool | None = None) -> Analysis:
    """Run the detectors and rules over a recording. MediaError/ModelError on bad input."""
    policy = policy or Policy()
    settings = settings or Settings.from_env()
    info = probe(video)
    own = detectors is None
    detectors = detectors or Detectors.load(policy, settings)
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

    started = time.perf_counter()
    pending: deque[Future] = deque()
    last_t = 0.0
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="detect") as pool:
            for item in sample_file(video, policy.sampling, audio=audio, on_frame=on_frame):
                step = analyzer.audio if isinstance(item, AudioChunk) else analyzer.frame
                last_t = max(last_t, item.t + (item.duration if isinstance(item, AudioChunk) else 0.0))
                pending.append(pool.submit(step, item))
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


def write_outputs(result: Analysis, out: str | Path, *, policy: Policy, source: str | Path,
                  audio: str | Path | None = None) -> dict[str, Path]:
    """Write events.json, report.pdf, report.csv and snapshots/ into `out`.

    Each file is written to a temporary name and renamed, so a crash never
    leaves a half-written report behind.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    snaps = out / "snapshots"
    snaps.mkdir(exist_ok=True)
    interview = {
        "id": None,
        "candidate_name": Path(source).stem,
        "interviewer_email": None,
        "source": str(source),
        "audio": str(audio) if audio else None,
        "duration": result.media_seconds,
        "analyzed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": policy.to_dict(),
    }
    data = ReportData(interview=interview, events=result.events, audit=[], score=result.score)
    doc = build_json(data)
    for item, event in zip(doc["events"], result.events):
        if event.snapshot:
            name = f"snapshots/{event.id}.jpg"
            _atomic_write(out / name, event.snapshot)
            item["snapshot"] = name
    paths = {"events": out / "events.json", "pdf": out / "report.pdf", "csv": out / "report.csv"}
    _atomic_write(paths["events"], json.dumps(doc, indent=2, default=str).encode())
    _atomic_write(paths["pdf"], build_pdf(data))
    _atomic_write(paths["csv"], build_csv(data).encode())
    return paths


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
