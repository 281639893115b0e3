"""Compose long test recordings from the real media in ../shared/media.

A scenario is a list of segments (a looped clip, a still image, black, a frozen
picture), each with a duration, written as an H.264 mp4 with an AAC audio
track. Stills get a little noise on every frame so they look like a live
camera; a "frozen" segment repeats one frame exactly, as a stuck feed does.
The segments' times are the known timeline the tests compare events with.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SIZE = (640, 480)
AUDIO_RATE = 16000

FrameSource = Callable[[int, int], Iterator[np.ndarray]]  # (n frames, fps) -> BGR frames


def fit(image: np.ndarray, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Letterbox an image into `size` (w, h) on a dark grey background."""
    w, h = size
    ih, iw = image.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = round(iw * scale), round(ih * scale)
    canvas = np.full((h, w, 3), 40, np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    canvas[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def read_clip(path: Path, frames: slice | None = None) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        images = [fit(f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]
    return images[frames] if frames else images


def clip(path: Path, frames: slice | None = None) -> FrameSource:
    """A clip played forwards and backwards in a loop, at the scenario's rate."""
    images = read_clip(path, frames)
    with av.open(str(path)) as c:
        rate = float(c.streams.video[0].average_rate or 25)
    loop = images + images[-2:0:-1] if len(images) > 2 else images

    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        for i in range(n):
            yield loop[int(i * rate / fps) % len(loop)]
    return gen


def still(path: Path, noise: int = 3, seed: int = 0) -> FrameSource:
    image = fit(cv2.imread(str(path)))

    def same(n: int, fps: int) -> Iterator[np.ndarray]:
        for _ in range(n):
            yield image
    return sensor(same, noise, seed)


def black(level: int = 6, noise: int = 2, seed: int = 1) -> FrameSource:
    """A covered lens: near-black with sensor noise."""
    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for _ in range(n):
            yield rng.integers(max(0, level - noise), level + noise + 1, size=(SIZE[1], SIZE[0], 3),
                               dtype=np.uint8)
    return gen


def frozen(path: Path, index: int = 0) -> FrameSource:
    """A stuck feed: one frame of a clip, repeated exactly."""
    image = read_clip(path)[index]

    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        for _ in range(n):
            yield image
    return gen


def sensor(source: FrameSource, noise: int = 2, seed: int = 2) -> FrameSource:
    """The same frames with a live camera's sensor noise (a fresh +-`noise` levels per pixel and frame). A
    composed clip loops its frames (``clip``: a 6-frame slice comes back every 1/3 s), and a looped frame is the
    very same picture, which no live camera sends: sampled at the right phase it reads as a frozen feed."""

    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for image in source(n, fps):
            jitter = rng.integers(-noise, noise + 1, size=image.shape, dtype=np.int16)
            yield np.clip(image.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
    return gen


def lit(source: FrameSource, factor: float) -> FrameSource:
    """The same frames under other light: every pixel scaled by `factor` (0.5 = half as bright)."""

    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        for image in source(n, fps):
            yield np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    return gen


def postered(source: FrameSource, poster: Path, width: int = 160) -> FrameSource:
    """The same frames with a picture pinned to the wall at the top right (a poster behind the candidate)."""
    image = cv2.imread(str(poster))
    if image is None:
        raise FileNotFoundError(poster)
    image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])), interpolation=cv2.INTER_AREA)

    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        for frame in source(n, fps):
            out = frame.copy()
            w = out.shape[1]
            out[10:10 + image.shape[0], w - width - 10:w - 10] = image
            yield out
    return gen


def leaning(source: FrameSource, closest: float = 1.4) -> FrameSource:
    """The candidate leaning in towards the camera and back again, simulated by a zoom: the picture grows
    smoothly to `closest` times its size halfway through the segment (a crop around the upper middle, where a
    webcam's face is) and shrinks back. Nobody changes: no event may come of it."""

    def gen(n: int, fps: int) -> Iterator[np.ndarray]:
        for i, frame in enumerate(source(n, fps)):
            h, w = frame.shape[:2]
            scale = 1.0 + (closest - 1.0) * (1.0 - abs(2.0 * i / max(1, n - 1) - 1.0))
            cw, ch = w / scale, h / scale
            x0, y0 = (w - cw) / 2, (h - ch) * 0.4
            m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
            yield cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return gen


@dataclass
class Segment:
    name: str
    seconds: float
    source: FrameSource
    expect: set[str] = field(default_factory=set)  # event types this segment must cause
    speech: Path | None = None  # audio file played at the segment's start


@dataclass
class Timeline:
    path: Path
    segments: list[tuple[float, float, Segment]]  # (start, end, segment)
    duration: float

    def window(self, name: str) -> tuple[float, float]:
        for start, end, seg in self.segments:
            if seg.name == name:
                return start, end
        raise KeyError(name)


def load_audio(path: Path) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    parts = []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


def compose(path: Path, segments: list[Segment], fps: int = 15, seed: int = 7) -> Timeline:
    """Write the scenario to `path` (.mp4, H.264 + AAC) and return its timeline."""
    total = sum(s.seconds for s in segments)
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(int(total * AUDIO_RATE)) * 0.002).astype(np.float32)  # room tone
    spans = []
    t = 0.0
    for seg in segments:
        spans.append((t, t + seg.seconds, seg))
        if seg.speech is not None:
            speech = load_audio(seg.speech)
            a = int(t * AUDIO_RATE)
            b = min(len(audio), a + len(speech))
            audio[a:b] += speech[: b - a]
        t += seg.seconds

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        vs.options = {"crf": "12", "preset": "veryfast"}
        aus = out.add_stream("aac", rate=AUDIO_RATE)
        aus.layout = "mono"
        pts = 0
        for start, end, seg in spans:
            n = round((end - start) * fps)
            for image in seg.source(n, fps):
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts, frame.time_base = pts, Fraction(1, fps)
                pts += 1
                out.mux(vs.encode(frame))
        out.mux(vs.encode())
        step = 1024
        for i in range(0, len(audio), step):
            chunk = np.clip(audio[i:i + step], -1, 1).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = AUDIO_RATE, i, Fraction(1, AUDIO_RATE)
            out.mux(aus.encode(af))
        out.mux(aus.encode())
    return Timeline(path, spans, total)
