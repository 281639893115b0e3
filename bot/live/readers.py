"""Readers that drain received aiortc tracks and hand media on without unbounded queues.

aiortc puts every decoded frame of a remote track into an unbounded queue; a
track nobody reads grows it without limit. A reader runs one task per track
that awaits ``track.recv()`` for ever and keeps only what the pipeline can use:

- `LatestFrame`: the newest video frame (an ``av.VideoFrame``, converted to a BGR
  `bot.analysis.frames.VideoFrame` only when a consumer takes it); older ones are dropped
  and counted.
- `AudioReader`: mono float32 at 16 kHz cut into fixed-length `AudioChunk`s, in a
  bounded ring (the oldest chunk is dropped and counted when it is full).

Timestamps are seconds since the call start, given by ``clock()``. A track's
media time (``pts * time_base``) is anchored to the clock at its first frame and
re-anchored when it jumps (a new track after a reconnect starts again at 0; an
RTP timestamp jump), so times stay close to the clock and never go backwards.
A reader outlives its tracks: `attach()` a new track after a reconnect and the
consumers keep the same object.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, TypeVar

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bot.analysis.frames import AudioChunk, VideoFrame
from bot.analysis.observations import TrackObservation

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # seconds since the call start
_T = TypeVar("_T")


class Timeline:
    """Maps a track's media time to call time; re-anchors on jumps, never goes backwards."""

    def __init__(self, clock: Clock, *, max_skew: float = 1.0) -> None:
        self._clock = clock
        self.max_skew = max_skew
        self._anchor_t: float | None = None
        self._anchor_media = 0.0
        self._last_t: float | None = None
        self.reanchors = 0

    def restart(self) -> None:
        """A new track: its media time starts somewhere else."""
        self._anchor_t = None

    def stamp(self, pts: int | None, time_base: Fraction | None) -> float:
        now = self._clock()
        if pts is None or time_base is None:
            t = now
        else:
            media = float(pts * time_base)
            if self._anchor_t is None:
                self._anchor_t, self._anchor_media = now, media
            t = self._anchor_t + (media - self._anchor_media)
            if abs(t - now) > self.max_skew:
                self.reanchors += 1
                self._anchor_t, self._anchor_media = now, media
                t = now
        if self._last_t is not None and t < self._last_t:
            t = self._last_t
        self._last_t = t
        return t


