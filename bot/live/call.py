"""One live call: the bot's peer feeding the shared pipeline.

The peer's readers keep only the newest video frame and a bounded ring of
audio chunks; this loop takes the newest frame at the policy's highest sample
rate, runs the due detectors in the call's own worker thread (never on the
event loop), and sends every event change to the signaling server, which
stores it and alerts the interviewer.

When the interview's call is on another platform (its ``room``: a Janus VideoRoom,
a WHEP endpoint), the media comes from the `bot.ports.MediaSource` that the
injected ``open_media`` makes of that room, into the peer's same readers; the
peer still joins this project's signaling server to send the events.
"""
from __future__ import annotations

import asyncio
import functools
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
from bot.live.readers import Sample
from bot.ports import CallUnreachable, MediaSource, OpenMedia

log = logging.getLogger(__name__)

TRACK_REPORT_EVERY = 0.5  # seconds between TrackObservations per track
BEHIND_WINDOW = 3.0  # s over which the face sampling rate is compared with the policy's
BEHIND_RATIO = 0.9  # below this share of the face rate the call is behind: objects are deferred first
OBJECTS_AT_LEAST_EVERY = 3.0  # s: a call that is behind still looks for objects this often
SAMPLES_KEPT = 0.6  # s of picked frames the video reader keeps while a step runs (3 at 5 face samples/s)
STATE_EVERY = 2.0  # s between two bot_state heartbeats (the interviewer's page shows "gone" after 10 s without)
MAX_RELOADS = 5  # detector failures a call survives by reloading the models; past it the call's process restarts
MAX_HEIGHT = 480  # the detectors need no more (faces at 640x480; YOLO letterboxes to 640)
MAX_BITRATE = 500_000  # bit/s: VP8 at 8 frames/s of 640x480 (~8 KB a frame); unbounded, a browser's estimate
# on a good network climbs to 1-2.5 Mbit/s, which the bot would only receive, decrypt and decode


def video_wanted(policy: Policy) -> dict[str, int]:
    """What the candidate's browser should encode for the bot: a frame rate a little above the highest sampling
    rate (so the newest frame is never much older than a sampling instant), at most 480 lines and 500 kbit/s."""
    rate = Sampler.from_policy(policy.sampling).max_rate
    return {"maxFramerate": max(2, min(30, math.ceil(rate * 1.5))), "maxHeight": MAX_HEIGHT,
            "maxBitrate": MAX_BITRATE}


class Pace:
    """Whether the call keeps its face sampling rate: the times of the last face samples over a window.

    When the machine cannot give a call what its policy asks, the call keeps faces and audio and defers the
    object detector (the costliest, and the one events need least often) to once every few seconds."""

    def __init__(self, face_fps: float) -> None:
        self.face_fps = face_fps
        self._faces: deque[float] = deque()
        self.started = time.monotonic()
        self.objects_deferred = 0

    def face_sampled(self, now: float) -> None:
        self._faces.append(now)
        while self._faces and self._faces[0] < now - BEHIND_WINDOW:
            self._faces.popleft()

    def rate(self, now: float) -> float:
        """Faces sampled per second over the last window."""
        return sum(1 for t in self._faces if t >= now - BEHIND_WINDOW) / BEHIND_WINDOW

    def behind(self, now: float) -> bool:
        if now - self.started < BEHIND_WINDOW * 2:  # warming up: not judged yet
            return False
        recent = sum(1 for t in self._faces if t >= now - BEHIND_WINDOW)
        return recent < BEHIND_RATIO * self.face_fps * BEHIND_WINDOW


