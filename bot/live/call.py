"""One live call: the bot's peer feeding the shared pipeline.

The peer's readers keep only the newest video frame and a bounded ring of
audio chunks; this loop takes the newest frame at the policy's highest sample
rate, runs the due detectors in the call's own worker thread (never on the
event loop), and sends every event change to the signaling server, which
stores it and alerts the interviewer.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bot.analysis.detectors import ModelPaths
from bot.analysis.frames import AudioChunk, VideoFrame
from bot.analysis.observations import Observation
from bot.analysis.pipeline import Analyzer, Detectors
from bot.analysis.policy import Policy
from bot.analysis.rules import EventChange
from bot.analysis.sampler import Sampler
from bot.common import as_unix
from bot.live.peer import BotPeer

log = logging.getLogger(__name__)

TRACK_REPORT_EVERY = 0.5  # seconds between TrackObservations per track
MAX_HEIGHT = 480  # the detectors need no more (faces at 640x480; YOLO letterboxes to 640)


def video_wanted(policy: Policy) -> dict[str, int]:
    """What the candidate's browser should encode for the bot: a frame rate a little above the highest sampling
    rate (so the newest frame is never much older than a sampling instant) and at most 480 lines."""
    rate = Sampler.from_policy(policy.sampling).max_rate
    return {"maxFramerate": max(2, min(30, math.ceil(rate * 1.5))), "maxHeight": MAX_HEIGHT}


@dataclass
class SessionStats:
    frames_analysed: int = 0
    audio_chunks: int = 0
    changes_sent: int = 0
    started: float = field(default_factory=time.monotonic)
    # (change, event id, wall time the frame/chunk was taken, wall time the change was sent)
    fired: deque[tuple[str, str, float, float]] = field(default_factory=lambda: deque(maxlen=1000))

    def fps(self) -> float:
        return self.frames_analysed / max(1e-6, time.monotonic() - self.started)


class CallSession:
    """Runs the bot for one interview until `stop()`."""

    def __init__(self, interview: dict[str, Any], bot_token: str, server_url: str, models: ModelPaths, *,
                 resumed: str | None = None):
        self.interview = interview
        self.interview_id: str = interview["id"]
        self.policy = Policy.from_dict(interview.get("policy"))
        self.models = models
        self.origin = as_unix(interview.get("started_at")) or time.time()
        self.peer = BotPeer(server_url, bot_token, clock=self.clock,
                            audio_chunk=self.policy.sampling.audio_chunk, resumed=resumed,
                            video_wanted=video_wanted(self.policy))
        self.stats = SessionStats()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"detect-{self.interview_id[:8]}")
        self._analyzer: Analyzer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._track_reported = -math.inf

    def clock(self) -> float:
        """Seconds since the call started: the time base of live events."""
        return time.time() - self.origin

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        detectors = await loop.run_in_executor(self._executor, Detectors.load, self.policy, self.models)
        self._analyzer = Analyzer(self.policy, detectors, interview_id=self.interview_id)
        try:
            await self.peer.start()
        except BaseException:
            await loop.run_in_executor(self._executor, detectors.close)
            raise
        self._task = asyncio.create_task(self._run(), name=f"bot-{self.interview_id}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Close open events, send them, leave the call, free the models."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except Exception:  # a crashed or stuck loop must not stop the leaving
                log.exception("bot loop for %s did not end cleanly", self.interview_id)
                self._task.cancel()
        loop = asyncio.get_running_loop()
        if self._analyzer is not None:
            changes = await loop.run_in_executor(self._executor, self._analyzer.finish, self.clock())
            await self._send(changes, time.time())
        await self.peer.stop()
        if self._analyzer is not None:
            await loop.run_in_executor(self._executor, self._analyzer.detectors.close)
        self._executor.shutdown(wait=False)
        log.info("bot left interview %s: %d frames analysed (%.1f/s), %d audio chunks, %d event changes",
                 self.interview_id, self.stats.frames_analysed, self.stats.fps(), self.stats.audio_chunks,
                 self.stats.changes_sent)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._analyzer is not None
        sampler = Sampler.from_policy(self.policy.sampling)
        # Look for a newer frame several times per sample period, so the sampler's grid is
        # met (5/s stays 5/s); a look costs nothing when no detector is due.
        period = min(0.1, 1.0 / (4 * sampler.max_rate))
        last_t: float | None = None
        while not self._stopping.is_set():
            tick = time.monotonic()
            frame: VideoFrame | None = None
            due: frozenset[str] = frozenset()
            video = self.peer.video
            if video is not None and video.latest_t is not None and (last_t is None or video.latest_t > last_t):
                due = sampler.due(video.latest_t)
                if due:
                    frame = video.latest()  # converts the newest frame only now
                    last_t = frame.t if frame is not None else last_t
            audio = self.peer.audio.take_all() if self.peer.audio is not None else []
            others = self._other_observations()
            if frame is not None or audio or others:
                taken = time.time()
                changes = await loop.run_in_executor(self._executor, self._step, frame, due, audio, others)
                await self._send(changes, taken)
            wait = period - (time.monotonic() - tick)
            if wait > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), wait)
                except TimeoutError:
                    pass

    def _other_observations(self) -> list[Observation]:
        out: list[Observation] = list(self.peer.take_page_observations())
        now = self.clock()
        if now - self._track_reported >= TRACK_REPORT_EVERY:  # silent or not, so media_lost can end
            self._track_reported = now
            for reader in (self.peer.video, self.peer.audio):
                if reader is not None:
                    out.append(reader.observation(now))
        return out

    def _step(self, frame: VideoFrame | None, due: frozenset[str], audio: list[AudioChunk],
              others: list[Observation]) -> list[EventChange]:
        """Worker thread: the detectors and the rules for one tick, in time order."""
        a = self._analyzer
        assert a is not None
        changes: list[EventChange] = []
        if frame is not None:
            changes += a.frame(frame, due)
            self.stats.frames_analysed += 1
        for chunk in audio:
            changes += a.audio(chunk)
            self.stats.audio_chunks += 1
        if others:
            changes += a.observe(*sorted(others, key=lambda o: o.t))
        return changes

    async def _send(self, changes: list[EventChange], taken: float) -> None:
        for change in changes:
            e = change.event
            e.interview_id = self.interview_id
            await self.peer.send_event(change.kind, e.to_dict(),
                                       e.snapshot if change.kind == "opened" else None)
            self.stats.changes_sent += 1
            self.stats.fired.append((change.kind, e.id, taken, time.time()))
            if change.kind == "opened":
                log.info("interview %s: %s at %.1f s (confidence %.2f)", self.interview_id, e.type,
                         e.start, e.confidence)
