"""Detectors: each turns one frame (or audio chunk) into one observation; no I/O, no asyncio.

Importing this package is cheap: the model libraries load when a detector is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelPaths:
    """Where each model file is (resolved and checked by `adapters.models`)."""

    yunet: Path
    face_landmarker: Path
    yolo: Path
    face_recognition: Path | None = None  # identity_changed; None: that rule does not run
    silero_vad: Path | None = None  # voice activity; None: the spectral detector stands in (less precise)
