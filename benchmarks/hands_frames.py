"""Phones, books, remotes per frame: the first YOLO pass alone vs with the torso/hands crop pass.

    PROCTOR_MODELS_DIR=../shared/models .venv/bin/python benchmarks/hands_frames.py

Frames letterboxed to 640x480 as tests/scenario.py does. Positive frames (MANIFEST.md): phone_in_hand_front
42-62 (phone plainly in hand), phone_in_hand_profile 12-52. Negatives: the ID badges of student.mkv and the
ASL clips, phone_in_hand_front 72-86 (no phone). Prints per clip the share of frames with each label at
several confidences, and the thread-time cost of each pass.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.models import resolve  # noqa: E402
from bot.detectors.hands import HandObjects  # noqa: E402
from bot.detectors.objects import ObjectDetector  # noqa: E402
from bot.frames import VideoFrame  # noqa: E402
from bot.policy import Policy  # noqa: E402
from bot.settings import Settings  # noqa: E402
from tests.scenario import MEDIA, fit, read_clip  # noqa: E402

V = MEDIA / "video"
SETS = {
    "front phone 42-62 (+)": (V / "phone_in_hand_front.mp4", slice(42, 63)),
    "profile phone 12-52 (+)": (V / "phone_in_hand_profile.mp4", slice(12, 53)),
    "front no phone 72-86 (-)": (V / "phone_in_hand_front.mp4", slice(72, 87)),
    "front looking down 0-28 (-)": (V / "phone_in_hand_front.mp4", slice(0, 29)),
    "profile hands down 53-69 (-)": (V / "phone_in_hand_profile.mp4", slice(53, 70)),
    "student.mkv badge (-)": (V / "student.mkv", None),
    "asl badges, 10 clips (-)": (None, None),
}


def main() -> None:
    s = Settings.from_env()
    objects = ObjectDetector(Policy(), resolve("yolo", s))
    hands = HandObjects(objects)
    cost = {"first": [], "crop": []}
    print(f"{'frames':30} {'n':>4}  {'pass':6} " + "  ".join(f"{k:>16}" for k in
          ("phone>=.35", "phone>=.25", "remote>=.35", "book>=.35")))
    for name, (path, sl) in SETS.items():
        if path is None:
            images = [im for p in sorted((MEDIA / "video/asl").glob("*.mkv")) for im in read_clip(p)[::3]]
        else:
            images = read_clip(path, sl)
        rows = {"first": [], "crop": []}
        for i, img in enumerate(images):
            frame = VideoFrame(i / 30, img)
            t0 = time.thread_time()
            first = objects.process(frame)
            t1 = time.thread_time()
            both = hands.process(frame, first)
            t2 = time.thread_time()
            cost["first"].append((t1 - t0) * 1000)
            if both is not first:
                cost["crop"].append((t2 - t1) * 1000)
            for k, o in (("first", first), ("crop", both)):
                best = {lab: max((d.confidence for d in o.detections if d.label == lab), default=0.0)
                        for lab in ("cell phone", "remote", "book")}
                rows[k].append(best)
        for k in ("first", "crop"):
            r = rows[k]
            share = lambda lab, thr: sum(b[lab] >= thr for b in r) / len(r)
            print(f"{name:30} {len(r):4d}  {k:6} " + "  ".join(f"{v:16.2f}" for v in (
                share("cell phone", .35), share("cell phone", .25), share("remote", .35), share("book", .35))))
    for img_name in ("desk_phone_laptop_book.jpg",):
        img = fit(cv2.imread(str(MEDIA / "images" / img_name)))
        first = objects.process(VideoFrame(0, img))
        both = hands.process(VideoFrame(0, img), first)
        print(img_name, "first:", [(d.label, d.confidence) for d in first.detections if d.label != "person"],
              "with crop:", [(d.label, d.confidence) for d in both.detections if d.label != "person"])
    for k, v in cost.items():
        print(f"cost {k} pass (thread time): mean {np.mean(v):.1f} ms, p95 {np.percentile(v, 95):.1f} ms, n={len(v)}")


if __name__ == "__main__":
    main()
