"""Rules: turn streams of observations into events.

`RuleEngine.feed(observation)` takes the observations of every detector, interleaved in time order, and returns
what changed: an event ``opened`` (its rule fired), ``updated`` (its detail or confidence changed materially) or
``closed``. `finish(t)` closes whatever is still open. The engine is pure: it reads only the observations'
timestamps (never the wall clock) and does no I/O, so a replay gives the same events, with the same ids.

How a condition becomes an event (every rule, with its `Rule` from the policy):

- A *run* starts at the first positive sample; the event's ``start`` is that sample's time.
- The run fires (``opened``) at a positive sample once it has lasted ``dwell`` seconds, at least ``min_samples``
  positive samples fall within the last ``window`` seconds, and at least ``min_share`` of the run's samples were
  positive. So a single noisy sample never makes an event.
- A negative sample ends the run only once the condition has been absent for ``gap`` seconds (hysteresis); the
  event's ``end`` is then the time of the last positive sample. Shorter absences do not split an event.
- Missing data (no samples at all) neither starts nor ends anything.
- ``confidence`` = share of positive samples in the run x mean strength of its positive samples (a detector
  score where there is one, else 1).

Rule by rule:

- face_missing: ``count == 0`` and nobody in the seat: the latest object sample (at most ``SEAT_TTL`` s old) did
  not find the candidate's body, followed since their face was last seen
  (`bot.analysis.detectors.person.track_seat`). A person in the seat whose face cannot be seen (head
  down over a phone, turned away) is looking_away with ``detail.face_hidden``, not face_missing.
- multiple_faces: ``count >= 2``; strength: the second face's score; detail: max ``count``.
- identity_changed: an identity check (``IdentityObservation``) whose ``distance > threshold`` (the mean of
  the face track's recent checks); strength grows with the distance past the threshold; detail: the largest
  distance and the largest single check. Only checks count: a face that is turned,
  hidden or one of several is not checked, so it neither starts nor ends the event.
- eyes_closed is not judged while the head is tilted down (pitch < -``LOOKING_DOWN`` x the pitch threshold):
  lowered eyelids over a phone or a desk look closed (phone_in_hand_front.mp4).
- looking_away / eyes_closed: the detector's ``looking_away`` flag / ``eyes_closed > threshold``. With no face in
  the frame they are false (face_missing covers that), so an event does not outlive the face.
- suspicious_object: one run per label in ``rule.labels`` (``"person"`` excepted: extra_person owns it);
  positive when the label's best detection has ``confidence >= threshold``; detail: label, best confidence.
  A "cell phone" below ``PHONE_ALONE`` counts only when held up (above the chin) or looked at (the candidate
  looks away or hides the face while seated): an ID badge reads as a phone, and hangs below the chin of
  someone facing the camera. While the candidate looks away, a "remote" (``detection.phone_like``) is a
  phone read edge-on (detail ``read_as``).
- extra_person: two or more ``"person"`` detections at ``confidence >= threshold`` and more of them than have a
  visible face (a face box of the latest face sample, at most ``FACE_TTL`` s old, inside the person's box): a
  second person whose face is visible is multiple_faces, one fact, one event. Reported as a
  ``suspicious_object`` event with detail label ``"person"``, the max count and how many had no face.
- background_voice: an audio chunk with speech (and ``speech_ratio >= threshold`` when the detector reports a
  ratio) is judged against the face samples over the chunk's span (plus one face-sample period either side):

  * the candidate's mouth moves (range of ``mouth_open`` >= ``detection.mouth_moving``; with a single sample,
    its level) -> the candidate is talking: negative;
  * the mouth is still -> positive;
  * face samples exist but none shows a face -> positive with lower confidence (x ``NO_FACE_FACTOR``): someone
    speaks and no one is on camera, which the reviewer should see, but it may be the candidate off-screen;
  * no face samples at all (audio-only analysis) or a face without mouth data -> not judged.

  A chunk is judged once the engine's clock has passed its end plus that margin, so the face samples over it
  have arrived. A chunk spans ``[t, t + duration]``, so dwell counts seconds of speech; the chunk that opens a
  run starts it at its ``onset`` (the first speech window, when the detector reports one), not at its own
  start: speech that begins late in a 0.5 s chunk does not date the event up to 0.5 s early.
- camera_blocked: ``blocked``; camera_frozen: ``frozen_for > threshold`` while not blocked and the room is
  not empty (the latest face sample, within ``FACE_TTL``, shows no face and no one is in the seat: that fact is
  face_missing, and a still empty room through a video codec at a low bitrate is as unchanging as a stuck
  feed), ``start = t - frozen_for``. A stuck feed showing the candidate, the case this rule is for, still fires.
- tab_hidden / window_blur: edges from the page; opens once ``active`` has lasted ``dwell``, closes when inactive.
- media_lost: per track kind, ``silent_for > threshold``, ``start = t - silent_for``.

A rule with ``enabled: false`` (or missing from the policy) is not evaluated.
"""
from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from bot.analysis.detectors.person import faceless, people, track_seat
from bot.analysis.events import (
    BACKGROUND_VOICE,
    CAMERA_BLOCKED,
    CAMERA_FROZEN,
    EYES_CLOSED,
    FACE_MISSING,
    IDENTITY_CHANGED,
    LOOKING_AWAY,
    MEDIA_LOST,
    MULTIPLE_FACES,
    SUSPICIOUS_OBJECT,
    TAB_HIDDEN,
    WINDOW_BLUR,
    Event,
)
from bot.analysis.observations import (
    AudioObservation,
    CameraObservation,
    FaceObservation,
    IdentityObservation,
    ObjectObservation,
    Observation,
    PageObservation,
    TrackObservation,
)
from bot.analysis.policy import Policy, Rule

