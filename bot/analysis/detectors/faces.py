"""Faces: how many, and where the candidate (the largest face) looks.

Two models, each doing what it is good at:

* YuNet proposes faces: boxes, scores, 5 points, on the frame scaled to at most ``PROPOSAL_WIDTH`` (400)
  pixels wide, same events on the labelled set (benchmarks/eval_detection.py); a face under ~25 px at 640 is
  then missed. It runs with onnxruntime at the view's own size (``YuNet``, a model given a free input size by
  ``adapters.derived``): ~4 ms of CPU for the 400x300 view plus ~3 for scaling it down, where OpenCV's
  ``FaceDetectorYN`` took ~10 for the view and ~30 for the whole 640x480 frame. It also
  fires on the backs of heads (scores up to ~0.8 on one-by-one-person-detection.mp4), so a proposal is
  not yet a face.
* MediaPipe's Face Landmarker (IMAGE mode; ``facemesh``) runs on an upscaled crop around each proposal (a square of
  twice the box side, resized to 256 px, so the small faces of 480x270 GIFs become large). A proposal
  counts as a face only when the landmarker finds a face mesh in its crop; a weak proposal
  (score < ``STRONG_SCORE``) must in addition have its 5 YuNet points agree with the mesh
  (mean distance < ``AGREE_MAX`` of the box side). The mesh of the largest counted face gives the pose,
  gaze, eyes and mouth.
* When YuNet proposes nothing, the landmarker runs once on the whole frame (upscaled to >= 640 px
  wide) to catch a face YuNet missed (it then counts with score ``LANDMARKER_ONLY_SCORE``).
* Every other sample (within ``FOLLOW_GAP`` s of a scan whose faces all have a mesh) YuNet does not run: the
  landmarker follows each face of the scan on a crop around where it was (a face gone from there drops out of
  this sample; a face that has just come in is found by the next scan, 0.2 s later at 5 samples/s). 31 -> 22
  ms of CPU per face sample on webcam clips, the same events on the labelled set. The landmarker's own face
  detector still runs in that crop: the landmark model alone on MediaPipe's tracking region (the last mesh's box)
  saves ~2 ms but reads the eyes differently from a scan (eyes_closed off by 0.06 on average, 0.03 on the last
  scan's region), and the eyes' threshold was measured on the detector's regions.

* A face in a picture is not a person: a poster or a photo behind the candidate holds faces that YuNet and the
  landmarker find as well as real ones. Across face samples each face with a mesh is tracked (its box overlaps
  the one of the sample before); a face whose mesh has not moved by ``STILL_PX`` (mean over its 478 points,
  frame pixels) since the track began is rigid. Printed faces stay within 0.03-0.23 px with camera noise, live
  ones move by 2 px or more within one or two samples (0.2-0.4 s; calibrated on the shared media). Once the
  candidate's own face (the largest) has moved, every other face that has not is a picture: left out of
  ``count`` and listed in ``pictures`` (so a person who comes in beside the candidate counts from their
  first movement, one or two samples later). When the whole picture is still (a photo held to the camera, a
  frozen feed) nothing is left out, and a frame processed alone (no earlier sample within ``TRACK_GAP`` s) is
  judged alone.

* Looking away: the head's yaw past the looking_away threshold; or, up or down, where the eyes point past
  ``pitch_threshold``: the head's pitch from the candidate's own level (``_level``: the median pitch of their
  first face samples, within ``BASELINE_MAX`` degrees of the camera's axis) plus the eyes' turn in the head
  (``EYE_DEGREES`` x gaze_y); or the gaze alone past ``gaze_threshold``. (Across, the eyes turned back to the
  screen would cancel a head turn: the yaw is judged alone, as calibrated.) A camera placed above or below the
  screen then does not make a whole interview "looking away" (person C of the ASL clips
  reads a pitch of +32 signing to the camera), and a head bowed 22-27 degrees with the eyes lowered too, over
  a phone (phone_in_hand_front.mp4), is looking away although neither alone passes its threshold.

Conventions (see ``bot.analysis.observations.FaceObservation``): yaw > 0 when the head turns towards the
image's left (the person's right), pitch > 0 when the head tilts up, roll > 0 when the eye line
rotates counter-clockwise in the image; gaze_x > 0 when the irises move towards the image's left,
gaze_y > 0 up, both about -1..1 (1 ~ iris at the edge of its usual range).

Cost: one landmarker run (~13 ms of CPU: its face detector ~1.5, its landmark model ~9, blendshapes ~1, the pose
~0.3) per counted face, at most ``MAX_VERIFIED`` per frame, plus YuNet (~7 ms with the scaling) on every other
sample. The landmarker is MediaPipe's Face Landmarker run from its model bundle by ``facemesh.FaceMesh`` (a TFLite
interpreter), not by the ``mediapipe`` package: ~30 MiB less RSS per call's process, ~3-5 ms less per face.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bot.analysis.detectors import cpu_session
from bot.analysis.detectors.facemesh import FaceMesh, Mesh
from bot.analysis.frames import VideoFrame
from bot.analysis.observations import Face, FaceObservation
from bot.analysis.policy import Policy

PROPOSAL_WIDTH = 400  # YuNet sees the frame at most this wide (a 640x480 frame: 30 -> 9 ms of CPU)
CROP_SIDE = 256  # pixels of the landmarker's crop
CROP_SCALE = 2.0  # crop side / face box side
STRONG_SCORE = 0.7  # YuNet score from which a landmarker-confirmed proposal is a face
AGREE_MAX = 0.12  # weak proposals: max mean YuNet-vs-mesh point distance, share of the box side
MAX_VERIFIED = 4  # largest proposals checked with the landmarker per frame
LANDMARKER_ONLY_SCORE = 0.5  # score reported for a face found by the landmarker alone
STILL_PX = 1.0  # mean mesh-point movement (frame pixels) since a face's track began under which it is rigid
TRACK_IOU = 0.3  # a face continues a track of the sample before when their boxes overlap this much
TRACK_GAP = 1.0  # seconds between two samples beyond which the tracks are dropped
FOLLOW_GAP = 0.5  # a sample within this of the last scan follows its faces instead of scanning again
BASELINE_SAMPLES = 25  # first face samples (5 s at 5/s) whose median pitch is the candidate's level
BASELINE_MIN = 10  # samples before that median is used
BASELINE_MAX = 20.0  # degrees the level pitch may be off the camera's axis
EYE_DEGREES = 30.0  # degrees the eyes turn in the head at gaze 1.0 (the iris at the edge of its usual range)
GAZE_RANGE = 0.3  # iris offset from the eye centre (share of the eye width) that maps to gaze 1.0
GAZE_Y_NEUTRAL = 0.06  # a level iris sits this far (eye widths) above the corners' line

# Face mesh indices: eye corners, irises, nose tip, mouth corners, eyelids.
_EYE_A = (33, 133)  # one eye: outer, inner corner (the eye on the image's left for a frontal face)
_EYE_B = (362, 263)  # other eye: inner, outer corner
_IRIS_A, _IRIS_B = 468, 473
_NOSE, _MOUTH_L, _MOUTH_R = 1, 61, 291
_LID_A, _LID_B = (159, 145), (386, 374)  # upper, lower lid
_DLIB5 = (263, 362, 33, 133, 2)  # dlib's 5 points (checked against its shape_predictor_5 on student.mkv)


@dataclass(slots=True)
class _Track:
    """One face followed across samples: its last box, its first mesh, whether it has moved since."""

    box: tuple[int, int, int, int]
    ref: np.ndarray
    moved: bool = False


@dataclass(slots=True)
class _Mesh:
    """What the landmarker says about one face, in frame pixels."""

    points: np.ndarray  # 478 x 2, frame pixels
    yaw: float
    pitch: float
    roll: float
    gaze_x: float
    gaze_y: float
    eyes_closed: float
    mouth_open: float


class FaceDetector:
    def __init__(self, policy: Policy, yunet_path: str | Path, landmarker_path: str | Path, *,
                 arena: bool = True) -> None:
        self.policy = policy
        self._yunet = YuNet(yunet_path, arena=arena)
        self._landmarker: FaceMesh | None = FaceMesh(landmarker_path, num_faces=2)
        self.reset()

    def reset(self) -> None:
        """Forget the face tracks (a new interview or recording)."""
        self._tracks: list[_Track] = []
        self._tracks_t: float | None = None
        self._carry: list[tuple[Face, np.ndarray]] = []  # faces of the last scan, to follow on the next sample
        self._pitches: list[float] = []  # the candidate's first pitch samples (_level)

    def close(self) -> None:
        """Release the landmarker now (its __del__ fails at interpreter exit)."""
        lm, self._landmarker = self._landmarker, None
        if lm is not None:
            lm.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- per frame ------------------------------------------------------------------------------

    def process(self, frame: VideoFrame) -> FaceObservation:
        if self._landmarker is None:
            raise RuntimeError("FaceDetector is closed")
        h, w = frame.image.shape[:2]
        det = self.policy.detection
        faces = self._follow(frame)
        if faces is None:
            faces = self._scan(frame.image, det.face_min_score, det.face_min_size * min(h, w))
        return self._observe(frame, faces)

    def _follow(self, frame: VideoFrame) -> list[tuple[Face, _Mesh | None]] | None:
        """Every other sample, while the faces of the last scan all have a mesh: the landmarker alone on a crop
        around each of them (YuNet's pass over the whole frame is skipped). None when a scan is due."""
        carry, self._carry = self._carry, []
        fresh = self._tracks_t is not None and 0.0 < frame.t - self._tracks_t <= FOLLOW_GAP
        if not carry or not fresh:
            return None
        faces: list[tuple[Face, _Mesh | None]] = []
        for face, mesh_before in carry:
            x, y, bw, bh = face.box
            mesh = self._mesh_in_crop(frame.image, np.array([x, y, bw, bh], np.float32))
            if mesh is None:
                continue  # gone from where it was: the next sample scans
            dx, dy = (mesh.points.mean(axis=0) - mesh_before).tolist()
            faces.append((Face((int(round(x + dx)), int(round(y + dy)), bw, bh), face.score), mesh))
        return faces

    def _scan(self, img: np.ndarray, min_score: float, min_side: float) -> list[tuple[Face, _Mesh | None]]:
        """YuNet over the whole frame, each proposal checked by the landmarker."""
        proposals = self._propose(img, min_score, min_side)
        faces: list[tuple[Face, _Mesh | None]] = []
        for i, p in enumerate(proposals):
            box = (int(p[0]), int(p[1]), int(p[2]), int(p[3]))
            score = float(p[14])
            if i >= MAX_VERIFIED:
                if score >= STRONG_SCORE:  # too many to check: trust only strong ones
                    faces.append((Face(box, round(score, 3)), None))
                continue
            mesh = self._mesh_in_crop(img, p)
            if mesh is None:
                continue
            if score < STRONG_SCORE and _disagreement(p, mesh.points) > AGREE_MAX:
                continue
            faces.append((Face(box, round(score, 3)), mesh))

        if not proposals:
            faces.extend(self._landmarker_only(img))
        if faces and all(m is not None for _, m in faces):
            self._carry = [(f, m.points.mean(axis=0)) for f, m in faces if m is not None]
        return faces

    def _observe(self, frame: VideoFrame, faces: list[tuple[Face, _Mesh | None]]) -> FaceObservation:
        det = self.policy.detection

        faces.sort(key=lambda f: f[0].box[2] * f[0].box[3], reverse=True)
        moved = self._track(frame.t, faces)
        pictures: tuple[Face, ...] = ()
        if faces and moved[0]:  # the candidate moves: faces beside them that never moved are pictures
            pictures = tuple(f for (f, _), m in zip(faces[1:], moved[1:], strict=True) if m is False)
            faces = [faces[0]] + [f for f, m in zip(faces[1:], moved[1:], strict=True) if m is not False]
        if not faces:
            return FaceObservation(t=frame.t, count=0, pictures=pictures)
        cand = faces[0][1]
        obs_faces = tuple(f for f, _ in faces)
        if cand is None:
            return FaceObservation(t=frame.t, count=len(faces), faces=obs_faces, pictures=pictures)
        pitch0 = self._level(cand, len(faces))
        # up or down: where the eyes point, the head's tilt from level plus the eyes' own turn in the head
        up = cand.pitch - pitch0 + EYE_DEGREES * cand.gaze_y
        away = (
            abs(cand.yaw) > self.policy.rules["looking_away"].threshold
            or abs(up) > det.pitch_threshold
            or max(abs(cand.gaze_x), abs(cand.gaze_y)) > det.gaze_threshold
        )
        return FaceObservation(
            t=frame.t,
            count=len(faces),
            faces=obs_faces,
            yaw=round(cand.yaw, 1),
            pitch=round(cand.pitch, 1),
            roll=round(cand.roll, 1),
            gaze_x=round(cand.gaze_x, 3),
            gaze_y=round(cand.gaze_y, 3),
            looking_away=bool(away),
            eyes_closed=round(cand.eyes_closed, 3),
            mouth_open=round(cand.mouth_open, 3),
            landmarks=tuple((round(float(cand.points[i][0]), 1), round(float(cand.points[i][1]), 1)) for i in _DLIB5),
            pictures=pictures,
        )

    def _level(self, cand: _Mesh, count: int) -> float:
        """The candidate's own level pitch: the median over their first ``BASELINE_SAMPLES`` face samples alone
        in the picture, clamped to ``BASELINE_MAX`` degrees; 0 until ``BASELINE_MIN`` samples are in. A camera
        below the eyes (a laptop's) or above them (on a monitor) tilts the head by a constant for the whole call
        (person C of the ASL clips reads a pitch of +32 signing to the camera), which is not looking away; the
        clamp keeps a candidate who starts by looking down from setting "down" as level. Yaw has no baseline:
        a camera beside the screen is rarer than one above or below it, and a call that starts with the head
        turned (head-pose-face-detection-female.gif) would set a turned head as straight ahead."""
        if count == 1 and len(self._pitches) < BASELINE_SAMPLES:
            self._pitches.append(cand.pitch)
        if len(self._pitches) < BASELINE_MIN:
            return 0.0
        return float(np.clip(np.median(self._pitches), -BASELINE_MAX, BASELINE_MAX))

    def _track(self, t: float, faces: list[tuple[Face, _Mesh | None]]) -> list[bool | None]:
        """Continue the face tracks with this sample's faces; per face, whether it has moved since its track
        began (False for a face seen for the first time, None for a face without a mesh)."""
        fresh = self._tracks_t is not None and 0.0 < t - self._tracks_t <= TRACK_GAP
        old = self._tracks if fresh else []
        self._tracks_t = t
        tracks: list[_Track] = []
        moved: list[bool | None] = []
        for face, mesh in faces:
            if mesh is None:
                moved.append(None)
                continue
            best = max(old, key=lambda tr: _iou(tr.box, face.box), default=None)
            if best is not None and _iou(best.box, face.box) >= TRACK_IOU:
                old.remove(best)
                track = _Track(face.box, best.ref, best.moved or float(
                    np.mean(np.linalg.norm(mesh.points - best.ref, axis=1))) > STILL_PX)
            else:
                track = _Track(face.box, mesh.points)
            tracks.append(track)
            moved.append(track.moved)
        self._tracks = tracks
        return moved

    def _propose(self, img: np.ndarray, min_score: float, min_side: float) -> list[np.ndarray]:
        h, w = img.shape[:2]
        scale = min(1.0, PROPOSAL_WIDTH / w)
        size = (round(w * scale), round(h * scale))
        # INTER_AREA (~2.8 ms at 640x480): INTER_LINEAR (~0.5) aliases, and made a back of a head in
        # one-by-one-person-detection.mp4 (768x432 -> 400x225) a face in two frames
        view = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else img
        found = self._yunet.detect(view)
        if scale < 1.0:
            found[:, :14] *= np.float32(1.0 / scale)  # boxes and 5 points back to frame pixels
        keep = [r for r in found if r[14] >= min_score and min(r[2], r[3]) >= min_side]
        keep.sort(key=lambda r: float(r[2] * r[3]), reverse=True)
        return keep

    @staticmethod
    def _crop(box: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The landmarker's image for a face box (x, y, w, h, ...): a ``CROP_SIDE`` square of ``CROP_SCALE`` times
        the box (grey outside the frame), as a map from the frame; and the box's centre."""
        x, y, bw, bh = (float(v) for v in box[:4])
        cx, cy = x + bw / 2, y + bh / 2
        s = CROP_SIDE / (max(bw, bh) * CROP_SCALE)
        return np.array([[s, 0, CROP_SIDE / 2 - cx * s], [0, s, CROP_SIDE / 2 - cy * s]]), cx, cy

    def _mesh_in_crop(self, img: np.ndarray, proposal: np.ndarray) -> _Mesh | None:
        """The landmarker on the proposal's crop; the mesh nearest the crop's centre is the proposal's face."""
        assert self._landmarker is not None
        A, cx, cy = self._crop(proposal)
        found = self._landmarker.find(img, A, (CROP_SIDE, CROP_SIDE), fill=114)
        if not found:
            return None
        best = min(found, key=lambda m: float((m.points[_NOSE][0] - cx) ** 2 + (m.points[_NOSE][1] - cy) ** 2))
        return _mesh(best)

    def _landmarker_only(self, img: np.ndarray) -> list[tuple[Face, _Mesh]]:
        assert self._landmarker is not None
        h, w = img.shape[:2]
        scale = max(1.0, 640.0 / w)
        upscale = np.array([[scale, 0, 0], [0, scale, 0]])  # the frame at >= 640 px wide, never built
        out: list[tuple[Face, _Mesh]] = []
        min_side = self.policy.detection.face_min_size * min(h, w)
        for found in self._landmarker.find(img, upscale, (round(w * scale), round(h * scale))):
            pts = found.points
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            if min(x1 - x0, y1 - y0) < min_side:
                continue
            box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
            out.append((Face(box, LANDMARKER_ONLY_SCORE), _mesh(found)))
        return out


class YuNet:
    """YuNet run with onnxruntime on one thread, at the size of the image it is given (padded to a multiple of
    32), from a model whose input size is free (``adapters.derived.free_input``). 400x300: ~4 ms of CPU, where
    OpenCV's ``FaceDetectorYN`` (its new DNN engine) takes ~10. ``detect`` returns what ``FaceDetectorYN``
    does, rows of x, y, w, h, 5 points (x, y), score, decoded the same way (OpenCV's
    ``objdetect/src/face_detect.cpp``): per stride 8, 16, 32 and cell, score = sqrt(cls * obj), the box centre
    is (cell + offset) * stride and its side exp(t) * stride, the points (cell + offset) * stride; then NMS.
    Checked against ``FaceDetectorYN`` on real frames in tests/test_derived.py."""

    STRIDES = (8, 16, 32)

    def __init__(self, path: str | Path, score_threshold: float = 0.3, nms_threshold: float = 0.3,
                 top_k: int = 5000, *, arena: bool = True) -> None:
        self._session = cpu_session(path, arena=arena)
        inp = self._session.get_inputs()[0]
        if all(isinstance(d, int) for d in inp.shape[2:]):
            raise ValueError(f"{Path(path).name} declares a fixed input size; give it the model "
                             "adapters.models.model_paths derives (a free input size)")
        self._input = inp.name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k

    def detect(self, img: np.ndarray) -> np.ndarray:
        """Faces in a BGR image: an N x 15 float32 array (N may be 0), highest score first."""
        h, w = img.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = img.transpose(2, 0, 1)
        out = dict(zip(self._outputs, self._session.run(None, {self._input: blob}), strict=True))
        rows = []
        for s in self.STRIDES:
            score = np.sqrt(np.clip(out[f"cls_{s}"].reshape(-1), 0, 1) * np.clip(out[f"obj_{s}"].reshape(-1), 0, 1))
            keep = np.nonzero(score >= self.score_threshold)[0]
            if not keep.size:
                continue
            r, c = np.divmod(keep, pw // s)
            bb = out[f"bbox_{s}"].reshape(-1, 4)[keep]
            kp = out[f"kps_{s}"].reshape(-1, 5, 2)[keep]
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            x0, y0 = (c + bb[:, 0]) * s - bw / 2, (r + bb[:, 1]) * s - bh / 2
            pts = (kp + np.stack([c, r], 1)[:, None, :]) * s
            rows.append(np.column_stack([x0, y0, bw, bh, pts.reshape(-1, 10), score[keep]]))
        if not rows:
            return np.zeros((0, 15), np.float32)
        found = np.concatenate(rows).astype(np.float32)
        kept = cv2.dnn.NMSBoxes(found[:, :4].tolist(), found[:, 14].tolist(), self.score_threshold,
                                self.nms_threshold, top_k=self.top_k)
        return found[np.asarray(kept, np.int64).reshape(-1)]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _mesh(found: Mesh) -> _Mesh:
    pts = found.points
    yaw, pitch = _yaw_pitch(found.matrix)
    gx, gy = _gaze(pts)
    ia, ib = pts[_IRIS_A], pts[_IRIS_B]
    left, right = (ia, ib) if ia[0] <= ib[0] else (ib, ia)
    roll = math.degrees(math.atan2(-(right[1] - left[1]), right[0] - left[0]))
    return _Mesh(
        points=pts, yaw=yaw, pitch=pitch, roll=roll, gaze_x=gx, gaze_y=gy,
        eyes_closed=(found.blendshape("eyeBlinkLeft") + found.blendshape("eyeBlinkRight")) / 2,
        mouth_open=found.blendshape("jawOpen"),
    )


def _yaw_pitch(matrix: np.ndarray) -> tuple[float, float]:
    """Yaw, pitch in degrees from MediaPipe's facial transformation matrix.

    The matrix maps the canonical face (x right, y up, z towards the viewer) into camera space.
    Raw angles: yaw_raw > 0 when the face points towards the image's right, pitch_raw > 0 when it
    tilts down. Both are negated to the project's convention (yaw > 0 = image's left, pitch > 0 = up).
    """
    R = matrix[:3, :3]
    R = R / max(np.linalg.norm(R[:, 0]), 1e-9)
    yaw_raw = math.degrees(math.asin(float(np.clip(-R[2, 0], -1.0, 1.0))))
    pitch_raw = math.degrees(math.atan2(R[2, 1], R[2, 2]))
    return -yaw_raw, -pitch_raw


def _gaze(pts: np.ndarray) -> tuple[float, float]:
    """Iris offset from the eye centre, in eye widths, averaged over both eyes, scaled to ~[-1, 1]."""
    offs = []
    for (c0, c1), iris in ((_EYE_A, _IRIS_A), (_EYE_B, _IRIS_B)):
        a, b = pts[c0], pts[c1]
        if a[0] > b[0]:
            a, b = b, a  # a: the corner on the image's left
        v = b - a
        width = float(np.hypot(*v))
        if width < 1e-6:
            continue
        u = v / width  # along the eye, towards the image's right
        n = np.array([u[1], -u[0]])  # perpendicular, pointing up in the image
        centre = (a + b) / 2
        d = pts[iris] - centre
        offs.append((-float(d @ u) / width, float(d @ n) / width - GAZE_Y_NEUTRAL))
    if not offs:
        return 0.0, 0.0
    ox = sum(o[0] for o in offs) / len(offs)
    oy = sum(o[1] for o in offs) / len(offs)
    return float(np.clip(ox / GAZE_RANGE, -1, 1)), float(np.clip(oy / GAZE_RANGE, -1, 1))


def _disagreement(proposal: np.ndarray, pts: np.ndarray) -> float:
    """Mean distance between YuNet's 5 points and the same points of the mesh, per box side."""
    yp = proposal[4:14].reshape(5, 2)
    mp_pts = np.stack([pts[_IRIS_A], pts[_IRIS_B], pts[_NOSE], pts[_MOUTH_L], pts[_MOUTH_R]])
    d: list[float] = []
    for i, j in ((0, 1), (3, 4)):  # pairs matched whichever way round
        same = np.linalg.norm(yp[i] - mp_pts[i]) + np.linalg.norm(yp[j] - mp_pts[j])
        swap = np.linalg.norm(yp[i] - mp_pts[j]) + np.linalg.norm(yp[j] - mp_pts[i])
        d.append(float(min(same, swap)) / 2)
    d.append(float(np.linalg.norm(yp[2] - mp_pts[2])))
    return float(np.mean(d)) / max(float(proposal[2]), float(proposal[3]), 1.0)
