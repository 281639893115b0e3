"""People from the object detector's boxes: who sits in the candidate's seat, whose face is visible.

Pure functions over `Detection`s and face boxes (no model of their own); the rules use them.

* A person *in the seat* is what a webcam sees of a candidate: a large, upper-body box. YOLO's
  "person" box counts when its confidence >= ``SEAT_MIN_CONFIDENCE``, it is at least ``SEAT_MIN_WIDTH`` of
  the frame's width wide and no taller than ``SEAT_MAX_ASPECT`` times its width. A full-body passer-by far
  from the camera (one-by-one-person-detection.mp4: boxes ~0.1 of the width, 2.5-4x taller than wide) is
  not in the seat. A candidate with the head down over a phone, or turned away, is (phone_in_hand_*.mp4).
* A person's face is visible when a face box's centre falls inside the upper part of the person's box.
"""
from __future__ import annotations

from collections.abc import Iterable

from bot.observations import Box, Detection

SEAT_MIN_CONFIDENCE = 0.5
SEAT_MIN_WIDTH = 0.2  # share of the frame's width
SEAT_MAX_ASPECT = 2.2  # box height / width
FACE_IN_UPPER = 0.6  # a face centre must lie in this upper share of the person box


def people(detections: Iterable[Detection], min_confidence: float) -> list[Detection]:
    return [d for d in detections if d.label.strip().lower() == "person" and d.confidence >= min_confidence]


def in_seat(d: Detection, frame_size: tuple[int, int]) -> bool:
    fw, _ = frame_size
    x, y, w, h = d.box
    return (d.label.strip().lower() == "person" and d.confidence >= SEAT_MIN_CONFIDENCE
            and w >= SEAT_MIN_WIDTH * fw and h <= SEAT_MAX_ASPECT * max(w, 1))


def seat_occupant(detections: Iterable[Detection], frame_size: tuple[int, int] | None) -> Detection | None:
    """The largest person in the seat, or None (also when the frame size is unknown)."""
    if frame_size is None:
        return None
    seated = [d for d in detections if in_seat(d, frame_size)]
    return max(seated, key=lambda d: d.box[2] * d.box[3], default=None)


def face_inside(person: Box, face: Box) -> bool:
    px, py, pw, ph = person
    fx, fy, fw, fh = face
    cx, cy = fx + fw / 2, fy + fh / 2
    return px <= cx <= px + pw and py <= cy <= py + FACE_IN_UPPER * ph


def faceless(persons: list[Detection], faces: Iterable[Box]) -> int:
    """How many of `persons` have no face box inside them (each face matched to one person at most)."""
    free = list(faces)
    n = 0
    for p in sorted(persons, key=lambda d: d.box[2] * d.box[3], reverse=True):
        hit = next((f for f in free if face_inside(p.box, f)), None)
        if hit is None:
            n += 1
        else:
            free.remove(hit)
    return n
