"""Objects: a COCO YOLO model in ONNX, run with onnxruntime on the CPU.

Two output layouts, told apart by shape:

* YOLOv5 ``1 x N x 85``: cx, cy, w, h (input pixels), objectness, 80 class scores;
  confidence = objectness * class score.
* YOLOv8 / YOLO11 ``1 x 84 x N``: cx, cy, w, h, 80 class scores (no objectness).

``decode()`` is a pure function (raw output -> detections in frame pixels) so it can be tested.
Class names come from the model's ONNX metadata ``names`` (a Python dict literal, as Ultralytics
writes it), else the COCO-80 list.

Threads: onnxruntime gets ``intra_op_num_threads=2`` (``threads`` argument) and one inter-op thread.
The detectors run in one worker thread next to the event loop and the other detectors; on a 2-core
machine more threads only contend. YOLOv5n at 640 takes ~35-50 ms a frame this way (busy CPU), and objects are
sampled at 1 fps by default.
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bot.analysis.detectors import cpu_session
from bot.analysis.frames import VideoFrame
from bot.analysis.observations import Detection, ObjectObservation
from bot.analysis.policy import Policy

COCO80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
PAD_VALUE = 114
HEADS_META = "proctor_heads"  # metadata of a model cut at its heads: {"strides": [...], "anchors": [...]}
NMS_IOU = 0.45
MAX_DETECTIONS = 100


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio into `size` (w, h), padding with 114.

    Returns the padded image, the scale applied, and the (x, y) padding added on the left/top.
    """
    h, w = image.shape[:2]
    tw, th = size
    r = min(tw / w, th / h)
    nw, nh = int(round(w * r)), int(round(h * r))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else image
    px, py = (tw - nw) / 2, (th - nh) / 2
    top, left = int(round(py - 0.1)), int(round(px - 0.1))
    out = cv2.copyMakeBorder(resized, top, th - nh - top, left, tw - nw - left, cv2.BORDER_CONSTANT,
                             value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    return out, r, (float(left), float(top))


def decode(
    output: np.ndarray,
    *,
    scale: float,
    pad: tuple[float, float],
    frame_size: tuple[int, int],
    names: tuple[str, ...] | list[str],
    min_confidence: float,
    iou: float = NMS_IOU,
) -> list[Detection]:
    """Raw YOLO output (v5 ``1xNx(5+C)`` or v8 ``1x(4+C)xN``) -> detections in frame pixels.

    `scale`, `pad` are what `letterbox` returned; `frame_size` is the frame's (w, h).
    Class-wise NMS; sorted by confidence, highest first.
    """
    a = np.asarray(output, dtype=np.float32)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"unexpected YOLO output shape {output.shape}")
    nc = len(names)
    if a.shape[1] == nc + 5:  # v5: N x 85 (also rows decoded from the heads, any N)
        boxes, scores = a[:, :4], a[:, 5:] * a[:, 4:5]
    elif a.shape[0] == nc + 4:  # v8/11: 84 x N
        a = a.T
        boxes, scores = a[:, :4], a[:, 4:]
    elif a.shape[1] == nc + 4:  # v8 already transposed: N x 84
        boxes, scores = a[:, :4], a[:, 4:]
    else:
        raise ValueError(f"YOLO output shape {output.shape} fits neither 1xNx{nc + 5} nor 1x{nc + 4}xN")
    return _detections(boxes, scores, scale=scale, pad=pad, frame_size=frame_size, names=names,
                       min_confidence=min_confidence, iou=iou)


def decode_heads(maps: list[np.ndarray], strides: list[int], anchors: list[list[list[float]]], *,
                 min_objectness: float) -> np.ndarray:
    """The raw maps of a YOLOv5 model cut at its heads (``1 x 3*(5+C) x H/s x W/s`` per stride `s`, see
    ``adapters.derived``) -> rows ``cx, cy, w, h, objectness, C class scores`` (input pixels), as the
    model's own Detect layer computes them, for the cells whose objectness is at least `min_objectness`
    (0: every cell, in the Detect layer's order). Only those cells go through the sigmoid and the box formula:
    a frame has a few dozen of the ~19,000."""
    rows = []
    for m, s, anc in zip(maps, strides, anchors, strict=True):
        _, c, ny, nx = m.shape
        k = c // 3
        t = m.reshape(3, k, ny, nx)
        a, gy, gx = np.nonzero(t[:, 4] >= _logit(min_objectness))
        v = t[a, :, gy, gx]  # cells x k, raw
        y = 1.0 / (1.0 + np.exp(-v))
        xy = (y[:, 0:2] * 2 - 0.5 + np.stack([gx, gy], 1)) * s
        wh = (y[:, 2:4] * 2) ** 2 * np.asarray(anc, np.float32)[a]
        rows.append(np.concatenate([xy, wh, y[:, 4:]], 1).astype(np.float32))
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def _logit(p: float) -> float:
    return -math.inf if p <= 0.0 else math.inf if p >= 1.0 else math.log(p / (1.0 - p))


