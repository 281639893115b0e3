"""Frames and audio in, event changes out: detectors, then rules, then evidence.

`Analyzer` is synchronous and owns its detectors; the live bot runs it in a
worker thread (one thread per call, so a model is never used by two threads at
once), `proctor analyze` runs it beside the decoder. The same code path serves
both, so what the offline tests prove holds live.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bot.analysis.detectors import ModelPaths
from bot.analysis.detectors.audio import SpectralVoiceActivity, VoiceActivity
from bot.analysis.detectors.camera import CameraHealth
from bot.analysis.detectors.faces import FaceDetector
from bot.analysis.detectors.identity import IdentityDetector
from bot.analysis.detectors.objects import ObjectDetector
from bot.analysis.events import IDENTITY_CHANGED
from bot.analysis.evidence import encode_jpeg
from bot.analysis.frames import AudioChunk, VideoFrame
from bot.analysis.observations import FaceObservation, Observation
from bot.analysis.policy import Policy
from bot.analysis.rules import EventChange, RuleEngine
from bot.analysis.sampler import SampledFrame


@dataclass
class Detectors:
    faces: FaceDetector
    objects: ObjectDetector
    camera: CameraHealth
    voice: VoiceActivity | SpectralVoiceActivity
    identity: IdentityDetector | None = None

    @classmethod
    def load(cls, policy: Policy, models: ModelPaths, *, threads: int = 1, arena: bool = True) -> Detectors:
        """Load every model once. ``threads``: the object detector's intra-op threads. 1 by default: in a live
        call's process the calls themselves fill the cores and a second inference thread only spins (68
        instead of 126 CPU ms a frame, measured with several calls running); ``proctor analyze`` runs YOLO in
        a thread of its own beside the faces (6.1x real time with 1 intra-op thread, 5.8x with 2:
        benchmarks/bench_pipeline.py). ``arena``: onnxruntime's memory arena (``cpu_session``); a live call's
        process runs without it."""
        return cls(
            faces=FaceDetector(policy, models.yunet, models.face_landmarker, arena=arena),
            objects=ObjectDetector(policy, models.yolo, threads=threads, arena=arena),
            camera=CameraHealth(policy),
            voice=(VoiceActivity(policy, models.silero_vad, arena=arena) if models.silero_vad is not None
                   else SpectralVoiceActivity(policy)),
            identity=(IdentityDetector(policy, models.face_recognition, arena=arena)
                      if models.face_recognition is not None and policy.rules.get("identity_changed")
                      and policy.rules["identity_changed"].enabled else None),
        )

    def close(self) -> None:
        self.faces.close()
        self.objects.close()
        self.voice.close()
        if self.identity is not None:
            self.identity.close()


@dataclass
class Timings:
    """Milliseconds spent per detector, for the benchmarks."""

    ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, started: float) -> None:
        self.ms[name].append((time.perf_counter() - started) * 1000.0)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in self.ms.items():
            a = np.asarray(values)
            out[name] = {"n": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                         "p95": float(np.percentile(a, 95))}
        return out


class Analyzer:
    """Runs the due detectors on each sample and the rules on what they saw."""

    def __init__(self, policy: Policy, detectors: Detectors, *, interview_id: str | None = None):
        self.policy = policy
        self.detectors = detectors
        self.rules = RuleEngine(policy, interview_id=interview_id)
        detectors.faces.reset()  # a new interview or recording: no face tracks from the one before
        if detectors.identity is not None:
            detectors.identity.reset()  # a new interview enrols its own candidate
        detectors.voice.reset()  # and is a new audio stream
        self.timings = Timings()
        self._last_frame: VideoFrame | None = None
        self.samples = 0
        self.last_t = 0.0

    def frame(self, sample: SampledFrame | VideoFrame, due: frozenset[str] | None = None, *,
              objects: Callable[[], Observation] | None = None) -> list[EventChange]:
        """The due detectors on one sample, then the rules. ``objects``: the object detector's observation of
        this frame, run elsewhere (``proctor analyze`` runs YOLO in a thread of its own); called when due."""
        if isinstance(sample, SampledFrame):
            frame, due = sample.frame, sample.due
        else:
            frame = sample
        due = due if due is not None else frozenset({"faces", "objects", "camera"})
        self._last_frame = frame
        self.samples += 1
        d = self.detectors
        observations: list[Observation] = []
        for name, detector in (("faces", d.faces), ("objects", d.objects), ("camera", d.camera)):
            if name not in due:
                continue
            if name == "objects":  # timed where it runs (``objects``)
                observations.append(objects() if objects is not None else self.objects(frame))
                continue
            started = time.perf_counter()
            observations.append(detector.process(frame))
            self.timings.add(name, started)
        face_obs = next((o for o in observations if isinstance(o, FaceObservation)), None)
        if d.identity is not None and face_obs is not None:
            d.identity.track(frame, face_obs)  # every face sample: checks follow breaks in the face track
            # not on a frame that also ran YOLO: one embedding (~150 ms) plus both would overrun a 5/s face period
            if "objects" not in due and d.identity.due(frame.t):
                started = time.perf_counter()
                checked = d.identity.process(frame, face_obs)
                if checked is not None:
                    observations.append(checked)
                    self.timings.add("identity", started)
        return self.observe(*observations)

    def objects(self, frame: VideoFrame) -> Observation:
        """The object detector alone on a frame (thread-safe with ``frame``: YOLO keeps no state)."""
        started = time.perf_counter()
        obs = self.detectors.objects.process(frame)
        self.timings.add("objects", started)
        return obs

    def audio(self, chunk: AudioChunk) -> list[EventChange]:
        started = time.perf_counter()
        obs = self.detectors.voice.process(chunk)
        self.timings.add("voice", started)
        return self.observe(obs)

    def observe(self, *observations: Observation) -> list[EventChange]:
        """Feed observations (from detectors, the page or the track readers) to the rules."""
        changes: list[EventChange] = []
        for obs in observations:
            self.last_t = max(self.last_t, obs.t)
            changes.extend(self.rules.feed(obs))
        self._attach_evidence(changes)
        return changes

    def finish(self, t: float | None = None) -> list[EventChange]:
        """Close every open event (end of media or of the call)."""
        changes = self.rules.finish(self.last_t if t is None else t)
        self._attach_evidence(changes)
        return changes

    def _attach_evidence(self, changes: list[EventChange]) -> None:
        """The frame that made a rule fire is the event's evidence; later changes keep it."""
        for change in changes:
            if change.kind == "opened" and change.event.snapshot is None and self._last_frame is not None:
                image = self._last_frame.image
                if change.event.type == IDENTITY_CHANGED and self.detectors.identity is not None:
                    # the enrolled face and the face in the seat, side by side above the frame
                    side_by_side = self.detectors.identity.evidence(image)
                    if side_by_side is not None:
                        image = side_by_side
                change.event.snapshot = encode_jpeg(image)