ChangeKind = Literal["opened", "updated", "closed"]

EPS = 1e-6
NO_FACE_FACTOR = 0.6  # background voice with no face on camera: lower confidence
CONFIDENCE_STEP = 0.1  # a confidence change this large is worth an "updated"
SEAT_TTL = 1.6  # s an object sample's "person in the seat" holds for the face samples after it (objects: 1/s)
LOOKING_DOWN = 0.8  # pitch below -this x detection.pitch_threshold: eyes_closed is not judged
FACE_TTL = 0.5  # s a face sample's boxes hold for the object samples after it
PHONE_ALONE = 0.7  # a "cell phone" this sure counts by itself; below it, only held up or looked at (_phone)
_ID_NAMESPACE = uuid.UUID("6f1c4a52-8d0e-4c1e-9a57-2f0b7c1d9e31")

Detail = dict[str, Any]
Merge = Callable[[Detail, Detail], Detail]


@dataclass(frozen=True, slots=True)
class EventChange:
    kind: ChangeKind
    event: Event  # a copy: later changes do not alter it
    t: float  # time of the observation that caused the change (when the rule fired, for latency and replay)


def event_id(interview_id: str | None, event_type: str, key: str, start: float) -> str:
    """Deterministic id, so a replay (or a restarted bot) upserts the same event instead of adding one."""
    return uuid.uuid5(_ID_NAMESPACE, f"{interview_id or ''}|{event_type}|{key}|{start:.3f}").hex


# ---- detail merging -------------------------------------------------------------------------------------------

def _keep_first(old: Detail, new: Detail) -> Detail:
    return {**new, **old}


def _merge_extremes(max_keys: tuple[str, ...] = (), min_keys: tuple[str, ...] = ()) -> Merge:
    """Keep the largest value of ``max_keys``, the smallest of ``min_keys``, the first value of anything else."""

    def merge(old: Detail, new: Detail) -> Detail:
        out = {**new, **old}
        for k in max_keys:
            vals = [v for v in (old.get(k), new.get(k)) if v is not None]
            if vals:
                out[k] = max(vals)
        for k in min_keys:
            vals = [v for v in (old.get(k), new.get(k)) if v is not None]
            if vals:
                out[k] = min(vals)
        return out

    return merge


def _material(old: Detail, new: Detail) -> bool:
    """True when ``new`` differs from ``old`` enough to tell the interviewer again."""
    if old.keys() != new.keys():
        return True
    for k, a in old.items():
        b = new[k]
        if isinstance(a, float) or isinstance(b, float):
            if a is None or b is None:
                return True
            if abs(float(b) - float(a)) >= max(0.1, 0.2 * abs(float(a))):
                return True
        elif a != b:
            return True
    return False


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


# ---- one condition over time ---------------------------------------------------------------------------------

