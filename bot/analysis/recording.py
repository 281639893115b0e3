"""Recorded media: the file source of `proctor analyze`.

A recorded file is read with PyAV (any container FFmpeg reads: mp4, mkv, webm,
avi, gif...), with OpenCV as a fallback for video. Frames are decoded in order
but converted to BGR arrays only when a detector is due to see them: the
sampler decides, at the policy's per-detector rates, and never by default
hands on every decoded frame. Audio is decoded to 16 kHz mono float32 and cut
into fixed chunks. Both streams are merged by timestamp, lazily, so an hour of
video never sits in memory.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from bot.analysis.frames import AudioChunk, VideoFrame
from bot.analysis.policy import Sampling
from bot.analysis.sampler import SampledFrame, Sampler

AUDIO_RATE = 16000


class MediaError(Exception):
    """A media file that cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    path: Path
    duration: float | None  # seconds, when the container knows it
    fps: float | None
    width: int
    height: int
    frames: int | None  # when the container knows it
    has_audio: bool


@dataclass(slots=True)
class RawFrame:
    """A decoded frame not yet converted; `image()` converts once, on demand."""

    t: float
    _frame: av.VideoFrame | np.ndarray
    _bgr: np.ndarray | None = None

    def image(self) -> np.ndarray:
        if self._bgr is None:
            f = self._frame
            self._bgr = f if isinstance(f, np.ndarray) else f.to_ndarray(format="bgr24")
        return self._bgr

    def video_frame(self) -> VideoFrame:
        return VideoFrame(self.t, self.image())


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(f"{path}: not a readable media file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.splitlines()[0] if msg else type(e).__name__


def probe(path: str | Path) -> MediaInfo:
    """What is in a media file; MediaError if it has no readable video."""
    p = Path(path)
    try:
        with _open(p) as c:
            has_audio = bool(c.streams.audio)
            if not c.streams.video:
                raise MediaError(f"{p}: not a video (no video stream)")
            v = c.streams.video[0]
            fps = float(v.average_rate) if v.average_rate else None
            duration = None
            if v.duration is not None and v.time_base is not None:
                duration = float(v.duration * v.time_base)
            elif c.duration is not None:
                duration = c.duration / 1_000_000
            frames = v.frames or (round(duration * fps) if duration and fps else None)
            return MediaInfo(p, duration, fps, v.codec_context.width, v.codec_context.height,
                             frames, has_audio)
    except MediaError:
        if not p.is_file():
            raise
        cap = cv2.VideoCapture(str(p))
        try:
            if not cap.isOpened():
                raise
            fps = cap.get(cv2.CAP_PROP_FPS) or None
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            return MediaInfo(p, n / fps if n and fps else None, fps,
                             int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                             int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), n, False)
        finally:
            cap.release()


def iter_video(path: str | Path) -> Iterator[RawFrame]:
    """Every decoded frame, timestamps rebased so the first frame is at 0."""
    p = Path(path)
    try:
        container = _open(p)
    except MediaError:
        if not p.is_file():
            raise
        yield from _iter_video_opencv(p)
        return
    with container:
        if not container.streams.video:
            raise MediaError(f"{p}: not a video (no video stream)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else 25.0
        t0: float | None = None
        last = -math.inf
        n = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else n / rate
                if t0 is None:
                    t0 = t
                t -= t0
                if t <= last:  # broken or missing pts: keep time moving forward
                    t = last + 1.0 / rate
                last = t
                n += 1
                yield RawFrame(t, frame)
        except av.error.FFmpegError as e:
            if n == 0:
                raise MediaError(f"{p}: cannot decode video ({_reason(e)})") from None
            raise MediaError(f"{p}: video is damaged after {last:.1f} s ({_reason(e)})") from None
        if n == 0:
            raise MediaError(f"{p}: video stream has no frames")


def _iter_video_opencv(p: Path) -> Iterator[RawFrame]:
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise MediaError(f"{p}: not a readable video (neither PyAV nor OpenCV can open it)")
    try:
        rate = cap.get(cv2.CAP_PROP_FPS) or 25.0
        n = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield RawFrame(n / rate, img)
            n += 1
        if n == 0:
            raise MediaError(f"{p}: video has no frames")
    finally:
        cap.release()


def has_audio(path: str | Path) -> bool:
    try:
        with _open(Path(path)) as c:
            return bool(c.streams.audio)
    except MediaError:
        return False


def iter_audio(path: str | Path, chunk_seconds: float, *, offset: float = 0.0) -> Iterator[AudioChunk]:
    """Audio as 16 kHz mono float32 chunks of `chunk_seconds` (the last may be shorter)."""
    p = Path(path)
    with _open(p) as container:
        if not container.streams.audio:
            raise MediaError(f"{p}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        size = max(1, int(round(chunk_seconds * AUDIO_RATE)))
        buf = np.empty(0, dtype=np.float32)
        emitted = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    buf = np.concatenate([buf, out.to_ndarray().reshape(-1).astype(np.float32)])
                while len(buf) >= size:
                    yield AudioChunk(offset + emitted / AUDIO_RATE, buf[:size].copy(), AUDIO_RATE)
                    emitted += size
                    buf = buf[size:]
            for out in resampler.resample(None):
                buf = np.concatenate([buf, out.to_ndarray().reshape(-1).astype(np.float32)])
        except av.error.FFmpegError as e:
            raise MediaError(f"{p}: cannot decode audio ({_reason(e)})") from None
        if len(buf) >= size // 4:  # a short tail still counts; a few samples do not
            yield AudioChunk(offset + emitted / AUDIO_RATE, buf, AUDIO_RATE)


MediaItem = SampledFrame | AudioChunk


def sample_file(video: str | Path, sampling: Sampling, *, audio: str | Path | None = None,
                on_frame: Callable[[float], None] | None = None) -> Iterator[MediaItem]:
    """Sampled video frames and audio chunks of a recording, merged in time order.

    `audio` is a separate audio file; when None, the video's own audio track is
    used if it has one. `on_frame(t)` is called for every decoded frame (for a
    progress bar), sampled or not.
    """
    sampler = Sampler.from_policy(sampling)

    def frames() -> Iterator[SampledFrame]:
        for raw in iter_video(video):
            if on_frame is not None:
                on_frame(raw.t)
            due = sampler.due(raw.t)
            if due:
                yield SampledFrame(raw.video_frame(), due)

    sources: list[Iterator[MediaItem]] = [frames()]
    audio_path = audio if audio is not None else (video if has_audio(video) else None)
    if audio is not None:
        with _open(Path(audio)) as c:
            if not c.streams.audio:
                raise MediaError(f"{audio}: has no audio stream")
    if audio_path is not None:
        sources.append(iter_audio(audio_path, sampling.audio_chunk))
    return heapq.merge(*sources, key=_ready_at)


def _ready_at(item: MediaItem) -> float:
    """When an item is complete: a frame at its time, an audio chunk at its end.

    Ordering chunks by their end lets the rules see the face observations made
    during a chunk (is the mouth moving?) before the chunk's voice decision.
    """
    return item.t + item.duration if isinstance(item, AudioChunk) else item.t