@dataclass
class SessionStats:
    frames_analysed: int = 0
    detector_errors: int = 0
    samples: dict[str, int] = field(default_factory=dict)  # detector family -> frames it ran on
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
                 resumed: str | None = None, threads: int = 2, open_media: OpenMedia | None = None,
                 arena: bool = True):
        self.interview = interview
        self.interview_id: str = interview["id"]
        self.policy = Policy.from_dict(interview.get("policy"))
        self.models = models
        self.threads = threads  # inference threads of this call's detectors (1 in a call process of the fleet)
        self.arena = arena  # onnxruntime's memory arena (off in a call process of the fleet, which trims its heap)
        self.origin = as_unix(interview.get("started_at")) or time.time()
        self.room: dict[str, Any] | None = interview.get("room")  # stored form, secrets included
        if self.room is not None and open_media is None:
            raise ValueError("the call is on another platform and no way to open its media was given")
        self.open_media = open_media
        self.media: MediaSource | None = None
        self.peer = BotPeer(server_url, bot_token, clock=self.clock,
                            audio_chunk=self.policy.sampling.audio_chunk, resumed=resumed,
                            video_wanted=video_wanted(self.policy), receive=self.room is None)
        self.stats = SessionStats()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"detect-{self.interview_id[:8]}")
        self._analyzer: Analyzer | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._track_reported = -math.inf
        self.pace = Pace(self.policy.sampling.face_fps)
        self._objects_at = -math.inf  # monotonic time objects last ran
        self._joined_at = 0.0  # call time the bot joined
        self._state_at = -math.inf  # monotonic time of the last bot_state

    def clock(self) -> float:
        """Seconds since the call started: the time base of live events."""
        return time.time() - self.origin

    def figures(self) -> dict[str, Any]:
        """This call's counters, plain values (a call process sends them with its heartbeat)."""
        st = self.stats
        video, audio = self.peer.video, self.peer.audio
        return {"since": round(time.time() - (time.monotonic() - st.started), 3), "frames": st.frames_analysed,
                "fps": round(st.fps(), 2), "samples": dict(st.samples), "audio_chunks": st.audio_chunks,
                "audio_dropped": audio.chunks_dropped if audio is not None else 0,
                "frames_received": video.frames_received if video is not None else 0,
                "samples_dropped": video.samples_dropped if video is not None else 0,
                "changes": st.changes_sent, "detector_errors": st.detector_errors,
                "behind": self.pace.behind(time.monotonic()), "objects_deferred": self.pace.objects_deferred,
                "at": round(time.time(), 3)}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        detectors = await loop.run_in_executor(
            self._executor, functools.partial(Detectors.load, self.policy, self.models, threads=self.threads,
                                              arena=self.arena))
        self._analyzer = Analyzer(self.policy, detectors, interview_id=self.interview_id)
        try:
            await self.peer.start()
            if self.room is not None:
                await self._join_media()
        except BaseException:
            if self.peer.online:
                await self.peer.stop()
            await loop.run_in_executor(self._executor, detectors.close)
            self._executor.shutdown(wait=False)
            raise
        self._task = asyncio.create_task(self._run(), name=f"bot-{self.interview_id}")
        self._joined_at = self.clock()

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
        if self.media is not None:
            await self.media.leave()
        await self.peer.stop()
        if self._analyzer is not None:
            await loop.run_in_executor(self._executor, self._analyzer.detectors.close)
        self._executor.shutdown(wait=False)
        log.info("bot left interview %s: %d frames analysed (%.1f/s), %d audio chunks, %d event changes",
                 self.interview_id, self.stats.frames_analysed, self.stats.fps(), self.stats.audio_chunks,
                 self.stats.changes_sent)

    async def _join_media(self) -> None:
        """Enter the call on its platform; its tracks go to the peer's readers. `CallUnreachable` if it fails."""
        assert self.room is not None and self.open_media is not None
        kind = self.room.get("kind", "external")
        self.media = self.open_media(self.room, lambda state: self.peer.say(f"Candidate's media ({kind}): {state}"))
        try:
            await self.media.join(self.peer.add_track)
        except Exception as exc:
            await self.media.leave()
            raise CallUnreachable(f"the bot could not join the {kind} call: {exc}") from exc

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._analyzer is not None
        sampler = Sampler.from_policy(self.policy.sampling)
        # The video reader picks the frames a detector is due on as they arrive and keeps a few, so a step
        # that outlasts a sample period (an identity check, a busy machine) delays samples instead of losing
        # them; the loop looks for work several times per sample period.
        period = min(0.1, 1.0 / (4 * sampler.max_rate))
        depth = max(1, round(SAMPLES_KEPT * sampler.max_rate))
        sampled = None
        while not self._stopping.is_set():
            tick = time.monotonic()
            sample = None
            due: frozenset[str] = frozenset()
            video = self.peer.video
            if video is not None:
                if video is not sampled:
                    video.sample(sampler.due, depth)
                    sampled = video
                sample = video.take_sample()
                if sample is not None:
                    due = self._paced(sample.due)
            audio = self.peer.audio.take_all() if self.peer.audio is not None else []
            if tick - self._state_at >= STATE_EVERY:
                self._state_at = tick
                await self.peer.send_state(self.state())
            others = self._other_observations()
            if sample is not None or audio or others:
                taken = sample.arrived if sample is not None else time.time()
                changes = await loop.run_in_executor(self._executor, self._sampled_step, sample, due, audio, others)
                await self._send(changes, taken)
            if video is not None and video.samples_queued:
                continue  # more samples waiting: no pause
            wait = period - (time.monotonic() - tick)
            if wait > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), wait)
                except TimeoutError:
                    pass

    def state(self) -> dict[str, Any]:
        """The bot's heartbeat: analysing or waiting for media, its face rate, what it analysed since it joined."""
        video = self.peer.video
        media = video is not None and video.frames_received > 0 and video.silent_for() < 2.0
        return {"state": "analysing" if media else "no_media",
                "face_fps": round(self.pace.rate(time.monotonic()), 2),
                "samples": {k: self.stats.samples.get(k, 0) for k in ("faces", "objects", "camera")},
                "audio_seconds": round(self.stats.audio_chunks * self.policy.sampling.audio_chunk, 1),
                "since": round(self._joined_at, 3)}

    def _paced(self, due: frozenset[str]) -> frozenset[str]:
        """Faces first: a call that is behind its face rate runs objects only every few seconds."""
        now = time.monotonic()
        if "faces" in due:
            self.pace.face_sampled(now)
        if "objects" in due:
            if self.pace.behind(now) and now - self._objects_at < OBJECTS_AT_LEAST_EVERY:
                self.pace.objects_deferred += 1
                return due - {"objects"}
            self._objects_at = now
        return due

    def _other_observations(self) -> list[Observation]:
        out: list[Observation] = list(self.peer.take_page_observations())
        now = self.clock()
        if now - self._track_reported >= TRACK_REPORT_EVERY:  # silent or not, so media_lost can end
            self._track_reported = now
            for reader in (self.peer.video, self.peer.audio):
                if reader is not None:
                    out.append(reader.observation(now))
        return out

    def _sampled_step(self, sample: Sample | None, due: frozenset[str], audio: list[AudioChunk],
                      others: list[Observation]) -> list[EventChange]:
        """Worker thread: the picked frame converted to BGR here, not on the event loop, then `_step`."""
        video = self.peer.video
        frame = video.convert(sample) if sample is not None and due and video is not None else None
        return self._step(frame, due, audio, others)

    def _step(self, frame: VideoFrame | None, due: frozenset[str], audio: list[AudioChunk],
              others: list[Observation]) -> list[EventChange]:
        """Worker thread: the detectors and the rules for one tick, in time order."""
        a = self._analyzer
        assert a is not None
        changes: list[EventChange] = []
        if frame is not None:
            changes += self._guarded("the video detectors", frame.t, a.frame, frame, due)
            self.stats.frames_analysed += 1
            for name in due:
                self.stats.samples[name] = self.stats.samples.get(name, 0) + 1
        for chunk in audio:
            changes += self._guarded("the voice detector", chunk.t, a.audio, chunk)
            self.stats.audio_chunks += 1
        if others:
            changes += a.observe(*sorted(others, key=lambda o: o.t))
        return changes

    def _guarded(self, what: str, t: float, fn: Any, *args: Any) -> list[EventChange]:
        """Worker thread: one detector step; a failure is logged with the interview and the media time, the
        models are reloaded and the call goes on (the rules keep their state). After ``MAX_RELOADS`` failures
        the error is raised: the analysis loop ends and, in the fleet, the call's process is restarted."""
        try:
            changes: list[EventChange] = fn(*args)
            return changes
        except Exception:
            self.stats.detector_errors += 1
            log.exception("interview %s: %s failed at %.1f s (failure %d); reloading the models",
                          self.interview_id, what, t, self.stats.detector_errors)
            if self.stats.detector_errors > MAX_RELOADS:
                raise
            self._reload()
            return []

    def _reload(self) -> None:
        a = self._analyzer
        assert a is not None
        try:
            a.detectors.close()
        except Exception:
            log.exception("interview %s: closing the failed detectors failed too", self.interview_id)
        a.detectors = Detectors.load(self.policy, self.models, threads=self.threads, arena=self.arena)

    async def _send(self, changes: list[EventChange], taken: float) -> None:
        for change in changes:
            e = change.event
            e.interview_id = self.interview_id
            await self.peer.send_event(change.kind, e.to_dict(),
                                       e.snapshot if change.kind == "opened" else None, taken_at=taken)
            self.stats.changes_sent += 1
            self.stats.fired.append((change.kind, e.id, taken, time.time()))
            if change.kind == "opened":
                log.info("interview %s: %s at %.1f s (confidence %.2f)", self.interview_id, e.type,
                         e.start, e.confidence)
