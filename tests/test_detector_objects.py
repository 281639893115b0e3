"""ObjectDetector on real images, and the v5 / v8 output layouts decoded alike."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bot.analysis.detectors.objects import COCO80, ObjectDetector, decode, letterbox, names_from_metadata
from bot.analysis.frames import VideoFrame
from bot.analysis.policy import Policy

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
MODEL = SHARED / "models" / "yolov5n.onnx"


@pytest.fixture(scope="module")
def detector():
    d = ObjectDetector(Policy(), MODEL)
    yield d
    d.close()


def frame(name: str) -> VideoFrame:
    img = cv2.imread(str(MEDIA / "images" / name))
    assert img is not None
    return VideoFrame(t=1.0, image=img)


def best(obs, label):
    return max((d for d in obs.detections if d.label == label), key=lambda d: d.confidence, default=None)


def test_model_input_and_names(detector):
    assert detector.input_size == (640, 640)
    assert detector.names == COCO80  # from the ONNX metadata, which equals COCO-80
    assert names_from_metadata({}) == COCO80
    assert names_from_metadata({"names": "{0: 'a', 1: 'b'}"}) == ("a", "b")


def test_desk_laptop_phone_book(detector):
    f = frame("desk_phone_laptop_book.jpg")
    obs = detector.process(f)
    laptop, phone, book = best(obs, "laptop"), best(obs, "cell phone"), best(obs, "book")
    assert laptop is not None and laptop.confidence > 0.8
    assert phone is not None and 0.3 < phone.confidence < 0.55
    assert book is not None and 0.25 < book.confidence < 0.5
    for d in obs.detections:
        x, y, w, h = d.box
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= f.width and y + h <= f.height
        assert d.confidence >= Policy().detection.object_min_confidence
    # the laptop sits in the middle of the picture, the phone left of it, low
    assert laptop.box[0] < f.width / 2 < laptop.box[0] + laptop.box[2]
    assert phone.box[0] + phone.box[2] <= laptop.box[0] + laptop.box[2]


def test_room_laptop(detector):
    laptop = best(detector.process(frame("room_laptop.jpg")), "laptop")
    assert laptop is not None and laptop.confidence > 0.8


def test_dog_is_not_a_person(detector):
    obs = detector.process(frame("dog.jpg"))
    labels = {d.label for d in obs.detections}
    assert "dog" in labels and "person" not in labels


def test_policy_floor_applies():
    d = ObjectDetector(Policy.from_dict({"detection": {"object_min_confidence": 0.5}}), MODEL, threads=1)
    try:
        obs = d.process(frame("desk_phone_laptop_book.jpg"))
    finally:
        d.close()
    assert obs.detections and all(x.confidence >= 0.5 for x in obs.detections)
    assert {x.label for x in obs.detections} >= {"laptop"}
    assert "book" not in {x.label for x in obs.detections}


def test_v8_layout_decodes_like_v5(detector):
    """Real v5 output turned into the v8 layout (score = class * objectness, no objectness, 1x84xN)."""
    f = frame("desk_phone_laptop_book.jpg")
    raw, scale, pad = detector.raw(f.image)
    assert raw.shape == (1, 25200, 85)
    v8 = np.concatenate([raw[..., :4], raw[..., 5:] * raw[..., 4:5]], axis=-1).transpose(0, 2, 1)
    assert v8.shape == (1, 84, 25200)
    kw = dict(scale=scale, pad=pad, frame_size=(f.width, f.height), names=COCO80, min_confidence=0.25)
    a, b = decode(raw, **kw), decode(np.ascontiguousarray(v8), **kw)
    assert a == b
    assert {d.label for d in a} >= {"laptop", "cell phone", "book"}


def test_decode_rejects_unknown_layout():
    with pytest.raises(ValueError):
        decode(np.zeros((1, 10, 7), np.float32), scale=1, pad=(0, 0), frame_size=(640, 640), names=COCO80,
               min_confidence=0.25)


def test_letterbox_keeps_aspect_and_pads_114():
    img = np.full((270, 480, 3), 10, np.uint8)
    out, r, (px, py) = letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3) and r == pytest.approx(640 / 480)
    assert px == 0 and py == 140
    assert (out[0, 0] == 114).all() and (out[320, 320] == 10).all()
