"""Media values that flow from a source to the detectors.

A source (a file read with PyAV, or an aiortc track) produces these; detectors
consume them. Timestamps are seconds from the start of the media (offline) or
from the start of the call (live); they drive every rule, never the wall clock.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class VideoFrame:
    t: float
    image: np.ndarray  # H x W x 3, uint8, BGR (OpenCV order)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class AudioChunk:
    t: float  # time of the first sample
    samples: np.ndarray  # 1-D float32, mono, in [-1, 1]
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)