class _Run:
    """One rule for one key (e.g. suspicious_object for "cell phone"): idle -> pending run -> open event."""

    def __init__(self, rule: Rule, event_type: str, key: str, interview_id: str | None, merge: Merge) -> None:
        self.rule = rule
        self.event_type = event_type
        self.key = key
        self.interview_id = interview_id
        self.merge = merge
        self._reset()

    def _reset(self) -> None:
        self.start: float | None = None
        self.last_pos = 0.0  # end time of the last positive sample
        self.recent: deque[float] = deque()  # times of positive samples within the window
        self.n_pos = 0
        self.n_seen = 0  # samples from the start up to the last positive one
        self.n_tail = 0  # negative samples since the last positive one
        self.strength_sum = 0.0
        self.detail: Detail = {}
        self.event: Event | None = None
        self.sent_confidence = 0.0
        self.sent_detail: Detail = {}

    @property
    def active(self) -> bool:
        return self.start is not None

    def confidence(self) -> float:
        if self.n_pos == 0:
            return 0.0
        share = self.n_pos / max(1, self.n_seen)
        strength = self.strength_sum / self.n_pos
        return round(min(1.0, max(0.0, share * strength)), 3)

    def positive(self, t0: float, t1: float, *, cause: float, strength: float = 1.0,
                 detail: Detail | None = None, start: float | None = None) -> list[EventChange]:
        r = self.rule
        if self.start is None:
            self.start = t0 if start is None else min(start, t0)
        self.last_pos = max(self.last_pos, t1)
        self.recent.append(t1)
        while self.recent and self.recent[0] < t1 - r.window - EPS:
            self.recent.popleft()
        self.n_pos += 1
        self.n_seen += self.n_tail + 1
        self.n_tail = 0
        self.strength_sum += min(1.0, max(0.0, strength))
        self.detail = self.merge(self.detail, detail or {})

        if self.event is None:
            share = self.n_pos / self.n_seen
            if (self.last_pos - self.start >= r.dwell - EPS and len(self.recent) >= r.min_samples
                    and share >= r.min_share - EPS):
                return [self._open(cause)]
            return []
        conf = self.confidence()
        if abs(conf - self.sent_confidence) >= CONFIDENCE_STEP - EPS or _material(self.sent_detail, self.detail):
            self.event.confidence = conf
            self.event.detail = dict(self.detail)
            self._sent()
            return [EventChange("updated", _copy(self.event), cause)]
        return []

    def negative(self, t1: float, *, cause: float) -> list[EventChange]:
        if self.start is None:
            return []
        self.n_tail += 1
        if t1 - self.last_pos >= self.rule.gap - EPS:
            return self.close(self.last_pos, cause=cause)
        return []

    def close(self, end: float, *, cause: float) -> list[EventChange]:
        out: list[EventChange] = []
        if self.event is not None:
            self.event.end = max(self.event.start, end)
            self.event.confidence = self.confidence()
            self.event.detail = dict(self.detail)
            out.append(EventChange("closed", _copy(self.event), cause))
        self._reset()
        return out

    def finish(self, t: float) -> list[EventChange]:
        """Close at ``t`` if the condition held at the last sample, else at its last positive sample."""
        end = max(t, self.last_pos) if self.n_tail == 0 else self.last_pos
        return self.close(end, cause=t)

    def _open(self, cause: float) -> EventChange:
        assert self.start is not None
        self.event = Event(
            type=self.event_type,
            start=round(self.start, 3),
            end=None,
            confidence=self.confidence(),
            detail=dict(self.detail),
            id=event_id(self.interview_id, self.event_type, self.key, self.start),
            interview_id=self.interview_id,
        )
        self._sent()
        return EventChange("opened", _copy(self.event), cause)

    def _sent(self) -> None:
        assert self.event is not None
        self.sent_confidence = self.event.confidence
        self.sent_detail = dict(self.event.detail)


