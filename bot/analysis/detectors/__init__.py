"""Detectors: each turns one frame (or audio chunk) into one observation; no I/O, no asyncio.

Importing this package is cheap: the model libraries load when a detector is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelPaths:
    """Where each model file is (resolved and checked by `adapters.models`)."""

    yunet: Path
    face_landmarker: Path
    yolo: Path
    face_recognition: Path | None = None  # identity_changed; None: that rule does not run
    silero_vad: Path | None = None  # voice activity; None: the spectral detector stands in (less precise)


def cpu_session(model: str | Path, *, threads: int = 1, log_severity: int | None = None, arena: bool = True) -> Any:
    """An onnxruntime session on the CPU, run sequentially with ``threads`` intra-op threads and one inter-op
    thread (a call's process runs several models; more threads per model only contend).

    ``arena=False``: without onnxruntime's memory arena, which keeps the peak of every run's intermediate
    tensors for the life of the session (YOLO at 640x480 ~21 MiB, YuNet ~10). A live call's process runs so and
    trims its heap every few seconds (bot.callproc): 347 -> 328 MiB RSS for one call, the same speed within
    noise (benchmarks/bench_calls.py). ``proctor analyze`` keeps the arena: without it glibc's arenas of its
    three threads grew instead (peak 537 MiB instead of 413-422, benchmarks/bench_pipeline.py)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_cpu_mem_arena = arena
    if log_severity is not None:
        so.log_severity_level = log_severity
    return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
