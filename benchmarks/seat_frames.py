"""Per frame: faces, YOLO people, whether a person is in the seat, on the clips of issue 10.

    PROCTOR_MODELS_DIR=../shared/models .venv/bin/python benchmarks/seat_frames.py [--every N]

Frames are letterboxed into 640x480 as tests/scenario.py composes them. Prints one line per frame and,
per clip, how many frames without a face had a person in the seat (before: all of them were face_missing
samples; after: those are looking_away with face_hidden).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.models import model_paths
from bot.analysis.detectors.faces import FaceDetector
from bot.analysis.detectors.objects import ObjectDetector
from bot.analysis.detectors.person import in_seat, people
from bot.analysis.frames import VideoFrame
from bot.analysis.policy import Policy
from bot.settings import Settings
from tests.support.paths import MEDIA
from tests.support.scenario import read_clip

CLIPS = {"phone_in_hand_front": 1, "phone_in_hand_profile": 1, "one-by-one-person-detection": 10}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=0, help="look at every Nth frame (default per clip)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    s = Settings.from_env()
    policy = Policy()
    models = model_paths(s)
    faces = FaceDetector(policy, models.yunet, models.face_landmarker)
    objects = ObjectDetector(policy, models.yolo)
    for name, every in CLIPS.items():
        images = read_clip(MEDIA / "video" / f"{name}.mp4")
        step = args.every or every
        no_face = seated = 0
        for i in range(0, len(images), step):
            frame = VideoFrame(i / 30, images[i])
            f = faces.process(frame)
            o = objects.process(frame)
            persons = people(o.detections, 0.25)
            seat = [p for p in persons if in_seat(p, (frame.width, frame.height))]
            if f.count == 0:
                no_face += 1
                seated += bool(seat)
            if not args.quiet:
                desc = " ".join(f"{p.confidence:.2f}@{p.box}{'*' if p in seat else ''}" for p in persons)
                print(f"{name} {i:4d} faces {f.count} away {int(f.looking_away)} pitch {f.pitch} people {desc}")
        print(f"== {name}: {no_face} frames without a face, {seated} of them with a person in the seat")
    faces.close()


if __name__ == "__main__":
    main()