class _PageState:
    """tab_hidden / window_blur: edges reported by the candidate's page."""

    def __init__(self, rule: Rule, event_type: str, interview_id: str | None) -> None:
        self.rule = rule
        self.event_type = event_type
        self.interview_id = interview_id
        self.since: float | None = None
        self.event: Event | None = None

    def tick(self, now: float) -> list[EventChange]:
        if self.since is not None and self.event is None and now - self.since >= self.rule.dwell - EPS:
            self.event = Event(type=self.event_type, start=round(self.since, 3), end=None, confidence=1.0,
                               id=event_id(self.interview_id, self.event_type, "", self.since),
                               interview_id=self.interview_id)
            return [EventChange("opened", _copy(self.event), now)]
        return []

    def observe(self, t: float, active: bool) -> list[EventChange]:
        if active:
            if self.since is None:
                self.since = t
            return self.tick(t)
        if self.since is None:
            return []
        out = self.tick(t)  # long enough but nothing ticked in between: open, then close
        return out + self.close(t, cause=t)

    def close(self, end: float, *, cause: float) -> list[EventChange]:
        out: list[EventChange] = []
        if self.event is not None:
            self.event.end = max(self.event.start, end)
            out.append(EventChange("closed", _copy(self.event), cause))
        self.since = None
        self.event = None
        return out


def _copy(e: Event) -> Event:
    return replace(e, detail=dict(e.detail))


# ---- the engine ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _FaceSample:
    t: float
    count: int
    mouth_open: float | None


@dataclass(frozen=True, slots=True)
class _LastFace:
    """What the latest face sample said that object samples use: the face boxes (largest first) and the
    pictures' boxes (faces of the person boxes), and whether the candidate looked away."""

    t: float = -math.inf
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    pictures: tuple[tuple[int, int, int, int], ...] = ()
    away: bool = False

    @property
    def chin(self) -> int | None:
        """The bottom of the candidate's (largest) face box."""
        return self.boxes[0][1] + self.boxes[0][3] if self.boxes else None