class _TrackReader:
    kind: Literal["video", "audio"]

    def __init__(self, clock: Clock, *, max_skew: float = 1.0) -> None:
        self.clock = clock
        self.timeline = Timeline(clock, max_skew=max_skew)
        self.frames_received = 0
        self.tracks_attached = 0
        self.last_frame_at: float = clock()  # call time of the last frame (or of attach/creation)
        self.handle_seconds = 0.0  # CPU (thread time) spent handling received frames, decoding excluded
        self._task: asyncio.Task[None] | None = None
        self._track: MediaStreamTrack | None = None
        self._closed = False
        self._wakeup = asyncio.Event()

    @property
    def reading(self) -> bool:
        """True while a track is attached and has not ended."""
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._closed

    def attach(self, track: MediaStreamTrack) -> None:
        """Read `track` from now on (replacing any previous one)."""
        if track.kind != self.kind:
            raise ValueError(f"{type(self).__name__} reads {self.kind} tracks, not {track.kind}")
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._task is not None:
            self._task.cancel()
        self._track = track
        self.tracks_attached += 1
        self.last_frame_at = self.clock()
        self.timeline.restart()
        self._on_attach()
        self._task = asyncio.create_task(self._run(track), name=f"read-{self.kind}-{track.id}")

    def silent_for(self, now: float | None = None) -> float:
        """Seconds since the last frame arrived (or since attach, if none came)."""
        now = self.clock() if now is None else now
        return max(0.0, now - self.last_frame_at)

    def observation(self, now: float | None = None) -> TrackObservation:
        now = self.clock() if now is None else now
        return TrackObservation(t=now, kind=self.kind, silent_for=self.silent_for(now))

    async def close(self) -> None:
        """Stop reading; waiting consumers get None."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._notify()

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                started = time.thread_time()
                self.frames_received += 1
                self.last_frame_at = self.clock()
                self._on_frame(frame)
                self.handle_seconds += time.thread_time() - started
        except MediaStreamError:
            log.info("%s track %s ended after %d frames", self.kind, track.id, self.frames_received)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bad frame must not leave the track unread for ever
            log.exception("%s reader failed; track %s is no longer read", self.kind, track.id)
        finally:
            if self._track is track:
                self._track = None

    def _notify(self) -> None:
        event, self._wakeup = self._wakeup, asyncio.Event()
        event.set()

    async def _next(self, take: Callable[[], _T | None], timeout: float | None) -> _T | None:
        """`take()`'s first item, waiting for frames until it has one; None when closed or after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            item = take()
            if item is not None:
                return item
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if not await self._wait(remaining):
                return None
        return None

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for the next frame/chunk or close; False on timeout."""
        event = self._wakeup
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _on_attach(self) -> None:
        pass

    def _on_frame(self, frame: Any) -> None:
        """One received frame (an ``av.VideoFrame`` or ``av.AudioFrame``, by the reader's kind)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Sample:
    """A received frame some detectors are due on, picked as it arrived (``LatestFrame.sample``)."""

    t: float  # call time of the frame
    due: frozenset[str]
    arrived: float  # wall-clock time.time() at arrival: where the alert latency starts
    frame: Any  # the av.VideoFrame, converted by ``LatestFrame.convert`` in the consumer's thread


class LatestFrame(_TrackReader):
    """Keeps the newest video frame of a track; consumers sample it at their own rate.

    A consumer that must not lose samples while it is busy (the live call, whose analysis step may take
    longer than a sample period under load) gives ``sample(due, depth)`` a sampler: each arriving frame that a
    detector is due on is then kept, up to ``depth`` of them (the oldest pushed out and counted in
    ``samples_dropped``), until ``take_sample`` hands it on. Without it, a step that ran for 0.5 s lost the
    two face samples that arrived meanwhile, since only the newest frame is held.
    """

    kind = "video"

    def __init__(self, clock: Clock, *, max_skew: float = 1.0) -> None:
        super().__init__(clock, max_skew=max_skew)
        self.frames_dropped = 0  # replaced before any consumer took them
        self.frames_taken = 0
        self.samples_dropped = 0  # picked by the sampler, pushed out of the full queue before they were taken
        self.convert_seconds = 0.0  # CPU (thread time) spent converting to BGR
        self._t: float | None = None
        self._frame: av.VideoFrame | None = None
        self._taken = False
        self._converted: VideoFrame | None = None
        self._due: Callable[[float], frozenset[str]] | None = None
        self._samples: collections.deque[Sample] = collections.deque(maxlen=1)

    def sample(self, due: Callable[[float], frozenset[str]], depth: int) -> None:
        """Pick the frames some detector is due on as they arrive (``due(t)`` names them), keeping `depth`."""
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._due = due
        self._samples = collections.deque(maxlen=depth)

    @property
    def samples_queued(self) -> int:
        return len(self._samples)

    def take_sample(self) -> Sample | None:
        """The oldest picked frame not yet taken, or None."""
        if not self._samples:
            return None
        self.frames_taken += 1
        return self._samples.popleft()

    def convert(self, sample: Sample) -> VideoFrame:
        """A picked frame as BGR (in the caller's thread: the live call converts in its worker thread)."""
        started = time.thread_time()
        image = sample.frame.to_ndarray(format="bgr24")
        self.convert_seconds += time.thread_time() - started
        return VideoFrame(t=sample.t, image=image)

    @property
    def held(self) -> int:
        """Frames held in memory: 0 or 1."""
        return 0 if self._frame is None else 1

    @property
    def latest_t(self) -> float | None:
        return self._t

    def latest(self) -> VideoFrame | None:
        """The newest frame as BGR, converted now (once per frame)."""
        if self._frame is None or self._t is None:
            return None
        if self._converted is None:
            started = time.thread_time()
            image = self._frame.to_ndarray(format="bgr24")
            self.convert_seconds += time.thread_time() - started
            self._converted = VideoFrame(t=self._t, image=image)
        if not self._taken:
            self._taken = True
            self.frames_taken += 1
        return self._converted

    async def next(self, after_t: float | None = None, timeout: float | None = None) -> VideoFrame | None:
        """The newest frame newer than `after_t` (any frame if None), waiting for one.

        None when the reader is closed or `timeout` seconds pass without one.
        """
        def newer() -> VideoFrame | None:
            return self.latest() if self._t is not None and (after_t is None or self._t > after_t) else None

        return await self._next(newer, timeout)

    def _on_frame(self, frame: Any) -> None:
        if self._frame is not None and not self._taken:
            self.frames_dropped += 1
        self._t = self.timeline.stamp(frame.pts, frame.time_base)
        self._frame = frame
        self._taken = False
        self._converted = None
        if self._due is not None:
            due = self._due(self._t)
            if due:
                if len(self._samples) == self._samples.maxlen:
                    self.samples_dropped += 1
                self._samples.append(Sample(self._t, due, time.time(), frame))
                self._taken = True  # picked: not a dropped frame
        self._notify()


class AudioReader(_TrackReader):
    """Drains an audio track into fixed-length mono float32 chunks in a bounded ring."""

    kind = "audio"

    def __init__(
        self,
        clock: Clock,
        *,
        chunk_seconds: float = 0.5,
        sample_rate: int = 16000,
        max_chunks: int = 20,
        max_skew: float = 1.0,
        max_gap: float = 0.2,
    ) -> None:
        super().__init__(clock, max_skew=max_skew)
        if chunk_seconds <= 0 or max_chunks < 1:
            raise ValueError("chunk_seconds must be > 0 and max_chunks >= 1")
        self.sample_rate = sample_rate
        self.chunk_samples = max(1, round(chunk_seconds * sample_rate))
        self.max_gap = max_gap  # a hole in the media time larger than this starts a new chunk
        self.chunks_made = 0
        self.chunks_dropped = 0  # oldest chunks pushed out of the full ring
        self.samples_discarded = 0  # partial chunks cut by a gap or a new track
        self._ring: collections.deque[AudioChunk] = collections.deque(maxlen=max_chunks)
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._start_t: float | None = None  # call time of the first pending sample
        self._resampler: av.AudioResampler | None = None

    @property
    def queued(self) -> int:
        return len(self._ring)

    def take(self) -> AudioChunk | None:
        """The oldest queued chunk, without waiting."""
        return self._ring.popleft() if self._ring else None

    def take_all(self) -> list[AudioChunk]:
        chunks = list(self._ring)
        self._ring.clear()
        return chunks

    async def next(self, timeout: float | None = None) -> AudioChunk | None:
        """The oldest queued chunk, waiting for one; None when closed or on timeout."""
        return await self._next(self.take, timeout)

    def _on_attach(self) -> None:
        self._reset_buffer()
        self._resampler = None

    def _reset_buffer(self) -> None:
        self.samples_discarded += self._pending
        self._parts.clear()
        self._pending = 0
        self._start_t = None

    def _resample(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        try:
            return self._resampler.resample(frame)
        except ValueError:  # the input format changed mid-track
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
            return self._resampler.resample(frame)

    def _on_frame(self, frame: Any) -> None:
        t = self.timeline.stamp(frame.pts, frame.time_base)
        if self._start_t is not None:
            expected = self._start_t + self._pending / self.sample_rate
            if abs(t - expected) > self.max_gap:
                self._reset_buffer()
        for out in self._resample(frame):
            samples = out.to_ndarray().reshape(-1)
            if samples.size == 0:
                continue
            if self._start_t is None:
                self._start_t = t
            self._parts.append(samples)
            self._pending += samples.size
        while self._pending >= self.chunk_samples:
            self._emit_chunk()

    def _emit_chunk(self) -> None:
        assert self._start_t is not None
        buffer = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        chunk = np.ascontiguousarray(buffer[: self.chunk_samples], dtype=np.float32)
        rest = buffer[self.chunk_samples :]
        if len(self._ring) == self._ring.maxlen:
            self.chunks_dropped += 1
        self._ring.append(AudioChunk(t=self._start_t, samples=chunk, sample_rate=self.sample_rate))
        self.chunks_made += 1
        self._start_t += self.chunk_samples / self.sample_rate
        self._parts = [rest] if rest.size else []
        self._pending = int(rest.size)
        self._notify()
