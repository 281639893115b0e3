"""CameraHealth on real frames: normal, black, covered, frozen."""
from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np

from bot.analysis.detectors.camera import CameraHealth
from bot.analysis.frames import VideoFrame
from bot.analysis.policy import Policy

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def frames(name: str, step: int = 15) -> list[np.ndarray]:
    with av.open(str(MEDIA / "video" / name)) as c:
        return [f.to_ndarray(format="bgr24") for i, f in enumerate(c.decode(video=0)) if i % step == 0]


def test_live_picture_is_healthy_and_changing():
    cam = CameraHealth(Policy())
    obs = [cam.process(VideoFrame(t=i * 0.5, image=img)) for i, img in enumerate(frames("student.mkv"))]
    assert len(obs) >= 3
    assert all(not o.blocked and 60 < o.brightness < 200 and o.detail > 100 for o in obs)
    assert obs[0].changed == 0 and obs[0].frozen_for == 0
    assert all(o.changed > Policy().detection.frozen_change for o in obs[1:])
    assert all(o.frozen_for == 0 for o in obs)


def test_frozen_feed_counts_seconds_then_recovers():
    imgs = frames("thanks.mkv")
    cam = CameraHealth(Policy())
    obs = [cam.process(VideoFrame(t=t, image=imgs[0])) for t in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert [o.frozen_for for o in obs] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert all(o.changed == 0 for o in obs) and not obs[-1].blocked
    moved = cam.process(VideoFrame(t=2.5, image=imgs[-1]))
    assert moved.changed > 0.6 and moved.frozen_for == 0


def test_sensor_noise_is_not_frozen():
    img = frames("thanks.mkv")[0]
    rng = np.random.default_rng(1)
    cam = CameraHealth(Policy())
    for i in range(4):
        noisy = np.clip(img.astype(np.int16) + rng.normal(0, 2.0, img.shape).round().astype(np.int16), 0, 255)
        o = cam.process(VideoFrame(t=i * 0.5, image=noisy.astype(np.uint8)))
    assert o.changed > 0.6 and o.frozen_for == 0


def test_black_and_covered_are_blocked():
    img = frames("student.mkv")[0]
    cam = CameraHealth(Policy())
    black = cam.process(VideoFrame(t=0, image=np.zeros_like(img)))
    assert black.blocked and black.brightness < 1
    # a finger over the lens: the real picture blurred to a smooth, dim blob
    covered = cv2.GaussianBlur(img, (0, 0), 40) // 2
    o = cam.process(VideoFrame(t=0.5, image=covered))
    assert o.blocked and o.detail < Policy().detection.flat_detail and o.brightness > 25


def test_cheap():
    img = frames("student.mkv")[0]
    cam = CameraHealth(Policy())
    for i in range(5):
        cam.process(VideoFrame(t=i, image=img))
    t0 = time.perf_counter()
    for i in range(50):
        cam.process(VideoFrame(t=i, image=img))
    assert (time.perf_counter() - t0) / 50 < 0.005  # < 1 ms typical; generous on a shared CPU
