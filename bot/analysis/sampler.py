"""The sampler: which detectors are due on a frame, each at its own rate (never every decoded frame)."""
from __future__ import annotations

from dataclasses import dataclass, field

from bot.analysis.frames import VideoFrame
from bot.analysis.policy import Sampling


@dataclass
class Sampler:
    """Which detectors are due at time t, each at its own rate.

    Keeps a time grid per detector, so a 30 fps source sampled at 5 fps gives
    every sixth frame, and a source slower than the rate gives every frame.
    """

    rates: dict[str, float]
    _next: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_policy(cls, sampling: Sampling) -> Sampler:
        return cls({"faces": sampling.face_fps, "objects": sampling.object_fps,
                    "camera": sampling.camera_fps})

    @property
    def max_rate(self) -> float:
        return max(self.rates.values())

    def due(self, t: float) -> frozenset[str]:
        names = []
        for name, fps in self.rates.items():
            nxt = self._next.get(name)
            if nxt is None or t + 1e-6 >= nxt:
                names.append(name)
                period = 1.0 / fps
                # stay on the grid; after a gap (slow source) restart it from t
                self._next[name] = t + period if nxt is None or nxt + period <= t else nxt + period
        return frozenset(names)


@dataclass(frozen=True, slots=True)
class SampledFrame:
    frame: VideoFrame
    due: frozenset[str]

    @property
    def t(self) -> float:
        return self.frame.t
