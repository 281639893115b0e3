"""Frames and audio in, event changes out: detectors, then rules, then evidence.

`Analyzer` is synchronous and owns its detectors; the live bot runs it in a
worker thread (one thread per call, so a model is never used by two threads at
once), `proctor analyze` runs it beside the decoder. The same code path serves
both, so what the offline tests prove holds live.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np

from adapters.models import resolve
from bot.detectors.audio import VoiceActivity
from bot.detectors.camera import CameraHealth
from bot.detectors.faces import FaceDetector
from bot.detectors.identity import IdentityDetector
from bot.detectors.objects import ObjectDetector
from bot.events import IDENTITY_CHANGED
from bot.frames import AudioChunk, VideoFrame
from bot.media import SampledFrame
from bot.observations import FaceObservation, Observation
from bot.policy import Policy
from bot.rules import EventChange, RuleEngine
from bot.settings import Settings

SNAPSHOT_WIDTH = 640
SNAPSHOT_QUALITY = 80


@dataclass
class Detectors:
    faces: FaceDetector
    objects: ObjectDetector
    camera: CameraHealth
    voice: VoiceActivity
    identity: IdentityDetector | None = None

    @classmethod
    def load(cls, policy: Policy, settings: Settings) -> "Detectors":
        """Load every model once (ModelError names a missing or corrupt file)."""
        return cls(
            faces=FaceDetector(policy, resolve("yunet", settings),
                               resolve("face_landmarker", settings)),
            objects=ObjectDetector(policy, resolve("yolo", settings)),
            camera=CameraHealth(policy),
            voice=VoiceActivity(policy),
            identity=(IdentityDetector(policy, resolve("face_recognition", settings))
                      if policy.rules.get("identity_changed") and policy.rules["identity_changed"].enabled
                      else None),
        )

    def close(self) -> None:
        self.faces.close()
        self.objects.close()
        if self.identity is not None:
            self.identity.close()


def encode_snapshot(image: np.ndarray) -> bytes:
    """JPEG evidence, at most SNAPSHOT_WIDTH wide."""
    h, w = image.shape[:2]
    if w > SNAPSHOT_WIDTH:
        image = cv2.resize(image, (SNAPSHOT_WIDTH, round(h * SNAPSHOT_WIDTH / w)),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


@dataclass
class Timings:
    """Milliseconds spent per detector, for benchmarks and the live status line."""

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
        if detectors.identity is not None:
            detectors.identity.reset()  # a new interview enrols its own candidate
        self.timings = Timings()
        self._last_frame: VideoFrame | None = None
        self.samples = 0
        self.last_t = 0.0

    def frame(self, sample: SampledFrame | VideoFrame, due: frozenset[str] | None = None) -> list[EventChange]:
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
            if name in due:
                started = time.perf_counter()
                observations.append(detector.process(frame))
                self.timings.add(name, started)
        face_obs = next((o for o in observations if isinstance(o, FaceObservation)), None)
        # not on a frame that also ran YOLO: one embedding (~150 ms) plus both would overrun a 5/s face period
        if d.identity is not None and face_obs is not None and "objects" not in due and d.identity.due(frame.t):
            started = time.perf_counter()
            checked = d.identity.process(frame, face_obs)
            if checked is not None:
                observations.append(checked)
                self.timings.add("identity", started)
        return self.observe(*observations)

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
                    image = self.detectors.identity.evidence(image)
                    if image is None:
                        image = self._last_frame.image
                change.event.snapshot = encode_snapshot(image)
