"""Models derived to run at the frame's size (adapters.derived): YOLOv5n cut at its heads gives the same detections
as the whole export without padding; YuNet with a free input size finds what OpenCV's FaceDetectorYN finds;
dlib's face recognition network as ONNX gives dlib's descriptors."""
from __future__ import annotations

import av
import cv2
import numpy as np
import onnxruntime as ort
import pytest

from adapters.derived import dlib_resnet, free_input, yolo_heads
from adapters.models import model_paths, resolve_packaged, sha256_of
from bot.analysis.detectors.faces import YuNet
from bot.analysis.detectors.objects import HEADS_META, ObjectDetector, decode_heads, letterbox
from bot.analysis.frames import VideoFrame
from bot.analysis.policy import Policy
from bot.settings import Settings
from tests.support.paths import MEDIA, MODELS

SOURCE = MODELS / "yolov5n.onnx"


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    return yolo_heads(SOURCE, tmp_path_factory.mktemp("cache"), source_sha256=sha256_of(SOURCE))


def video_frame(name: str, index: int) -> np.ndarray:
    with av.open(str(MEDIA / "video" / name)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="bgr24")
    raise AssertionError(f"{name} has no frame {index}")


def iou(a, b) -> float:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_heads_reproduce_the_whole_model_on_a_real_frame(heads):
    """At the export's own 640x640 input, every decoded cell equals the export's output."""
    img, _, _ = letterbox(video_frame("phone_in_hand_front.mp4", 50), (640, 640))
    x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255
    whole = ort.InferenceSession(str(SOURCE), providers=["CPUExecutionProvider"])
    cut = ort.InferenceSession(str(heads), providers=["CPUExecutionProvider"])
    want = whole.run(None, {"images": x})[0][0]
    maps = cut.run(None, {"images": x})
    assert [m.shape for m in maps] == [(1, 255, 80, 80), (1, 255, 40, 40), (1, 255, 20, 20)]
    meta = cut.get_modelmeta().custom_metadata_map
    assert "names" in meta and HEADS_META in meta
    import json
    spec = json.loads(meta[HEADS_META])
    assert spec["strides"] == [8, 16, 32]
    assert spec["anchors"][0][0] == pytest.approx([10, 13], abs=0.01)  # YOLOv5's P3 anchors, read back
    assert spec["anchors"][2][2] == pytest.approx([373, 326], abs=0.01)
    got = decode_heads(maps, spec["strides"], spec["anchors"], min_objectness=0.0)
    assert got.shape == want.shape == (25200, 85)
    assert np.abs(got - want).max() < 1e-2
    some = decode_heads(maps, spec["strides"], spec["anchors"], min_objectness=0.25)
    assert 0 < len(some) < 200 and (some[:, 4] >= 0.25).all()
    assert len(some) == int((want[:, 4] >= 0.25).sum())


@pytest.mark.parametrize("clip, index, size", [
    ("phone_in_hand_front.mp4", 50, (640, 384)),  # a held phone, 1920x1080
    ("phone_in_hand_profile.mp4", 30, (640, 384)),
    ("one-by-one-person-detection.mp4", 300, (640, 384)),  # people in a room, 768x432
    ("student.mkv", 20, (640, 480)),  # webcam framing, 640x480: no padding at all
])
def test_same_detections_as_the_whole_model(heads, clip, index, size):
    img = video_frame(clip, index)
    whole = ObjectDetector(Policy(), SOURCE, threads=1)
    cut = ObjectDetector(Policy(), heads, threads=1)
    try:
        frame = VideoFrame(t=0.0, image=img)
        a, b = whole.process(frame).detections, cut.process(frame).detections
        assert cut.fit(img.shape[1], img.shape[0]) == size and whole.fit(img.shape[1], img.shape[0]) == (640, 640)
    finally:
        whole.close()
        cut.close()
    assert a, "the whole model finds something here"
    for d in a:
        if d.confidence < 0.4:
            continue  # near the threshold the padding's context may tip a weak one either way
        match = max((e for e in b if e.label == d.label), key=lambda e: iou(d.box, e.box), default=None)
        assert match is not None, f"{d.label} {d.confidence} lost"
        assert iou(d.box, match.box) > 0.8 and abs(d.confidence - match.confidence) < 0.1


def test_fit_pads_to_the_largest_stride(heads):
    d = ObjectDetector(Policy(), heads, threads=1)
    try:
        assert d.fit(640, 480) == (640, 480)
        assert d.fit(480, 270) == (640, 384)
        assert d.fit(1920, 1080) == (640, 384)
        assert d.fit(480, 640) == (480, 640)
    finally:
        d.close()


