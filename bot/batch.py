"""`proctor analyze` over a backlog: several recordings (files, folders, globs) at once, one progress bar.

Each recording is analysed in a process of a pool (``--jobs``, default the machine's cores), which loads the
models once and keeps them for every file it takes; its outputs go to ``OUT/<name>/`` (events.json,
report.pdf, report.csv, snapshots/). Progress comes back over a queue as seconds of media analysed, so the
bar counts the whole backlog's media. A recording that cannot be read is reported and the others go on.
"""
from __future__ import annotations

import glob
import multiprocessing
import os
import queue
import sys
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".gif", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}


class BatchError(ValueError):
    """Nothing to analyse (no such file, an empty folder, a glob that matches nothing)."""


def expand(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their video files, not recursive) and globs, in order, each file once."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise BatchError(f"{item}: no video files in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                raise BatchError(f"{item}: matches no file")
            out += found
        else:
            raise BatchError(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def output_dirs(files: list[Path], out: Path) -> list[Path]:
    """``OUT/<stem>``, with ``-2``, ``-3``... when two recordings share a name."""
    used: dict[str, int] = {}
    dirs = []
    for f in files:
        n = used.get(f.stem, 0) + 1
        used[f.stem] = n
        dirs.append(out / (f.stem if n == 1 else f"{f.stem}-{n}"))
    return dirs


@dataclass
class Outcome:
    source: Path
    out: Path
    ok: bool
    message: str  # the summary line, or the error
    media_seconds: float = 0.0
    wall_seconds: float = 0.0


# --- the pool's processes -------------------------------------------------------------------------------------

_state: dict[str, Any] = {}


def _init(models: Any, policy: Any, progress: Any) -> None:
    from bot.analysis.pipeline import Detectors

    _state["detectors"] = Detectors.load(policy, models)
    _state["policy"] = policy
    _state["progress"] = progress


def _analyse(source: str, out: str) -> tuple[bool, str, float, float]:
    from bot.analysis.offline import analyze_file
    from bot.analysis.recording import MediaError
    from bot.report.files import write_outputs

    progress = _state["progress"]
    last = [0.0]

    def tick(t: float) -> None:
        if t - last[0] >= 1.0:
            progress.put((source, t - last[0]))
            last[0] = t

    try:
        result = analyze_file(source, detectors=_state["detectors"], policy=_state["policy"], progress=False,
                              on_progress=tick)
        write_outputs(result, out, policy=_state["policy"], source=source)
    except MediaError as e:
        return False, str(e), 0.0, 0.0
    except OSError as e:
        return False, f"{e.filename or out}: {e.strerror or e}", 0.0, 0.0
    progress.put((source, max(0.0, result.media_seconds - last[0])))
    s = result.score
    return (True, f"{len(result.events)} events, score {s.value:.1f} ({s.risk})", result.media_seconds,
            result.wall_seconds)


def analyse_many(files: list[Path], out: Path, *, models: Any, policy: Any, jobs: int | None = None,
                 progress: bool | None = None) -> list[Outcome]:
    """Analyse every file, ``jobs`` at once; the outcomes in the files' order."""
    from bot.analysis.recording import MediaError, probe

    dirs = output_dirs(files, out)
    durations = []
    for f in files:
        try:
            durations.append(probe(f).duration or 0.0)
        except MediaError:
            durations.append(0.0)  # its own run reports the error
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(files)))
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=round(sum(durations), 1), unit="s", disable=not show, desc=f"{len(files)} recordings",
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of media [{elapsed}<{remaining}]")
    ctx = multiprocessing.get_context("spawn")
    ticks = ctx.Manager().Queue(maxsize=10_000)
    outcomes: dict[int, Outcome] = {}
    try:
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(models, policy, ticks)) as pool:
            running: dict[Future[tuple[bool, str, float, float]], int] = {
                pool.submit(_analyse, str(f), str(d)): i for i, (f, d) in enumerate(zip(files, dirs, strict=True))}
            while running:
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(ticks, bar)
                for fut in done:
                    i = running.pop(fut)
                    try:
                        ok, message, media, wall = fut.result()
                    except Exception as e:  # a crash in one recording's analysis never stops the others
                        ok, message, media, wall = False, f"analysis failed: {type(e).__name__}: {e}", 0.0, 0.0
                    outcomes[i] = Outcome(files[i], dirs[i], ok, message, media, wall)
                    bar.write(f"{'ok ' if ok else 'ERR'} {files[i]}: {message}")
            _drain(ticks, bar)
    finally:
        bar.close()
    return [outcomes[i] for i in range(len(files))]


def _drain(ticks: Any, bar: tqdm) -> None:
    while True:
        try:
            _, seconds = ticks.get_nowait()
        except queue.Empty:
            return
        bar.update(seconds)
