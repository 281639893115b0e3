"""MediaPipe's Face Landmarker, run from its own model bundle on a TFLite interpreter (``ai-edge-litert``) instead
of through the ``mediapipe`` package.

The bundle (``face_landmarker.task``, a zip checked by sha256 in ``adapters.models``) holds four parts; this module
runs them as MediaPipe's Face Landmarker graph does in IMAGE mode:

* the face detector (BlazeFace short range, 128x128, [-1, 1]): the image letterboxed into a square with black
  borders, 896 SSD anchors (strides 8, 16, 16, 16; 2 and 6 anchors a cell), boxes and 6 key points decoded at scale
  128, scores the sigmoid of the clipped logit, weighted non-maximum suppression at IoU 0.5;
* each face's region: the detection's box scaled by 1.5, turned so that the eyes (key points 0 and 1) are level;
* the landmark model (256x256, [0, 1], replicated borders): 478 points (x, y, z) and a face-presence logit
  (a face counts above 0.5 after the sigmoid);
* the blendshape model on 146 of the points, in pixels (it is invariant to a uniform scale and a shift);
* the pose: ``facegeometry.FaceGeometry`` on the 468 mesh points, normalised to the image.

The image is given as an affine map from the frame (``image_to``, 2x3) and a size: an upscaled crop around a face
is never built, each model's input is sampled from the frame in one warp. Constants from MediaPipe's
``face_detector_graph.cc``, ``face_landmarks_detector_graph.cc``, ``face_blendshapes_graph.cc`` and the calculators
they configure. Against the ``mediapipe`` package on the same crops (tests/test_facemesh.py) the points agree to
a fraction of a pixel: MediaPipe samples each model's input from the crop with its own bundled OpenCV, a second
interpolation and a slightly different bilinear rounding.

Why not the ``mediapipe`` package: its graph runtime and task packages cost more memory for the same models (a
process running the face detector: 250 -> 215 MiB peak RSS; a live call's: ~320 -> ~290), and 16-19 ms a face
where these steps take ~13 (its graph adds conversions and scheduling around the same networks).
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bot.analysis.detectors.facegeometry import FaceGeometry, load_metadata

DETECTOR_SIZE = 128
LANDMARK_SIZE = 256
ROI_SCALE = 1.5  # the landmark model's region: the detection's box times this
NMS_IOU = 0.5
MIN_DETECTION = 0.5  # the Face Landmarker's min_face_detection_confidence (the project's setting)
MIN_PRESENCE = 0.5  # its min_face_presence_confidence
BLENDSHAPE_POINTS = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153,
    154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249,
    251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317,
    318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385,
    386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476,
    477,
)
BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
_BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPES)}


@dataclass(slots=True)
class Mesh:
    """One face of an image: its 478 points in frame pixels (x, y), its 52 blendshape scores (``BLENDSHAPES``
    order) and its pose (MediaPipe's facial transformation matrix for the image it was found in)."""

    points: np.ndarray  # 478 x 2, frame pixels
    blendshapes: np.ndarray  # 52
    matrix: np.ndarray  # 4 x 4

    def blendshape(self, name: str) -> float:
        return float(self.blendshapes[_BLENDSHAPE_INDEX[name]])


def _anchors() -> np.ndarray:
    """The detector's 896 anchor centres (x, y in 0..1): 16x16 cells of 2 anchors, then 8x8 cells of 6."""
    rows = []
    for cells, per_cell in ((16, 2), (8, 6)):
        c = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(c, c)
        rows.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
    return np.concatenate(rows)


def _affine(m: np.ndarray) -> np.ndarray:
    """A 2x3 affine map as 3x3."""
    return np.vstack([m, [0.0, 0.0, 1.0]])


class FaceMesh:
    """``find(frame, image_to, size)``: the faces of an image (at most ``num_faces``), as MediaPipe's Face
    Landmarker would return them for the image ``cv2.warpAffine(frame, image_to, size)``; the image itself is
    never built. ``frame``: BGR."""

    def __init__(self, bundle: str | Path, *, num_faces: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter  # the runtime, only where faces are analysed

        with zipfile.ZipFile(bundle) as z:
            parts = {name: z.read(name) for name in z.namelist()}
        try:
            detector, landmarks = parts["face_detector.tflite"], parts["face_landmarks_detector.tflite"]
            blendshapes = parts["face_blendshapes.tflite"]
            geometry = parts["geometry_pipeline_metadata_landmarks.binarypb"]
        except KeyError as e:
            raise ValueError(f"{Path(bundle).name} is not a Face Landmarker bundle: no {e.args[0]}") from None
        self.num_faces = num_faces
        self._det, self._lm, self._bs = (Interpreter(model_content=data, num_threads=1)
                                         for data in (detector, landmarks, blendshapes))
        for net in (self._det, self._lm, self._bs):
            net.allocate_tensors()
        self._det_in = self._det.get_input_details()[0]["index"]
        out = {d["name"]: d["index"] for d in self._det.get_output_details()}
        self._det_boxes, self._det_scores = out["regressors"], out["classificators"]
        self._lm_in = self._lm.get_input_details()[0]["index"]
        out = {d["name"]: d["index"] for d in self._lm.get_output_details()}
        self._lm_points, self._lm_presence = out["Identity"], out["Identity_1"]
        self._bs_in = self._bs.get_input_details()[0]["index"]
        self._bs_out = self._bs.get_output_details()[0]["index"]
        self._anchors = _anchors()
        self._geometry = FaceGeometry(*load_metadata(geometry))
        self._subset = np.array(BLENDSHAPE_POINTS)

    def close(self) -> None:
        """Release the interpreters (``find`` fails after)."""
        self._det = self._lm = self._bs = None

    def find(self, frame: np.ndarray, image_to: np.ndarray, size: tuple[int, int], *, fill: int = 0) -> list[Mesh]:
        """``fill``: the grey level of the image where it lies outside the frame."""
        w, h = size
        to_image = _affine(np.asarray(image_to, np.float64))
        from_image = np.linalg.inv(to_image)
        found = []
        for _, box, keys in self._detect(frame, to_image, w, h, fill)[: self.num_faces]:
            (ex0, ey0), (ex1, ey1) = keys[0], keys[1]  # the eyes
            region = _region((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) * ROI_SCALE,
                             (box[3] - box[1]) * ROI_SCALE, -math.atan2(-(ey1 - ey0), ex1 - ex0))
            mesh = self._landmarks(frame, to_image, from_image, w, h, region)
            if mesh is not None:
                found.append(mesh)
        return found

    # -- the detector ------------------------------------------------------------------------------

    def _detect(self, frame: np.ndarray, to_image: np.ndarray, w: int, h: int, fill: int
                ) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """Faces in the image: (score, box x0 y0 x1 y1, 6 key points), image pixels, best first. The letterbox
        is black (MediaPipe's); ``fill`` is the image's own grey outside the frame (the same when 0)."""
        side = max(w, h)  # letterboxed into a square, centred
        s = DETECTOR_SIZE / side
        to_input = np.array([[s, 0, (side - w) / 2 * s], [0, s, (side - h) / 2 * s], [0, 0, 1]]) @ to_image
        view = cv2.warpAffine(frame, to_input[:2], (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))
        x = self._det.tensor(self._det_in)()[0]  # written in place, the reference let go before invoke
        np.multiply(view[:, :, ::-1], np.float32(2.0 / 255.0), out=x)
        x -= np.float32(1.0)
        del x
        self._det.invoke()
        raw = self._det.get_tensor(self._det_boxes)[0]
        logits = np.clip(self._det.get_tensor(self._det_scores)[0, :, 0], -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        keep = np.nonzero((scores >= MIN_DETECTION) & (raw[:, 2] >= 0) & (raw[:, 3] >= 0))[0]
        if not keep.size:
            return []
        raw, scores = raw[keep] / DETECTOR_SIZE, scores[keep]
        centres = self._anchors[keep]
        boxes = np.concatenate([centres + raw[:, :2] - raw[:, 2:4] / 2, centres + raw[:, :2] + raw[:, 2:4] / 2], 1)
        keys = raw[:, 4:16].reshape(-1, 6, 2) + centres[:, None, :]
        shift = np.array([(side - w) / 2, (side - h) / 2], np.float32)  # the detector's input (0..1) -> image px
        boxes = boxes * side - np.tile(shift, 2)
        keys = keys * side - shift
        return _weighted_nms(scores, boxes, keys)

    # -- the landmark model, blendshapes, pose ------------------------------------------------------

    def _landmarks(self, frame: np.ndarray, to_image: np.ndarray, from_image: np.ndarray, w: int, h: int,
                   region: np.ndarray) -> Mesh | None:
        to_input = np.diag([LANDMARK_SIZE, LANDMARK_SIZE, 1.0]) @ np.linalg.inv(region) @ to_image
        view = cv2.warpAffine(frame, to_input[:2], (LANDMARK_SIZE, LANDMARK_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        np.multiply(view[:, :, ::-1], np.float32(1.0 / 255.0), out=self._lm.tensor(self._lm_in)()[0])
        self._lm.invoke()
        presence = float(self._lm.get_tensor(self._lm_presence).reshape(-1)[0])
        if 1.0 / (1.0 + math.exp(-presence)) <= MIN_PRESENCE:
            return None
        raw = self._lm.get_tensor(self._lm_points).reshape(-1, 3).astype(np.float64) / LANDMARK_SIZE
        image_pts = raw[:, :2] @ region[:2, :2].T + region[:2, 2]  # image pixels
        # MediaPipe's normalised landmarks: x / w, y / h, z scaled by the region's width in image widths
        z = raw[:, 2] * math.hypot(region[0, 0] / w, region[1, 0] / h)
        normalised = np.column_stack([image_pts[:, 0] / w, image_pts[:, 1] / h, z])
        matrix = self._geometry.matrix(normalised, w, h)
        if matrix is None:
            return None
        self._bs.set_tensor(self._bs_in, image_pts[self._subset][None].astype(np.float32))
        self._bs.invoke()
        blend = self._bs.get_tensor(self._bs_out).reshape(-1).copy()
        frame_pts = image_pts @ from_image[:2, :2].T + from_image[:2, 2]
        return Mesh(points=frame_pts.astype(np.float32), blendshapes=blend, matrix=matrix)


def _region(cx: float, cy: float, rw: float, rh: float, angle: float) -> np.ndarray:
    """A rotated rectangle (centre, sides, angle in radians) as the 3x3 map of its unit square to the image."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[rw * c, -rh * s, cx - (rw * c - rh * s) / 2],
                     [rw * s, rh * c, cy - (rw * s + rh * c) / 2], [0, 0, 1]])


def _weighted_nms(scores: np.ndarray, boxes: np.ndarray, keys: np.ndarray
                  ) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster (IoU > ``NMS_IOU`` with its best box) becomes
    one detection with the best score and the score-weighted mean box and key points."""
    left = np.argsort(-scores, kind="stable")
    out = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while left.size:
        top = left[0]
        ix = np.clip(np.minimum(boxes[left, 2], boxes[top, 2]) - np.maximum(boxes[left, 0], boxes[top, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[left, 3], boxes[top, 3]) - np.maximum(boxes[left, 1], boxes[top, 1]), 0, None)
        inter = ix * iy
        union = area[left] + area[top] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        cluster = left[iou > NMS_IOU]
        if not cluster.size:
            cluster = left[:1]
        wts = scores[cluster][:, None]
        total = float(wts.sum())
        out.append((float(scores[top]), (boxes[cluster] * wts).sum(0) / total,
                    (keys[cluster] * wts[:, :, None]).sum(0) / total))
        left = left[~np.isin(left, cluster)]
    return out
