"""The proctoring policy: sampling rates, detector thresholds, rule dwell times, score weights.

Defaults live here in code. A YAML or JSON file (``--policy FILE``, or the
``policy`` of an interview) overrides any subset of them, e.g.::

    sampling: {face_fps: 4}
    rules:
      looking_away: {dwell: 5}
      suspicious_object: {labels: ["cell phone", "book"]}
    scoring: {weights: {looking_away: 2}}

Unknown keys and wrong types are errors (`PolicyError`) with a message that
names the key, never silently ignored.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml


class PolicyError(ValueError):
    """A policy file or mapping that cannot be used; the message says why."""


@dataclass
class Sampling:
    face_fps: float = 5.0  # face count, head pose, gaze, eyes, mouth
    object_fps: float = 1.0  # YOLO
    camera_fps: float = 2.0  # black / covered / frozen
    audio_chunk: float = 0.5  # seconds of audio per voice-activity decision
    identity_every: float = 2.0  # seconds between two face-identity checks while the seat is unsettled
    # ...and once two checks agreed with the candidate and the face has been tracked without a break since
    identity_settled_every: float = 10.0


@dataclass
class Rule:
    enabled: bool = True
    dwell: float = 1.0  # seconds a condition must hold before it is an event
    threshold: float = 0.5  # meaning depends on the rule (see below)
    min_samples: int = 2  # least number of positive samples to fire
    window: float = 3.0  # seconds within which those samples must fall
    gap: float = 1.5  # a condition absent for less than this does not end an event
    labels: list[str] = field(default_factory=list)  # suspicious_object only
    min_share: float = 0.5  # least share of a run's samples that must be positive to fire (noise guard)


def _rules() -> dict[str, Rule]:
    return {
        # no face for > dwell seconds
        "face_missing": Rule(dwell=5.0, min_samples=3),
        # count >= 2 for >= dwell seconds
        "multiple_faces": Rule(dwell=1.0, min_samples=3),
        # the face in the seat is further than threshold (dlib face-embedding distance) from the candidate
        # enrolled in the first seconds, in >= min_samples checks (one every sampling.identity_every s)
        "identity_changed": Rule(dwell=4.0, threshold=0.44, min_samples=3, window=8.0, gap=4.0),
        # |yaw| > threshold degrees (pitch uses detection.pitch_threshold) or gaze off
        "looking_away": Rule(dwell=3.0, threshold=30.0, min_samples=3),
        # eyes-closed score > threshold for > dwell seconds
        "eyes_closed": Rule(dwell=3.0, threshold=0.5, min_samples=3),
        # a label seen with confidence >= threshold in >= min_samples samples within window, the hits
        # spanning >= dwell seconds (so a brief glint, e.g. an ID badge read as a phone for a few
        # frames, never fires, whatever the object sampling rate)
        "suspicious_object": Rule(
            dwell=0.8, threshold=0.35, min_samples=2, window=3.0, gap=3.0,
            labels=["cell phone", "book", "laptop"],
        ),
        # a second person (YOLO "person" count >= 2), like an object
        "extra_person": Rule(dwell=0.8, threshold=0.5, min_samples=2, window=3.0, gap=3.0),
        # speech while the candidate's mouth is still, for >= dwell seconds
        "background_voice": Rule(dwell=1.0, threshold=0.15, min_samples=2, window=3.0),
        # black / covered for > dwell seconds
        "camera_blocked": Rule(dwell=2.0, min_samples=3),
        # no change in the picture for > threshold seconds
        "camera_frozen": Rule(dwell=0.0, threshold=4.0, min_samples=1),
        # live only: page hidden / window blurred for >= dwell seconds
        "tab_hidden": Rule(dwell=0.0, min_samples=1),
        "window_blur": Rule(dwell=1.0, min_samples=1),
        # live only: a track that sent nothing for > threshold seconds
        "media_lost": Rule(dwell=0.0, threshold=5.0, min_samples=1),
    }


@dataclass
class Thresholds:
    """Thresholds used inside detectors (what counts as a face, a black frame...)."""

    face_min_score: float = 0.6  # YuNet score
    face_min_size: float = 0.04  # smallest face side, share of the frame's shorter side
    pitch_threshold: float = 25.0  # degrees up/down counted as looking away
    gaze_threshold: float = 0.55  # |gaze| beyond this counts as looking away
    mouth_moving: float = 0.08  # jawOpen change/level that counts as the mouth moving
    black_brightness: float = 25.0  # mean luma below this is black/covered
    flat_detail: float = 12.0  # Laplacian variance below this is a flat (covered) frame
    frozen_change: float = 0.6  # mean abs diff below this counts as "no change"
    vad_db: float = -45.0  # audio below this level is never speech
    object_min_confidence: float = 0.25  # detector-level floor (rules apply their own)
    # labels a handheld phone is read as (held edge-on, in profile: "remote" at 0.15-0.3 in
    # phone_in_hand_profile.mp4) and the confidence from which the detector keeps them; the rules count
    # one as a phone only while the candidate looks away from the camera
    phone_like: dict[str, float] = field(default_factory=lambda: {"remote": 0.15})


@dataclass
class Scoring:
    # points taken off per event, and per minute it lasted, for each type
    weights: dict[str, float] = field(default_factory=lambda: {
        "face_missing": 8.0,
        "multiple_faces": 15.0,
        "identity_changed": 15.0,
        "looking_away": 4.0,
        "eyes_closed": 3.0,
        "suspicious_object": 12.0,
        "background_voice": 10.0,
        "camera_blocked": 10.0,
        "camera_frozen": 8.0,
        "tab_hidden": 8.0,
        "window_blur": 5.0,
        "media_lost": 4.0,
    })
    per_minute: float = 0.5  # extra weight multiplier per minute an event lasted
    medium_below: float = 85.0  # score below this: medium risk
    high_below: float = 60.0  # score below this: high risk
    review_below: float = 85.0  # score below this needs human review
    review_weight: float = 10.0  # an unreviewed event of a type weighted at least this needs human review


@dataclass
class Policy:
    sampling: Sampling = field(default_factory=Sampling)
    rules: dict[str, Rule] = field(default_factory=_rules)
    detection: Thresholds = field(default_factory=Thresholds)
    scoring: Scoring = field(default_factory=Scoring)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Policy:
        policy = cls()
        if data:
            if not isinstance(data, dict):
                raise PolicyError("a policy must be a mapping")
            _merge(policy, data, "policy")
        policy.validate()
        return policy

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise PolicyError(f"cannot read policy file {p}: {e.strerror or e}") from None
        try:
            data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
            raise PolicyError(f"policy file {p} is not valid {kind}: {e}") from None
        return cls.from_dict(data or {})

    def validate(self) -> None:
        s = self.sampling
        for name in ("face_fps", "object_fps", "camera_fps"):
            v = getattr(s, name)
            if not 0 < v <= 30:
                raise PolicyError(f"sampling.{name} must be in (0, 30], got {v}")
        if not 0.1 <= s.audio_chunk <= 5:
            raise PolicyError(f"sampling.audio_chunk must be in [0.1, 5] seconds, got {s.audio_chunk}")
        if not 0.2 <= s.identity_every <= 60:
            raise PolicyError(f"sampling.identity_every must be in [0.2, 60] seconds, got {s.identity_every}")
        if not s.identity_every <= s.identity_settled_every <= 600:
            raise PolicyError("sampling.identity_settled_every must be in [identity_every, 600] seconds, "
                              f"got {s.identity_settled_every}")
        for name, r in self.rules.items():
            if r.dwell < 0 or r.window < 0 or r.gap < 0:
                raise PolicyError(f"rules.{name}: dwell, window and gap must be >= 0")
            if r.min_samples < 1:
                raise PolicyError(f"rules.{name}.min_samples must be >= 1")
            if not 0 <= r.min_share <= 1:
                raise PolicyError(f"rules.{name}.min_share must be in [0, 1], got {r.min_share}")
        for label, floor in self.detection.phone_like.items():
            if not 0 < floor <= 1:
                raise PolicyError(f"detection.phone_like.{label} must be in (0, 1], got {floor}")
        for name, w in self.scoring.weights.items():
            if w < 0:
                raise PolicyError(f"scoring.weights.{name} must be >= 0")
        sc = self.scoring
        if not 0 <= sc.high_below <= sc.medium_below <= 100:
            raise PolicyError("scoring: need 0 <= high_below <= medium_below <= 100")


def _merge(target: Any, data: dict[str, Any], where: str) -> None:
    """Overlay ``data`` onto dataclass ``target`` in place, checking keys and types."""
    known = {f.name: f for f in fields(target)}
    for key, value in data.items():
        path = f"{where}.{key}"
        if key not in known:
            raise PolicyError(f"unknown key {path} (known: {', '.join(sorted(known))})")
        current = getattr(target, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise PolicyError(f"{path} must be a mapping")
            _merge(current, value, path)
        elif key == "rules" and isinstance(current, dict):
            if not isinstance(value, dict):
                raise PolicyError(f"{path} must be a mapping")
            for rname, rdata in value.items():
                if rname not in current:
                    raise PolicyError(f"unknown rule {path}.{rname} (known: {', '.join(sorted(current))})")
                if not isinstance(rdata, dict):
                    raise PolicyError(f"{path}.{rname} must be a mapping")
                _merge(current[rname], rdata, f"{path}.{rname}")
        elif isinstance(current, dict):
            if not isinstance(value, dict):
                raise PolicyError(f"{path} must be a mapping")
            for k, v in value.items():
                if k not in current:
                    raise PolicyError(f"unknown key {path}.{k} (known: {', '.join(sorted(current))})")
                current[k] = _coerce(current[k], v, f"{path}.{k}")
        else:
            setattr(target, key, _coerce(current, value, path))


def _coerce(current: Any, value: Any, path: str) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise PolicyError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(f"{path} must be a number, got {value!r}")
        return type(current)(value) if isinstance(current, float) else int(value)
    if isinstance(current, list):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise PolicyError(f"{path} must be a list of strings")
        return list(value)
    return copy.deepcopy(value)