def _detections(boxes: np.ndarray, scores: np.ndarray, *, scale: float, pad: tuple[float, float],
                frame_size: tuple[int, int], names: tuple[str, ...] | list[str], min_confidence: float,
                iou: float) -> list[Detection]:
    cls = scores.argmax(axis=1)
    conf = scores[np.arange(len(cls)), cls]
    keep = conf >= min_confidence
    if not keep.any():
        return []
    boxes, cls, conf = boxes[keep], cls[keep], conf[keep]
    # cx, cy, w, h in input pixels -> x, y, w, h in frame pixels
    fw, fh = frame_size
    x0 = np.clip((boxes[:, 0] - boxes[:, 2] / 2 - pad[0]) / scale, 0, fw)
    y0 = np.clip((boxes[:, 1] - boxes[:, 3] / 2 - pad[1]) / scale, 0, fh)
    x1 = np.clip((boxes[:, 0] + boxes[:, 2] / 2 - pad[0]) / scale, 0, fw)
    y1 = np.clip((boxes[:, 1] + boxes[:, 3] / 2 - pad[1]) / scale, 0, fh)
    xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), conf.tolist(), cls.tolist(), float(min_confidence), float(iou))
    idx = np.asarray(kept, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-conf[idx], kind="stable")][:MAX_DETECTIONS]
    return [
        Detection(
            label=str(names[int(cls[i])]),
            confidence=round(float(conf[i]), 4),
            box=(int(round(xywh[i, 0])), int(round(xywh[i, 1])), int(round(xywh[i, 2])), int(round(xywh[i, 3]))),
        )
        for i in idx
    ]


def names_from_metadata(meta: dict[str, str]) -> tuple[str, ...]:
    """Class names from Ultralytics' ``names`` metadata (``"{0: 'person', ...}"``); COCO-80 otherwise."""
    raw = meta.get("names")
    if raw:
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, dict) and parsed:
            return tuple(str(parsed[k]) for k in sorted(parsed, key=int))
        if isinstance(parsed, (list, tuple)) and parsed:
            return tuple(str(n) for n in parsed)
    return COCO80


class ObjectDetector:
    def __init__(self, policy: Policy, model_path: str | Path, *, threads: int = 2, arena: bool = True) -> None:
        self.policy = policy
        self._session: Any = cpu_session(model_path, threads=threads, arena=arena)
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        h, w = inp.shape[2], inp.shape[3]
        # Dynamic axes (strings / None) fall back to 640.
        self.input_size = (w if isinstance(w, int) else 640, h if isinstance(h, int) else 640)
        meta = self._session.get_modelmeta().custom_metadata_map
        self.names = names_from_metadata(meta)
        self._heads: tuple[list[int], list[list[list[float]]]] | None = None
        if HEADS_META in meta:  # cut at its heads (adapters.derived): any input size, decoded here
            spec = json.loads(meta[HEADS_META])
            self._heads = (list(spec["strides"]), spec["anchors"])

    def close(self) -> None:
        self._session = None

    def raw(self, image: np.ndarray, floor: float | None = None) -> tuple[np.ndarray, float, tuple[float, float]]:
        """Run the model on a BGR image; returns (raw output, scale, pad) for `decode`. A model cut at its heads
        decodes here the cells whose objectness reaches `floor` (default: the policy's object floor)."""
        if self._session is None:
            raise RuntimeError("ObjectDetector is closed")
        boxed, scale, pad = letterbox(image, self.fit(image.shape[1], image.shape[0]))
        blob = cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        outs = self._session.run(None, {self._input_name: blob})
        if self._heads is None:
            return outs[0], scale, pad
        floor = self.policy.detection.object_min_confidence if floor is None else floor
        rows = decode_heads(outs, *self._heads, min_objectness=floor)
        return rows.reshape(-1, len(self.names) + 5), scale, pad

    def fit(self, w: int, h: int) -> tuple[int, int]:
        """The model's input size for a w x h frame: the fixed size of a whole export; for a model cut at its
        heads, the frame scaled as into the fixed size, padded only up to a multiple of the largest stride
        (640x480 stays 640x480, where the fixed model pads it to 640x640)."""
        if self._heads is None:
            return self.input_size
        tw, th = self.input_size
        r = min(tw / w, th / h)
        step = max(self._heads[0])
        return (math.ceil(round(w * r) / step) * step, math.ceil(round(h * r) / step) * step)

    def process(self, frame: VideoFrame) -> ObjectObservation:
        det = self.policy.detection
        floor = min(det.object_min_confidence, *det.phone_like.values())
        out, scale, pad = self.raw(frame.image, floor)
        dets = decode(out, scale=scale, pad=pad, frame_size=(frame.width, frame.height), names=self.names,
                      min_confidence=floor)
        if floor < det.object_min_confidence:  # below the floor, only the labels a phone is read as
            dets = [d for d in dets if d.confidence >= det.object_min_confidence
                    or d.confidence >= det.phone_like.get(d.label, 1.0)]
        return ObjectObservation(t=frame.t, detections=tuple(dets), frame_size=(frame.width, frame.height))
