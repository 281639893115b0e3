"""Camera health without a model: is the picture black, covered, or frozen?

All measures are taken on small gray copies of the frame (~160 px wide), so a call costs well
under a millisecond:

* brightness: mean luma 0..255;
* detail: variance of the Laplacian (texture); a lens covered by a finger or tape is flat;
* blocked: brightness < ``black_brightness`` or detail < ``flat_detail``;
* changed: mean absolute difference to the previous processed frame, on a nearest-pixel subsample
  (every k-th pixel, not an average, so per-pixel sensor noise is kept rather than smoothed away);
* frozen_for: seconds since the picture last changed by more than ``frozen_change``.

A live camera always has sensor noise, so consecutive frames differ by roughly 0.5-3 levels even
when nothing moves, while a frozen feed repeats identical frames (difference 0, or a tiny amount
from re-encoding); ``frozen_change`` (0.6) sits between the two. A compressed file of a static
scene (one-by-one-person-detection.mp4's empty room) can also fall below it: offline, a
"frozen" reading on a still scene is expected. The first frame (and a frame of another size) has nothing to
compare to: changed = 0,
frozen_for = 0.
"""
from __future__ import annotations

import cv2
import numpy as np

from bot.analysis.frames import VideoFrame
from bot.analysis.observations import CameraObservation
from bot.analysis.policy import Policy

SMALL_WIDTH = 160


class CameraHealth:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._prev: np.ndarray | None = None
        self._last_change_t: float | None = None

    def reset(self) -> None:
        self._prev = None
        self._last_change_t = None

    def close(self) -> None:
        self.reset()

    def process(self, frame: VideoFrame) -> CameraObservation:
        img = frame.image
        h, w = img.shape[:2]
        sw = min(SMALL_WIDTH, w)
        sh = max(1, int(round(h * sw / w)))
        small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        gray = _gray(small)
        brightness = float(gray.mean())
        detail = float(cv2.Laplacian(gray, cv2.CV_32F).var())
        step = max(1, w // SMALL_WIDTH)
        sample = _gray(np.ascontiguousarray(img[::step, ::step]))
        det = self.policy.detection
        blocked = brightness < det.black_brightness or detail < det.flat_detail

        prev = self._prev
        if prev is None or prev.shape != sample.shape:
            changed = 0.0
            self._last_change_t = frame.t
        else:
            changed = float(cv2.absdiff(sample, prev).mean())
            if changed > det.frozen_change or self._last_change_t is None:
                self._last_change_t = frame.t
        self._prev = sample
        frozen_for = max(0.0, frame.t - (self._last_change_t if self._last_change_t is not None else frame.t))
        return CameraObservation(
            t=frame.t,
            brightness=round(brightness, 2),
            detail=round(detail, 2),
            blocked=bool(blocked),
            changed=round(changed, 3),
            frozen_for=round(frozen_for, 3),
        )


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