def test_derived_once_and_again_when_damaged(tmp_path):
    sha = sha256_of(SOURCE)
    first = yolo_heads(SOURCE, tmp_path, source_sha256=sha)
    assert first is not None and first.parent == tmp_path / "models" and first.name.endswith(f"{sha[:16]}.onnx")
    mtime = first.stat().st_mtime_ns
    assert yolo_heads(SOURCE, tmp_path, source_sha256=sha) == first and first.stat().st_mtime_ns == mtime
    good = first.read_bytes()
    first.write_bytes(good[: len(good) // 2])  # cut short
    again = yolo_heads(SOURCE, tmp_path, source_sha256=sha)
    assert again == first and again.read_bytes() == good
    assert not [p for p in (tmp_path / "models").iterdir() if p.suffix == ".tmp"]


YUNET = MODELS / "face_detection_yunet_2023mar.onnx"


def test_another_graph_is_not_cut(tmp_path):
    assert yolo_heads(YUNET, tmp_path, source_sha256=sha256_of(YUNET)) is None
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("clip, step", [("asl/again.mkv", 8), ("asl/eat.mkv", 8), ("phone_in_hand_front.mp4", 8),
                                         ("head-pose-face-detection-female-and-male.gif", 6)])
def test_yunet_free_input_finds_what_opencv_finds(tmp_path, clip, step):
    """The same faces, boxes, points and scores as cv2.FaceDetectorYN at 400 px wide, as the proposals run."""
    free = free_input(YUNET, tmp_path, source_sha256=sha256_of(YUNET))
    assert free is not None and free.name.startswith("face_detection_yunet_2023mar-free-")
    mine = YuNet(free)
    theirs = cv2.FaceDetectorYN.create(str(YUNET), "", (400, 300), 0.3, 0.3, 5000)
    faces = 0
    with av.open(str(MEDIA / "video" / clip)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step:
                continue
            img = f.to_ndarray(format="bgr24")
            img = cv2.resize(img, (400, round(img.shape[0] * 400 / img.shape[1])))
            theirs.setInputSize((img.shape[1], img.shape[0]))
            want = theirs.detect(img)[1]
            want = np.zeros((0, 15), np.float32) if want is None else want[np.argsort(-want[:, 14])]
            got = mine.detect(img)
            assert got.shape == want.shape
            assert np.abs(got - want).max(initial=0.0) < 1e-3
            faces += len(got)
    assert faces >= 5


def test_fixed_yunet_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="fixed input size"):
        YuNet(YUNET)


def test_model_paths_hand_on_the_cut_model(tmp_path):
    paths = model_paths(Settings(models_dir=MODELS, cache_dir=tmp_path))
    assert paths.yolo.parent == tmp_path / "models" and "heads" in paths.yolo.name
    assert paths.yunet.parent == tmp_path / "models" and "free" in paths.yunet.name
    assert paths.face_landmarker == MODELS / "face_landmarker.task"
    assert paths.face_recognition is not None and paths.face_recognition.parent == tmp_path / "models"
    assert paths.face_recognition.suffix == ".onnx"


DLIB = resolve_packaged("face_recognition")


def test_dlib_network_as_onnx_gives_dlibs_descriptors_on_real_faces(tmp_path):
    """Aligned chips of four people (the mesh's 5 points): the ONNX graph's descriptor is dlib's, within 1e-4.
    (Person C looks up at the camera throughout: not a face the identity check compares.)"""
    from bot.analysis.detectors.faces import FaceDetector
    from bot.analysis.detectors.identity import IdentityDetector, usable
    from tests.support.paths import shared_models
    from tests.support.scenario import read_clip

    onnx_path = dlib_resnet(DLIB, tmp_path, source_sha256=sha256_of(DLIB))
    assert onnx_path is not None and onnx_path.parent == tmp_path / "models" and onnx_path.suffix == ".onnx"
    models = shared_models()
    policy = Policy()
    faces = FaceDetector(policy, models.yunet, models.face_landmarker)
    by_dlib, by_onnx = IdentityDetector(policy, DLIB), IdentityDetector(policy, onnx_path)
    worst, compared, people = 0.0, 0, set()
    try:
        for name in ("again", "milk", "eat", "hungry"):  # persons A, B, D, E
            for i, img in enumerate(read_clip(MEDIA / "video/asl" / f"{name}.mkv")[::15][:3]):
                obs = faces.process(VideoFrame(i, img))
                if not usable(obs):
                    continue
                chip = by_dlib.chip(img, obs.landmarks)
                want, got = by_dlib.embed(chip), by_onnx.embed(chip)
                assert 1.0 < float(np.linalg.norm(want)) < 2.0  # dlib's raw descriptor, not normalised
                worst = max(worst, float(np.abs(want - got).max()))
                compared += 1
                people.add(name)
    finally:
        faces.close()
    assert compared >= 10 and len(people) == 4, (compared, people)
    assert worst < 1e-4, worst


def test_a_damaged_dlib_file_is_not_converted(tmp_path):
    cut = tmp_path / DLIB.name
    cut.write_bytes(DLIB.read_bytes()[:-1000])
    assert dlib_resnet(cut, tmp_path, source_sha256=sha256_of(cut)) is None
    assert not (tmp_path / "models").exists()


def test_dlib_reader_names_what_it_found(tmp_path):
    from adapters.dlib_net import DlibFormatError, parse

    net = parse(str(DLIB))
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds[-2:] == ["fc", "loss_metric"]
    odd = tmp_path / "odd.dat"
    odd.write_bytes(DLIB.read_bytes() + b"\0")
    with pytest.raises(DlibFormatError, match="trailing"):
        parse(str(odd))
