"""The Face Landmarker's own runtime (bot.analysis.detectors.facemesh) against the ``mediapipe`` package on real
frames: the same faces, points, blendshapes and pose; and the geometry port exactly on MediaPipe's landmarks."""
from __future__ import annotations

import zipfile

import av
import cv2
import numpy as np
import pytest

from bot.analysis.detectors.facegeometry import FaceGeometry, load_metadata
from bot.analysis.detectors.facemesh import BLENDSHAPES, FaceMesh
from bot.analysis.detectors.faces import CROP_SIDE, FaceDetector, YuNet, _yaw_pitch
from tests.support.paths import MEDIA, shared_models

CLIPS = ("student.mkv", "thanks.mkv", "head-pose-face-detection-female-and-male.gif", "phone_in_hand_front.mp4",
         "one-by-one-person-detection.mp4")


def frames(step: int = 10, per_clip: int = 8) -> list[np.ndarray]:
    """Every ``step``-th frame of each clip, at most ``per_clip`` of each."""
    out = []
    for name in CLIPS:
        with av.open(str(MEDIA / "video" / name)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i >= step * per_clip:
                    break
                if i % step == 0:
                    out.append(f.to_ndarray(format="bgr24"))
    return out


@pytest.fixture(scope="module")
def mediapipe_landmarker():
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(shared_models().face_landmarker)),
        running_mode=vision.RunningMode.IMAGE, num_faces=2, min_face_detection_confidence=0.5,
        min_face_presence_confidence=0.5, output_face_blendshapes=True, output_facial_transformation_matrixes=True)
    landmarker = vision.FaceLandmarker.create_from_options(options)

    def detect(bgr: np.ndarray):
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))

    yield detect
    landmarker.close()


def test_the_same_faces_points_blendshapes_and_pose_as_mediapipe_on_face_crops(mediapipe_landmarker):
    """Each YuNet proposal's crop, as the face detector makes it: MediaPipe is given the crop, the runtime the
    frame and the crop's map. They agree within the second interpolation MediaPipe does."""
    models = shared_models()
    yunet, mesh = YuNet(models.yunet), FaceMesh(models.face_landmarker)
    points, blends, angles, crops, agree = [], [], [], 0, 0
    for img in frames():
        for p in yunet.detect(img)[:2]:
            A, _, _ = FaceDetector._crop(p)
            crop = cv2.warpAffine(img, A, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_LINEAR,
                                  borderValue=(114, 114, 114))
            ref = mediapipe_landmarker(crop)
            ours = mesh.find(img, A, (CROP_SIDE, CROP_SIDE), fill=114)
            crops += 1
            agree += len(ours) == len(ref.face_landmarks)
            for k, lms in enumerate(ref.face_landmarks):
                want = np.array([(q.x * CROP_SIDE, q.y * CROP_SIDE) for q in lms])
                got = [m.points @ A[:, :2].T + A[:, 2] for m in ours]  # into the crop's pixels
                if not got:
                    continue
                j = int(np.argmin([np.abs(g - want).mean() for g in got]))
                points.append(float(np.linalg.norm(got[j] - want, axis=1).mean()))
                ref_bs = np.array([c.score for c in ref.face_blendshapes[k]])
                used = [BLENDSHAPES.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen")]
                blends.append(float(np.abs(ours[j].blendshapes - ref_bs)[used].max()))
                (y0, p0), (y1, p1) = _yaw_pitch(np.asarray(ref.facial_transformation_matrixes[k])), \
                    _yaw_pitch(ours[j].matrix)
                angles.append(max(abs(y0 - y1), abs(p0 - p1)))
    mesh.close()
    assert crops >= 30 and len(points) >= 30, (crops, len(points))
    assert agree >= crops - 1, (agree, crops)  # a profile at the edge of the detector's threshold may differ
    assert np.mean(points) < 0.4 and max(points) < 1.5, (np.mean(points), max(points))  # pixels of the 256 crop
    assert np.mean(blends) < 0.04 and max(blends) < 0.1, (np.mean(blends), max(blends))
    assert np.mean(angles) < 0.6 and max(angles) < 3.0, (np.mean(angles), max(angles))  # degrees


def test_whole_frames_letterboxed_give_the_same_faces_as_mediapipe(mediapipe_landmarker):
    """Whole frames, wider than tall (the detector's input is letterboxed), two people in one of them."""
    mesh = FaceMesh(shared_models().face_landmarker)
    imgs = frames(step=25, per_clip=3) + [cv2.imread(str(MEDIA / "images" / "two_people.jpg"))]
    counts, points = [], []
    for img in imgs:
        h, w = img.shape[:2]
        ref = mediapipe_landmarker(img)
        ours = mesh.find(img, np.eye(2, 3), (w, h))
        counts.append((len(ours), len(ref.face_landmarks)))
        for lms in ref.face_landmarks:
            want = np.array([(q.x * w, q.y * h) for q in lms])
            if ours:
                points.append(min(float(np.linalg.norm(m.points - want, axis=1).mean()) for m in ours)
                              / max(np.ptp(want, axis=0)))  # share of the face's size
    mesh.close()
    assert sum(a == b for a, b in counts) >= len(counts) - 1, counts
    assert max(b for _, b in counts) == 2  # the two people
    assert points and np.mean(points) < 0.005 and max(points) < 0.02, (np.mean(points), max(points))


def test_the_pose_is_mediapipes_matrix_from_its_own_landmarks(mediapipe_landmarker):
    """The geometry port alone: MediaPipe's landmarks in, MediaPipe's matrix out (float32 rounding)."""
    with zipfile.ZipFile(shared_models().face_landmarker) as z:
        geometry = FaceGeometry(*load_metadata(z.read("geometry_pipeline_metadata_landmarks.binarypb")))
    worst = 0.0
    n = 0
    for img in frames(step=15, per_clip=4):
        ref = mediapipe_landmarker(img)
        h, w = img.shape[:2]
        for k, lms in enumerate(ref.face_landmarks):
            matrix = geometry.matrix(np.array([(q.x, q.y, q.z) for q in lms]), w, h)
            assert matrix is not None
            want = np.asarray(ref.facial_transformation_matrixes[k])
            worst = max(worst, *(abs(a - b) for a, b in zip(_yaw_pitch(matrix), _yaw_pitch(want), strict=True)))
            n += 1
    assert n >= 10 and worst < 0.01, (n, worst)  # degrees


def test_a_bundle_without_a_part_is_refused_by_name(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    with zipfile.ZipFile(shared_models().face_landmarker) as z, zipfile.ZipFile(bad, "w") as out:
        for name in z.namelist():
            if name != "face_blendshapes.tflite":
                out.writestr(name, z.read(name))
    with pytest.raises(ValueError, match="face_blendshapes.tflite"):
        FaceMesh(bad)