class RuleEngine:
    """Observations in, event changes out. One engine per interview (or analysed file)."""

    def __init__(self, policy: Policy, *, interview_id: str | None = None) -> None:
        self.policy = policy
        self.interview_id = interview_id
        self.clock = -math.inf  # latest observation time seen
        self._runs: dict[tuple[str, str], _Run] = {}
        self._pages: dict[str, _PageState] = {}
        self._faces: deque[_FaceSample] = deque()
        self._audio: deque[AudioObservation] = deque()  # chunks waiting for the face samples over them
        self._seat: tuple | None = None  # the seat occupant's person box at the latest object sample
        self._objects_at = -math.inf  # time of the latest object sample
        # latest face sample: time, the boxes of its faces, of the faces in pictures
        self._last_face = _LastFace()
        fps = max(policy.sampling.face_fps, 0.1)
        self._margin = max(0.25, 1.0 / fps)

    # -- public --

    def feed(self, obs: Observation) -> list[EventChange]:
        self.clock = max(self.clock, obs.t)
        out: list[EventChange] = []
        for page in self._pages.values():
            out += page.tick(self.clock)
        if isinstance(obs, FaceObservation):
            out += self._face(obs)
        elif isinstance(obs, IdentityObservation):
            out += self._identity(obs)
        elif isinstance(obs, ObjectObservation):
            out += self._objects(obs)
        elif isinstance(obs, CameraObservation):
            out += self._camera(obs)
        elif isinstance(obs, AudioObservation):
            self._audio.append(obs)
        elif isinstance(obs, PageObservation):
            out += self._page(obs)
        elif isinstance(obs, TrackObservation):
            out += self._track(obs)
        else:
            raise TypeError(f"not an observation: {type(obs).__name__}")
        while self._audio and self._audio[0].t + self._audio[0].duration + self._margin <= self.clock + EPS:
            out += self._voice(self._audio.popleft())
        return out

    def finish(self, t: float) -> list[EventChange]:
        """End of the media or call at ``t``: judge pending audio, close every open event."""
        self.clock = max(self.clock, t)
        out: list[EventChange] = []
        while self._audio:
            out += self._voice(self._audio.popleft())
        for page in self._pages.values():
            out += page.tick(t)
            out += page.close(t, cause=t)
        for run in self._runs.values():
            if run.active:
                out += run.finish(t)
        self._faces.clear()
        self._last_face = _LastFace()
        return out

    def open_events(self) -> list[Event]:
        """Copies of the events open right now."""
        events = [r.event for r in self._runs.values() if r.event is not None]
        events += [p.event for p in self._pages.values() if p.event is not None]
        return [_copy(e) for e in events]

    # -- helpers --

    def _rule(self, name: str) -> Rule | None:
        rule = self.policy.rules.get(name)
        return rule if rule is not None and rule.enabled else None

    def _run(self, rule_name: str, event_type: str, key: str = "", merge: Merge = _keep_first) -> _Run | None:
        rule = self._rule(rule_name)
        if rule is None:
            return None
        run = self._runs.get((rule_name, key))
        if run is None:
            run = self._runs[(rule_name, key)] = _Run(rule, event_type, key, self.interview_id, merge)
        return run

    def _sample(self, run: _Run | None, t0: float, t1: float, positive: bool | None, *, cause: float,
                strength: float = 1.0, detail: Detail | None = None,
                start: float | None = None) -> list[EventChange]:
        if run is None or positive is None:
            return []
        if positive:
            return run.positive(t0, t1, cause=cause, strength=strength, detail=detail, start=start)
        return run.negative(t1, cause=cause)

    # -- faces --

    def _seated(self, t: float) -> bool:
        """Someone is in the candidate's seat by the latest object sample (whether or not a face shows)."""
        return self._seat is not None and t - self._objects_at <= SEAT_TTL + EPS

    def _face(self, o: FaceObservation) -> list[EventChange]:
        self._faces.append(_FaceSample(o.t, o.count, o.mouth_open))
        keep = max(10.0, 4 * self._margin)
        while self._faces and self._faces[0].t < o.t - keep:
            self._faces.popleft()

        t = o.t
        seated = self._seated(t)
        out = self._sample(self._run("face_missing", FACE_MISSING), t, t, o.count == 0 and not seated, cause=t)

        scores = sorted((f.score for f in o.faces), reverse=True)
        out += self._sample(
            self._run("multiple_faces", MULTIPLE_FACES, merge=_merge_extremes(max_keys=("count",))),
            t, t, o.count >= 2, cause=t,
            strength=scores[1] if len(scores) >= 2 else 1.0, detail={"count": o.count})

        away: bool = (o.count >= 1 and o.looking_away) or (o.count == 0 and seated)
        self._last_face = _LastFace(t, tuple(f.box for f in o.faces), tuple(f.box for f in o.pictures), away)
        detail = {"yaw": _r(o.yaw, 1), "pitch": _r(o.pitch, 1), "gaze_x": _r(o.gaze_x), "gaze_y": _r(o.gaze_y)}
        if o.count == 0 and seated:
            detail["face_hidden"] = True
        out += self._sample(
            self._run("looking_away", LOOKING_AWAY, merge=self._merge_away), t, t, away, cause=t, detail=detail)

        rule = self._rule("eyes_closed")
        closed: bool | None = False
        if o.count >= 1:
            closed = None if o.eyes_closed is None or rule is None else o.eyes_closed > rule.threshold
            if o.pitch is not None and o.pitch < -LOOKING_DOWN * self.policy.detection.pitch_threshold:
                closed = None  # eyelids of someone looking down look closed: looking_away tells it, not this
        out += self._sample(
            self._run("eyes_closed", EYES_CLOSED, merge=_merge_extremes(max_keys=("eyes_closed",))),
            t, t, closed, cause=t, strength=o.eyes_closed or 0.0, detail={"eyes_closed": _r(o.eyes_closed)})
        return out

    def _identity(self, o: IdentityObservation) -> list[EventChange]:
        rule = self._rule("identity_changed")
        if rule is None:
            return []
        other = o.distance > rule.threshold
        strength = min(1.0, 0.5 + (o.distance - rule.threshold) / 0.2) if other else 0.0
        return self._sample(
            self._run("identity_changed", IDENTITY_CHANGED, merge=_merge_extremes(max_keys=("distance", "check"))),
            o.t, o.t, other, cause=o.t, strength=strength,
            detail={"distance": _r(o.distance, 3), "check": _r(o.check, 3), "enrolled_at": _r(o.enrolled_at, 1)})

    def _pose_extremity(self, d: Detail) -> float:
        rule = self._rule("looking_away")
        yaw_thr = rule.threshold if rule is not None and rule.threshold > 0 else 30.0
        det = self.policy.detection
        parts = [0.0]
        if d.get("yaw") is not None:
            parts.append(abs(d["yaw"]) / yaw_thr)
        if d.get("pitch") is not None and det.pitch_threshold > 0:
            parts.append(abs(d["pitch"]) / det.pitch_threshold)
        for k in ("gaze_x", "gaze_y"):
            if d.get(k) is not None and det.gaze_threshold > 0:
                parts.append(abs(d[k]) / det.gaze_threshold)
        return max(parts)

    def _merge_away(self, old: Detail, new: Detail) -> Detail:
        """The most extreme pose; ``face_hidden`` once any sample of the run had the face hidden."""
        hidden = bool(old.get("face_hidden") or new.get("face_hidden"))
        out = dict(self._merge_pose({k: v for k, v in old.items() if k != "face_hidden"},
                                    {k: v for k, v in new.items() if k != "face_hidden"}))
        if hidden:
            out["face_hidden"] = True
        return out

    def _merge_pose(self, old: Detail, new: Detail) -> Detail:
        """Keep the most extreme pose of the run (the one furthest beyond its threshold)."""
        if not old or self._pose_extremity(new) > self._pose_extremity(old):
            return dict(new)
        return old

    # -- objects --

    def _objects(self, o: ObjectObservation) -> list[EventChange]:
        t = o.t
        out: list[EventChange] = []
        last = self._last_face
        recent = last.boxes if t - last.t <= FACE_TTL + EPS else ()
        pictured = last.pictures if t - last.t <= FACE_TTL + EPS else ()
        self._seat = track_seat(self._seat, o.detections, o.frame_size, recent)
        self._objects_at = t
        rule = self._rule("suspicious_object")
        if rule is not None:
            labels = dict.fromkeys(name.strip().lower() for name in rule.labels)
            labels.pop("person", None)
            for label in labels:
                detail: Detail
                if label == "cell phone":
                    positive, best, read_as = self._phone(o, rule.threshold)
                    detail = {"label": label, "confidence": _r(best, 3)}
                    if read_as != label:
                        detail["read_as"] = read_as
                else:
                    best = max((d.confidence for d in o.detections if d.label.strip().lower() == label),
                               default=0.0)
                    positive, detail = best >= rule.threshold, {"label": label, "confidence": _r(best, 3)}
                out += self._sample(
                    self._run("suspicious_object", SUSPICIOUS_OBJECT, label,
                              merge=_merge_extremes(max_keys=("confidence",))),
                    t, t, positive, cause=t, strength=best, detail=detail)

        rule = self._rule("extra_person")
        if rule is not None:
            persons = people(o.detections, rule.threshold)
            conf = sorted((d.confidence for d in persons), reverse=True)
            second = conf[1] if len(conf) >= 2 else 0.0
            hidden = faceless(persons, (*recent, *pictured))  # a person whose face is a picture is a picture
            out += self._sample(
                self._run("extra_person", SUSPICIOUS_OBJECT, "person",
                          merge=_merge_extremes(max_keys=("count", "confidence", "faceless"))),
                t, t, len(persons) >= 2 and hidden >= 1, cause=t, strength=second,
                detail={"label": "person", "count": len(persons), "faceless": hidden, "confidence": _r(second, 3)})
        return out

    def _phone(self, o: ObjectObservation, threshold: float) -> tuple[bool, float, str]:
        """Phone evidence in an object sample: (positive, confidence, label it was read as).

        A nano COCO model reads an ID badge on a lanyard as a "cell phone" at up to ~0.6 (student.mkv, learn.mkv),
        and a phone held edge-on or in profile as a "remote" (phone_in_hand_profile.mp4). So a "cell phone"
        counts by itself only from ``PHONE_ALONE``; below it, from the rule's threshold, when it is held up
        (its centre above the candidate's chin) or the candidate's attention is off the camera (the latest face
        sample, at most ``FACE_TTL`` old, is looking away, or the face is hidden while someone is in the seat):
        a badge hangs below the chin of someone who faces the camera. A label in ``detection.phone_like`` counts as
        a phone from its own floor, only while the attention is off the camera. With no face sample to judge by
        (faces not analysed), the rule's threshold alone decides, as for any label."""
        last = self._last_face
        away, chin = last.away, last.chin
        unknown = o.t - last.t > FACE_TTL + EPS  # no face sample to judge by (faces not analysed): threshold only
        positive, best, read_as = False, 0.0, "cell phone"
        like = self.policy.detection.phone_like
        for d in o.detections:
            label = d.label.strip().lower()
            if label == "cell phone":
                raised = chin is not None and d.box[1] + d.box[3] / 2 < chin
                ok = d.confidence >= PHONE_ALONE or (d.confidence >= threshold and (unknown or away or raised))
            elif label in like:
                ok = away and d.confidence >= like[label]
            else:
                continue
            if ok and (not positive or d.confidence > best):
                positive, best, read_as = True, d.confidence, label
            elif not positive and label == "cell phone":
                best = max(best, d.confidence)  # reported even when it does not count
        return positive, best, read_as

    # -- camera, tracks, page --

    def _camera(self, o: CameraObservation) -> list[EventChange]:
        t = o.t
        out = self._sample(
            self._run("camera_blocked", CAMERA_BLOCKED, merge=_merge_extremes(min_keys=("brightness",))),
            t, t, o.blocked, cause=t, detail={"brightness": _r(o.brightness, 1)})
        rule = self._rule("camera_frozen")
        if rule is not None:
            last = self._faces[-1] if self._faces else None
            empty = last is not None and t - last.t <= FACE_TTL + EPS and last.count == 0 and not self._seated(t)
            # an empty room is face_missing; a still empty room through a video codec reads as frozen too
            frozen = o.frozen_for > rule.threshold and not o.blocked and not empty
            out += self._sample(self._run("camera_frozen", CAMERA_FROZEN), t, t, frozen, cause=t,
                                start=t - o.frozen_for if frozen else None,
                                detail={"frozen_for": _r(o.frozen_for, 1)})
        return out

    def _track(self, o: TrackObservation) -> list[EventChange]:
        rule = self._rule("media_lost")
        if rule is None:
            return []
        lost = o.silent_for > rule.threshold
        return self._sample(self._run("media_lost", MEDIA_LOST, o.kind), o.t, o.t, lost, cause=o.t,
                            start=o.t - o.silent_for if lost else None, detail={"kind": o.kind})

    def _page(self, o: PageObservation) -> list[EventChange]:
        event_type = {"tab_hidden": TAB_HIDDEN, "window_blur": WINDOW_BLUR}.get(o.kind)
        rule = self._rule(o.kind)
        if event_type is None or rule is None:
            return []
        page = self._pages.get(o.kind)
        if page is None:
            page = self._pages[o.kind] = _PageState(rule, event_type, self.interview_id)
        return page.observe(o.t, o.active)

    # -- voice --

    def _voice(self, a: AudioObservation) -> list[EventChange]:
        rule = self._rule("background_voice")
        run = self._run("background_voice", BACKGROUND_VOICE,
                        merge=_merge_extremes(max_keys=("level_db", "mouth_movement", "face_visible")))
        if rule is None or run is None:
            return []
        t0, t1 = a.t, a.t + a.duration
        ratio = a.speech_ratio if a.speech_ratio > 0 else 1.0  # a detector without a ratio is trusted on `speech`
        if not a.speech or ratio < rule.threshold:
            return run.negative(t1, cause=a.t)

        faces = [f for f in self._faces if t0 - self._margin - EPS <= f.t <= t1 + self._margin + EPS]
        if not faces:
            return []  # no face data over this chunk: cannot tell who speaks
        mouths = [f.mouth_open for f in faces if f.count >= 1 and f.mouth_open is not None]
        visible = any(f.count >= 1 for f in faces)
        strength = min(1.0, 0.5 + 0.5 * ratio)
        detail: Detail = {"level_db": _r(a.level_db, 1), "face_visible": visible}
        if mouths:
            movement = max(mouths) - min(mouths) if len(mouths) >= 2 else mouths[0]
            if movement >= self.policy.detection.mouth_moving:
                return run.negative(t1, cause=a.t)  # the candidate is talking
            detail["mouth_movement"] = _r(movement, 3)
        elif visible:
            return []  # a face, but no mouth data: cannot tell
        else:
            strength *= NO_FACE_FACTOR
        # an event opened by this chunk starts where its speech began (a chunk can hold 0.5 s of silence before)
        return run.positive(a.onset if a.onset is not None else t0, t1, cause=a.t, strength=strength, detail=detail)
