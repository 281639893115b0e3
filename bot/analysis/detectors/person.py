"""People from the object detector's boxes: who sits in the candidate's seat, whose face is visible.

Pure functions over `Detection`s and face boxes (no model of their own); the rules use them.

* The person *in the seat* is the candidate's body, followed from sample to sample (`track_seat`): a YOLO
  "person" box (confidence >= ``SEAT_MIN_CONFIDENCE``, at least ``SEAT_MIN_WIDTH`` of the frame wide, no
  taller than ``SEAT_MAX_ASPECT`` times its width) that held the candidate's visible face, then, while the face
  is not visible, the person box overlapping the previous one (IoU >= ``SEAT_MIN_IOU``). A candidate who
  looks down over a phone or turns away keeps the seat (phone_in_hand_*.mp4); people who walk in seen only
  from behind never showed a face, so they are not in it (one-by-one-person-detection.mp4: their boxes are as
  large as a seated candidate's, size alone cannot tell); a candidate who leaves breaks the chain.
* A person's face is visible when a face box's centre falls inside the upper part of the person's box.
"""
from __future__ import annotations

from collections.abc import Iterable

from bot.analysis.observations import Box, Detection

SEAT_MIN_CONFIDENCE = 0.5
SEAT_MIN_WIDTH = 0.2  # share of the frame's width
SEAT_MAX_ASPECT = 2.2  # box height / width
SEAT_MIN_IOU = 0.3  # a person box continues the seat when it overlaps the previous one this much
FACE_IN_UPPER = 0.6  # a face centre must lie in this upper share of the person box


def people(detections: Iterable[Detection], min_confidence: float) -> list[Detection]:
    return [d for d in detections if d.label.strip().lower() == "person" and d.confidence >= min_confidence]


def in_seat(d: Detection, frame_size: tuple[int, int]) -> bool:
    fw, _ = frame_size
    x, y, w, h = d.box
    return (d.label.strip().lower() == "person" and d.confidence >= SEAT_MIN_CONFIDENCE
            and w >= SEAT_MIN_WIDTH * fw and h <= SEAT_MAX_ASPECT * max(w, 1))


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


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def track_seat(seat: Box | None, detections: Iterable[Detection], frame_size: tuple[int, int] | None,
               faces: Iterable[Box]) -> Box | None:
    """The seat occupant's box after this object sample (None: nobody known to be in the seat).

    `faces`: the face boxes seen at this sample (empty when none is visible or none is recent).
    """
    if frame_size is None:
        return None
    seated = [d for d in detections if in_seat(d, frame_size)]
    faces = sorted(faces, key=lambda f: f[2] * f[3], reverse=True)
    if faces:  # the candidate's face is visible: the seat is the person box around it
        holder = next((d for d in seated if face_inside(d.box, faces[0])), None)
        return holder.box if holder is not None else None
    if seat is None:
        return None
    best = max(seated, key=lambda d: iou(d.box, seat), default=None)
    return best.box if best is not None and iou(best.box, seat) >= SEAT_MIN_IOU else None
