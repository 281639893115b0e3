"""A second look at what the candidate holds: YOLO on an upscaled crop of the seated person's torso and hands.

At webcam framing a phone in the hands is ~40-80 px wide in a 640x480 frame, small for a nano model that
sees the frame letterboxed to 640. When the frame has a large person box (the candidate), this pass crops
the person's box from ``TOP`` of its height (below the chin) to its bottom, widened by ``PAD`` on each side,
and runs the same model on it, letterboxed to the model's input (a 2x upscale or more for a typical crop).
Only ``LABELS`` are kept from it, mapped back to frame pixels and merged with the first pass (same label,
IoU > 0.5: the higher confidence stays).

"remote" is what a nano COCO model often calls a phone held in the hand; it is kept as "remote" here and
the rules decide, with evidence, whether it counts as a phone (`bot.rules`).

Cost: one more model run per object sample (1/s by default), on the same onnxruntime session: 34 ms mean,
50 ms p95 of thread time (benchmarks/hands_frames.py).

NOT WIRED INTO THE PIPELINE: on the shared media it does not pay for its cost (benchmarks/hands_frames.py,
frames letterboxed to 640x480): phone in hand found in 86% -> 86% of phone_in_hand_front 42-62 and 61% -> 66%
of phone_in_hand_profile 12-52 (confidence >= 0.35), while the ID badges of the ASL clips read as a phone in
8% -> 9% of frames; no "remote" or "book" in any of them either way. A tighter crop (from 20% of the person's
height to its bottom, no widening) gained nothing. Kept as the measured experiment; wire it
(`Analyzer.frame`, after the object pass) only with media where it helps.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from bot.detectors.objects import ObjectDetector, decode
from bot.detectors.person import iou
from bot.frames import VideoFrame
from bot.observations import Detection, ObjectObservation

LABELS = ("cell phone", "book", "remote")
TOP = 0.3  # the crop starts this far down the person box (below the face)
PAD = 0.15  # widen the crop by this share of the person's width on each side
MIN_PERSON_WIDTH = 0.2  # share of the frame's width: only a person close to the camera is cropped
MIN_PERSON_CONFIDENCE = 0.5


def torso_crop(person: Detection, frame_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    fw, fh = frame_size
    x, y, w, h = person.box
    if person.confidence < MIN_PERSON_CONFIDENCE or w < MIN_PERSON_WIDTH * fw:
        return None
    x0 = max(0, int(x - PAD * w))
    x1 = min(fw, int(x + w + PAD * w))
    y0 = max(0, int(y + TOP * h))
    y1 = fh
    if x1 - x0 < 32 or y1 - y0 < 32:
        return None
    return x0, y0, x1, y1


def merge(first: tuple[Detection, ...], extra: list[Detection]) -> tuple[Detection, ...]:
    out = list(first)
    for d in extra:
        same = [i for i, o in enumerate(out) if o.label == d.label and iou(o.box, d.box) > 0.5]
        if not same:
            out.append(d)
        else:
            i = same[0]
            if d.confidence > out[i].confidence:
                out[i] = d
    return tuple(sorted(out, key=lambda d: -d.confidence))


class HandObjects:
    """Runs the second pass with an existing ObjectDetector's model (no second session)."""

    def __init__(self, objects: ObjectDetector) -> None:
        self.objects = objects

    def process(self, frame: VideoFrame, first: ObjectObservation) -> ObjectObservation:
        persons = [d for d in first.detections if d.label == "person"]
        if not persons:
            return first
        person = max(persons, key=lambda d: d.box[2] * d.box[3])
        region = torso_crop(person, (frame.width, frame.height))
        if region is None:
            return first
        x0, y0, x1, y1 = region
        crop = np.ascontiguousarray(frame.image[y0:y1, x0:x1])
        out, scale, pad = self.objects.raw(crop)
        dets = decode(out, scale=scale, pad=pad, frame_size=(x1 - x0, y1 - y0), names=self.objects.names,
                      min_confidence=self.objects.policy.detection.object_min_confidence)
        extra = [replace(d, box=(d.box[0] + x0, d.box[1] + y0, d.box[2], d.box[3]))
                 for d in dets if d.label in LABELS]
        return replace(first, detections=merge(first.detections, extra))
