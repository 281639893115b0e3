"""RuleEngine: known observation timelines in, exact events out."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import pytest

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
    Detection,
    Face,
    FaceObservation,
    IdentityObservation,
    ObjectObservation,
    Observation,
    PageObservation,
    TrackObservation,
)
from bot.analysis.policy import Policy
from bot.analysis.rules import EventChange, RuleEngine

FACE_DT = 0.2  # 5 fps
OBJ_DT = 1.0  # 1 fps
CAM_DT = 0.5  # 2 fps
CHUNK = 0.5  # audio chunk seconds


def times(start: float, end: float, dt: float) -> list[float]:
    n = int(round((end - start) / dt))
    return [round(start + i * dt, 6) for i in range(n)]


def face(t: float, count: int = 1, **kw) -> FaceObservation:
    faces = tuple(Face((10 * i, 0, 80, 80), 0.9) for i in range(count))
    return FaceObservation(t=t, count=count, faces=faces, **kw)


def faces(start: float, end: float, fn: Callable[[float], FaceObservation] | None = None) -> list[FaceObservation]:
    return [(fn or face)(t) for t in times(start, end, FACE_DT)]


def objects(start: float, end: float, fn: Callable[[float], tuple[Detection, ...]]) -> list[ObjectObservation]:
    return [ObjectObservation(t=t, detections=fn(t)) for t in times(start, end, OBJ_DT)]


def det(label: str, confidence: float) -> Detection:
    return Detection(label, confidence, (0, 0, 50, 50))


class Run:
    """Feed a timeline, keep every change and the final state of every event."""

    def __init__(self, observations: Iterable[Observation], *, end: float | None = None,
                 policy: Policy | None = None) -> None:
        self.engine = RuleEngine(policy or Policy(), interview_id="iv1")
        self.changes: list[EventChange] = []
        obs = sorted(observations, key=lambda o: o.t)
        for o in obs:
            self.changes += self.engine.feed(o)
        if end is not None:
            self.changes += self.engine.finish(end)

    def events(self, event_type: str | None = None) -> list[Event]:
        final: dict[str, Event] = {}
        for c in self.changes:
            final[c.event.id] = c.event
        return [e for e in final.values() if event_type is None or e.type == event_type]

    def kinds(self, event_type: str) -> list[str]:
        return [c.kind for c in self.changes if c.event.type == event_type]


def test_face_missing_exact_timeline_and_noisy_frame():
    # 10 s present, 7 s missing, 8 s present with one noisy missing frame at 22.0
    obs = faces(0, 10) + faces(10, 17, lambda t: face(t, 0)) + faces(17, 25, lambda t: face(t, 0 if t == 22.0 else 1))
    run = Run(obs)
    [e] = run.events()
    assert e.type == FACE_MISSING
    assert e.start == pytest.approx(10.0)
    assert e.end == pytest.approx(17.0 - FACE_DT, abs=FACE_DT)
    assert e.confidence == pytest.approx(1.0)
    opened = [c for c in run.changes if c.kind == "opened"]
    assert len(opened) == 1 and opened[0].t == pytest.approx(15.0, abs=FACE_DT)  # dwell 5 s
    closed = [c for c in run.changes if c.kind == "closed"]
    assert len(closed) == 1 and closed[0].t == pytest.approx(e.end + 1.5, abs=FACE_DT)  # after the gap
    assert run.kinds(FACE_MISSING) == ["opened", "closed"]


def test_single_noisy_samples_never_make_events():
    noisy = {3.0: dict(count=0), 5.0: dict(count=2), 7.0: dict(count=1, looking_away=True, yaw=60.0),
             9.0: dict(count=1, eyes_closed=0.95)}

    obs: list[Observation] = faces(0, 12, lambda t: face(t, **noisy.get(t, {"count": 1})))
    obs += objects(0, 12, lambda t: (det("cell phone", 0.9),) if t == 4.0 else ())
    obs += objects(0.5, 12.5, lambda t: (det("person", 0.9), det("person", 0.8)) if t == 6.5 else (det("person", 0.9),))
    obs += [CameraObservation(t, 120, 300, blocked=(t == 2.0), changed=5, frozen_for=0.0) for t in times(0, 12, CAM_DT)]
    run = Run(obs, end=12.0)
    assert run.events() == []


def test_short_gap_does_not_split_long_gap_does():
    # missing 10-20 with the face back for 1 s (< gap 1.5): one event
    short = faces(0, 10) + faces(10, 14, lambda t: face(t, 0)) + faces(14, 15) + faces(15, 20, lambda t: face(t, 0)) \
        + faces(20, 25)
    [e] = Run(short).events()
    assert (e.start, e.end) == (pytest.approx(10.0), pytest.approx(19.8))
    assert 0.8 < e.confidence < 1.0  # share of positive samples

    # the face back for 2.4 s (> gap): two events
    long = faces(0, 10) + faces(10, 16, lambda t: face(t, 0)) + faces(16, 18.4) + faces(18.4, 25, lambda t: face(t, 0)) \
        + faces(25, 30)
    a, b = Run(long).events()
    assert (a.start, a.end) == (pytest.approx(10.0), pytest.approx(15.8))
    assert (b.start, b.end) == (pytest.approx(18.4), pytest.approx(24.8))


@pytest.mark.parametrize("missing, fires", [(4.0, False), (4.8, False), (5.4, True)])
def test_face_missing_dwell(missing: float, fires: bool):
    obs = faces(0, 5) + faces(5, 5 + missing, lambda t: face(t, 0)) + faces(5 + missing, 15)
    assert bool(Run(obs).events(FACE_MISSING)) is fires


def test_policy_override_changes_behaviour():
    obs = faces(0, 5) + faces(5, 8, lambda t: face(t, 0)) + faces(8, 12)
    assert Run(obs).events() == []
    shorter = Policy.from_dict({"rules": {"face_missing": {"dwell": 2.0}}})
    [e] = Run(obs, policy=shorter).events()
    assert (e.type, e.start) == (FACE_MISSING, pytest.approx(5.0))

    disabled = Policy.from_dict({"rules": {"face_missing": {"enabled": False}}})
    assert Run(faces(0, 5) + faces(5, 20, lambda t: face(t, 0)), end=20, policy=disabled).events() == []


def test_multiple_faces_detail_and_updates_only_on_material_change():
    def fn(t: float) -> FaceObservation:
        if 4 <= t < 14:
            return face(t, 3 if 10 <= t < 11 else 2)
        return face(t)

    run = Run(faces(0, 20, fn))
    [e] = run.events()
    assert e.type == MULTIPLE_FACES
    assert e.start == pytest.approx(4.0) and e.end == pytest.approx(13.8)
    assert e.detail == {"count": 3}
    assert e.confidence == pytest.approx(0.9)  # the second face's score
    # 50 positive samples: one "updated" (2 -> 3 faces), not one per sample
    assert run.kinds(MULTIPLE_FACES) == ["opened", "updated", "closed"]
    opened = run.changes[0]
    assert opened.kind == "opened" and opened.t == pytest.approx(5.0) and opened.event.detail == {"count": 2}


def test_looking_away_with_pose_detail_and_not_while_no_face():
    def fn(t: float) -> FaceObservation:
        if 2 <= t < 8:
            return face(t, looking_away=True, yaw=50.0 if t == 5.0 else 40.0, pitch=3.0, gaze_x=0.1, gaze_y=0.0)
        if 8 <= t < 20:
            return face(t, 0)  # turned away so far that the face is lost: face_missing, not looking_away
        return face(t, yaw=2.0, pitch=1.0)

    run = Run(faces(0, 24, fn))
    [away] = run.events(LOOKING_AWAY)
    assert away.start == pytest.approx(2.0) and away.end == pytest.approx(7.8)
    assert away.detail == {"yaw": 50.0, "pitch": 3.0, "gaze_x": 0.1, "gaze_y": 0.0}
    [missing] = run.events(FACE_MISSING)
    assert missing.start == pytest.approx(8.0)


def test_eyes_closed_threshold_and_dwell():
    def fn(t: float) -> FaceObservation:
        if 2 <= t < 6:
            return face(t, eyes_closed=0.9)  # 4 s closed: > dwell 3
        if 10 <= t < 12:
            return face(t, eyes_closed=0.9)  # 2 s: a blink-ish pause, below dwell
        if 14 <= t < 20:
            return face(t, eyes_closed=0.4)  # below the threshold 0.5
        return face(t, eyes_closed=0.1)

    [e] = Run(faces(0, 22, fn)).events()
    assert e.type == EYES_CLOSED
    assert (e.start, e.end) == (pytest.approx(2.0), pytest.approx(5.8))
    assert e.detail == {"eyes_closed": 0.9}


def test_single_frame_cell_phone_at_half_confidence_does_not_fire():
    # the ID-badge trap: one frame reads "cell phone" at 0.5
    obs = objects(0, 20, lambda t: (det("cell phone", 0.5),) if t == 7.0 else (det("person", 0.9),))
    assert Run(obs, end=20).events() == []
    # a persistent hit below the rule's threshold never fires either
    weak = objects(0, 20, lambda t: (det("cell phone", 0.3),))
    assert Run(weak, end=20).events() == []
    # labels outside the rule's list are not suspicious
    dog = objects(0, 20, lambda t: (det("dog", 0.9),))
    assert Run(dog, end=20).events() == []


def test_id_badge_glint_does_not_fire_at_high_object_rate():
    # yolov5n on student.mkv reads the badge as "cell phone" in frames 31-37 only (0.26-0.52, ~0.2 s);
    # sampled at 5 fps that is two hits 0.2 s apart, every 1.73 s loop of the clip
    badge = {1.0: 0.43, 1.2: 0.52, 2.8: 0.49, 3.0: 0.37, 4.6: 0.43, 4.8: 0.52}
    obs = [ObjectObservation(t, (det("cell phone", badge[t]),) if t in badge else ()) for t in times(0, 8, 0.2)]
    policy = Policy.from_dict({"sampling": {"object_fps": 5.0}})
    assert Run(obs, end=8, policy=policy).events() == []
    # while a phone held up for a second at that rate does fire
    held = [ObjectObservation(t, (det("cell phone", 0.45),) if 2.0 <= t <= 3.0 else ()) for t in times(0, 8, 0.2)]
    [e] = Run(held, end=8, policy=policy).events()
    assert (e.start, e.end) == (pytest.approx(2.0), pytest.approx(3.0))


def at(label: str, confidence: float, box: tuple[int, int, int, int]) -> Detection:
    return Detection(label, confidence, box)


def phone_scene(phone: Callable[[float], tuple[Detection, ...]], **face_kw) -> Run:
    """10 s of a candidate (face box 0..80 px high: the chin at y=80) and objects each second; faces first."""
    return Run(faces(0, 10, lambda t: face(t, **face_kw)) + objects(0, 10, phone), end=10)


BADGE = (30, 150, 20, 40)  # hanging on the chest, well below the chin
HELD_UP = (100, 20, 30, 50)  # beside the face, its centre above the chin


def test_a_badge_facing_the_camera_is_not_a_phone():
    """ID badges read as "cell phone" at up to ~0.6 (student.mkv, learn.mkv): below PHONE_ALONE, a "phone" under
    the chin of someone facing the camera does not count, however long it is seen."""
    assert phone_scene(lambda t: (at("cell phone", 0.6, BADGE),), looking_away=False).events() == []
    # the same box while the candidate looks down at it is a phone in hand
    [e] = phone_scene(lambda t: (at("cell phone", 0.6, BADGE),), looking_away=True).events(SUSPICIOUS_OBJECT)
    assert e.detail == {"label": "cell phone", "confidence": 0.6}


def test_a_phone_held_up_or_sure_counts_facing_the_camera():
    [e] = phone_scene(lambda t: (at("cell phone", 0.45, HELD_UP),), looking_away=False).events(SUSPICIOUS_OBJECT)
    assert e.detail["confidence"] == 0.45
    [e] = phone_scene(lambda t: (at("cell phone", 0.75, BADGE),), looking_away=False).events(SUSPICIOUS_OBJECT)
    assert e.detail["confidence"] == 0.75  # PHONE_ALONE: a phone this sure counts wherever it is


def test_a_remote_looked_at_is_a_phone_read_edge_on():
    """phone_in_hand_profile.mp4: the phone held edge-on reads as "remote" (0.17-0.29) while he looks down."""
    [e] = phone_scene(lambda t: (at("remote", 0.28, BADGE),), looking_away=True).events(SUSPICIOUS_OBJECT)
    assert e.detail == {"label": "cell phone", "confidence": 0.28, "read_as": "remote"}
    assert phone_scene(lambda t: (at("remote", 0.28, BADGE),), looking_away=False).events() == []  # on a desk
    assert phone_scene(lambda t: (at("remote", 0.12, BADGE),), looking_away=True).events(SUSPICIOUS_OBJECT) == []


def test_persistent_objects_one_event_per_label():
    def fn(t: float) -> tuple[Detection, ...]:
        out = []
        if 5 <= t <= 12 and t != 8.0:  # missed once: 2 s < gap 3 s, still one event
            out.append(det("cell phone", 0.8 if t == 10.0 else 0.6))
        if 6 <= t <= 9:
            out.append(det("book", 0.5))
        return tuple(out)

    run = Run(objects(0, 20, fn))
    events = {e.detail["label"]: e for e in run.events(SUSPICIOUS_OBJECT)}
    assert set(events) == {"cell phone", "book"}
    phone, book = events["cell phone"], events["book"]
    assert (phone.start, phone.end) == (pytest.approx(5.0), pytest.approx(12.0))
    assert phone.detail == {"label": "cell phone", "confidence": 0.8}
    assert 0.5 < phone.confidence < 0.7  # 7 of 8 samples, mean score ~0.63
    assert (book.start, book.end) == (pytest.approx(6.0), pytest.approx(9.0))
    opened_at = {c.event.detail["label"]: c.t for c in run.changes if c.kind == "opened"}
    assert opened_at == {"cell phone": 6.0, "book": 7.0}  # the second sample within the window


def test_object_policy_override_labels_and_threshold():
    obs = objects(0, 10, lambda t: (det("cell phone", 0.3), det("remote", 0.6)))
    policy = Policy.from_dict({"rules": {"suspicious_object": {"labels": ["remote"], "threshold": 0.25}}})
    [e] = Run(obs, end=10, policy=policy).events()
    assert e.detail["label"] == "remote"


def test_extra_person():
    one = objects(0, 10, lambda t: (det("person", 0.9),))
    assert Run(one, end=10).events() == []
    two = objects(0, 15, lambda t: (det("person", 0.9), det("person", 0.7)) if 3 <= t <= 8 else (det("person", 0.9),))
    [e] = Run(two, end=15).events()
    assert e.type == SUSPICIOUS_OBJECT
    assert e.detail == {"label": "person", "count": 2, "faceless": 2, "confidence": 0.7}
    assert (e.start, e.end) == (pytest.approx(3.0), pytest.approx(8.0))
    # a low-confidence second "person" is not a second person
    faint = objects(0, 10, lambda t: (det("person", 0.9), det("person", 0.3)))
    assert Run(faint, end=10).events() == []


def speech(start: float, end: float, *, ratio: float = 0.8) -> list[AudioObservation]:
    return [AudioObservation(t=t, duration=CHUNK, speech=True, level_db=-25.0, speech_ratio=ratio)
            for t in times(start, end, CHUNK)]


def silence(start: float, end: float) -> list[AudioObservation]:
    return [AudioObservation(t=t, duration=CHUNK, speech=False, level_db=-60.0) for t in times(start, end, CHUNK)]


def test_background_voice_when_mouth_still():
    obs: list[Observation] = faces(0, 12, lambda t: face(t, mouth_open=0.02))
    obs += silence(0, 3) + speech(3, 7) + silence(7, 12)
    [e] = Run(obs, end=12).events()
    assert e.type == BACKGROUND_VOICE
    assert (e.start, e.end) == (pytest.approx(3.0), pytest.approx(7.0))
    assert e.detail["face_visible"] is True and e.detail["level_db"] == -25.0
    assert e.confidence == pytest.approx(0.9)


def test_background_voice_starts_where_the_speech_began_in_its_first_chunk():
    """A chunk whose speech began 0.35 s in (its ``onset``): the event starts there, not at the chunk's start."""
    obs: list[Observation] = faces(0, 12, lambda t: face(t, mouth_open=0.02))
    voice = speech(3, 7)
    voice[0] = dataclasses.replace(voice[0], onset=3.35)
    obs += silence(0, 3) + voice + silence(7, 12)
    [e] = Run(obs, end=12).events()
    assert e.type == BACKGROUND_VOICE
    assert (e.start, e.end) == (pytest.approx(3.35), pytest.approx(7.0))


def test_candidate_talking_is_not_background_voice():
    # jaw moving while speech: the candidate talks
    def moving(t: float) -> FaceObservation:
        return face(t, mouth_open=0.05 if round(t / FACE_DT) % 2 else 0.35)

    obs: list[Observation] = faces(0, 12, moving) + silence(0, 3) + speech(3, 10) + silence(10, 12)
    assert Run(obs, end=12).events() == []


def test_speech_with_no_face_counts_with_lower_confidence():
    obs: list[Observation] = faces(0, 12, lambda t: face(t, 0)) + speech(3, 7) + silence(7, 12)
    run = Run(obs, end=12, policy=Policy.from_dict({"rules": {"face_missing": {"enabled": False}}}))
    [e] = run.events()
    assert e.type == BACKGROUND_VOICE and e.detail["face_visible"] is False
    assert e.confidence == pytest.approx(0.9 * 0.6)


def test_speech_without_face_data_is_not_judged():
    # audio-only analysis: no face samples at all
    assert Run(speech(0, 10), end=10).events() == []


def test_background_voice_needs_dwell():
    obs: list[Observation] = faces(0, 10, lambda t: face(t, mouth_open=0.02))
    obs += silence(0, 3) + speech(3, 3.5) + silence(3.5, 10)  # one 0.5 s chunk
    assert Run(obs, end=10).events() == []


def test_a_still_empty_room_is_face_missing_not_frozen():
    still = [CameraObservation(t, brightness=120.0, detail=300.0, blocked=False, changed=0.0, frozen_for=t)
             for t in times(0, 12, CAM_DT)]
    empty = Run(still + faces(0, 12, lambda t: FaceObservation(t, count=0)), end=12)
    assert empty.events(CAMERA_FROZEN) == [] and len(empty.events(FACE_MISSING)) == 1
    stuck = Run(still + faces(0, 12, lambda t: face(t)), end=12)  # a stuck picture of the candidate
    assert len(stuck.events(CAMERA_FROZEN)) == 1 and stuck.events(FACE_MISSING) == []


def test_camera_blocked_and_frozen():
    def cam(t: float) -> CameraObservation:
        if 5 <= t < 10:
            return CameraObservation(t, brightness=4.0, detail=1.0, blocked=True, changed=0.0, frozen_for=t - 5)
        if 14 <= t < 24:
            return CameraObservation(t, brightness=120.0, detail=300.0, blocked=False, changed=0.0, frozen_for=t - 14)
        return CameraObservation(t, brightness=120.0, detail=300.0, blocked=False, changed=6.0, frozen_for=0.0)

    run = Run([cam(t) for t in times(0, 30, CAM_DT)])
    [blocked] = run.events(CAMERA_BLOCKED)
    assert (blocked.start, blocked.end) == (pytest.approx(5.0), pytest.approx(9.5))
    assert blocked.detail == {"brightness": 4.0}
    [frozen] = run.events(CAMERA_FROZEN)  # a black frame is blocked, not frozen
    assert frozen.start == pytest.approx(14.0)  # t - frozen_for at the first sample past the threshold
    assert frozen.end == pytest.approx(23.5)
    assert [c.t for c in run.changes if c.kind == "opened" and c.event.type == CAMERA_FROZEN] == [18.5]


def test_page_events():
    obs: list[Observation] = faces(0, 30)
    obs += [PageObservation(5.0, "tab_hidden", True), PageObservation(9.0, "tab_hidden", False)]
    obs += [PageObservation(12.0, "window_blur", True), PageObservation(12.5, "window_blur", False)]  # < dwell 1
    obs += [PageObservation(20.0, "window_blur", True), PageObservation(25.0, "window_blur", False)]
    run = Run(obs)
    [tab] = run.events(TAB_HIDDEN)
    assert (tab.start, tab.end) == (5.0, 9.0)
    [blur] = run.events(WINDOW_BLUR)
    assert (blur.start, blur.end) == (20.0, 25.0)
    assert [c.t for c in run.changes if c.kind == "opened" and c.event.type == WINDOW_BLUR] == [pytest.approx(21.0)]


def test_page_event_with_nothing_in_between_opens_and_closes():
    run = Run([PageObservation(3.0, "window_blur", True), PageObservation(8.0, "window_blur", False)])
    assert run.kinds(WINDOW_BLUR) == ["opened", "closed"]
    [e] = run.events()
    assert (e.start, e.end) == (3.0, 8.0)


def test_media_lost_per_track():
    obs = [TrackObservation(t, "video", max(0.0, t - 10) if 10 <= t < 20 else 0.0) for t in times(0, 25, 1.0)]
    obs += [TrackObservation(t + 0.5, "audio", 0.0) for t in times(0, 25, 1.0)]
    [e] = Run(obs).events()
    assert e.type == MEDIA_LOST and e.detail == {"kind": "video"}
    assert e.start == pytest.approx(10.0) and e.end == pytest.approx(19.0)


def test_finish_closes_open_events_and_drops_unfired_runs():
    obs: list[Observation] = faces(0, 5) + faces(5, 20, lambda t: face(t, 0))
    obs += objects(0, 20, lambda t: (det("laptop", 0.9),))
    obs += [PageObservation(15.0, "tab_hidden", True)]
    run = Run(obs)
    assert {e.type for e in run.events()} == {FACE_MISSING, SUSPICIOUS_OBJECT, TAB_HIDDEN}
    assert all(e.end is None for e in run.events())
    closing = run.engine.finish(20.0)
    assert {c.kind for c in closing} == {"closed"} and len(closing) == 3
    assert all(c.event.end == pytest.approx(20.0) for c in closing)
    assert run.engine.open_events() == []

    # a run that has not reached its dwell by the end is not an event
    short = Run(faces(0, 5) + faces(5, 8, lambda t: face(t, 0)), end=8.0)
    assert short.events() == []


def test_replay_is_exact():
    obs: list[Observation] = faces(0, 10) + faces(10, 17, lambda t: face(t, 0)) + faces(17, 20)
    obs += objects(0, 20, lambda t: (det("book", 0.6),) if t > 12 else ())
    a, b = Run(obs, end=20), Run(obs, end=20)
    assert [(c.kind, c.t, c.event.to_dict()) for c in a.changes] == [(c.kind, c.t, c.event.to_dict()) for c in b.changes]
    assert all(c.event.interview_id == "iv1" for c in a.changes)


def test_emitted_events_are_copies():
    run = Run(faces(0, 5) + faces(5, 20, lambda t: face(t, 0)))
    opened = run.changes[0]
    opened.event.snapshot = b"jpeg"  # the pipeline attaches evidence to the change's event
    opened.event.detail["note"] = "x"
    [closed] = run.engine.finish(20.0)
    assert opened.event.end is None
    assert closed.event.snapshot is None and "note" not in closed.event.detail
    assert closed.event.id == opened.event.id and closed.event.end == pytest.approx(20.0)


# ---- a person in the seat, one fact one event, identity ----------------------------------------------------------

FRAME = (640, 480)
SEATED = Detection("person", 0.9, (160, 60, 320, 420))  # upper body filling the picture
PASSER_BY = Detection("person", 0.9, (300, 150, 70, 250))  # full body, far away


def seen(start: float, end: float, dets: tuple[Detection, ...]) -> list[ObjectObservation]:
    return [ObjectObservation(t=t, detections=dets, frame_size=FRAME) for t in times(start, end, OBJ_DT)]


def test_a_person_in_the_seat_without_a_face_is_looking_away_not_face_missing():
    # 0-3 s face visible; 3-12 s no face but the person still in the seat (head down); 12-20 s nobody
    visible = lambda t: FaceObservation(t, 1, (Face((280, 90, 80, 90), 0.9),))
    obs = faces(0, 3, visible) + faces(3, 20, lambda t: face(t, 0))
    obs += seen(0, 12, (SEATED,)) + seen(12, 20, ())
    run = Run(obs, end=20)
    [away] = run.events(LOOKING_AWAY)
    assert away.detail.get("face_hidden") is True
    assert away.start == pytest.approx(3.0) and away.end == pytest.approx(11.8, abs=1.01)
    [missing] = run.events(FACE_MISSING)
    assert missing.start == pytest.approx(12.0, abs=1.01)  # only once the seat is empty


def test_people_seen_only_from_behind_are_not_in_the_seat():
    # a passer-by far away, and someone as large as a seated candidate who never showed a face
    for who in (PASSER_BY, SEATED):
        obs = faces(0, 12, lambda t: face(t, 0)) + seen(0, 12, (who,))
        assert [e.type for e in Run(obs, end=12).events()] == [FACE_MISSING]


def test_a_stale_object_sample_does_not_keep_the_seat():
    # objects stop arriving (detector disabled or stalled): the seat is not assumed occupied
    visible = lambda t: FaceObservation(t, 1, (Face((280, 90, 80, 90), 0.9),))
    obs = faces(0, 1, visible) + faces(1, 12, lambda t: face(t, 0)) + seen(0, 1, (SEATED,))
    assert [e.type for e in Run(obs, end=12).events()] == [FACE_MISSING]


def test_a_second_person_with_a_visible_face_is_one_event():
    left = Detection("person", 0.9, (0, 40, 300, 440))
    right = Detection("person", 0.8, (330, 40, 300, 440))
    two_faces = lambda t: FaceObservation(t, 2, (Face((100, 80, 90, 90), 0.9), Face((430, 90, 80, 80), 0.8)))
    obs = faces(0, 10, two_faces) + seen(0, 10, (left, right))
    run = Run(obs, end=10)
    assert [e.type for e in run.events()] == [MULTIPLE_FACES]
    # the same two people, the second one's face not visible: that is the person event
    one_face = lambda t: FaceObservation(t, 1, (Face((100, 80, 90, 90), 0.9),))
    obs = faces(0, 10, one_face) + seen(0, 10, (left, right))
    [e] = Run(obs, end=10).events()
    assert e.type == SUSPICIOUS_OBJECT and e.detail["label"] == "person" and e.detail["faceless"] == 1


def identity(start: float, end: float, distance: float | Callable[[float], float]) -> list[IdentityObservation]:
    fn = distance if callable(distance) else (lambda t: distance)
    return [IdentityObservation(t, fn(t), 2.0) for t in times(start, end, 2.0)]


def test_identity_changed_needs_a_different_face_over_the_dwell():
    # 0-10 s the enrolled person (0.25), 10-24 s someone else (0.62), 24-34 s the candidate again
    obs = identity(0, 34, lambda t: 0.62 if 10 <= t < 24 else 0.25)
    run = Run(obs, end=34)
    [e] = run.events(IDENTITY_CHANGED)
    assert (e.start, e.end) == (pytest.approx(10.0), pytest.approx(22.0))
    assert e.detail["distance"] == pytest.approx(0.62) and e.confidence > 0.5
    opened = next(c for c in run.changes if c.kind == "opened")
    assert opened.t == pytest.approx(14.0)  # three checks 2 s apart: fires at the dwell
    # one odd check (a blur, a hand over the face) is not an event
    assert Run(identity(0, 30, lambda t: 0.56 if t == 12 else 0.3), end=30).events() == []


def test_eyes_looking_down_are_not_closed_eyes():
    down = faces(0, 8, lambda t: face(t, eyes_closed=0.7, pitch=-28.0, looking_away=True))
    assert [e.type for e in Run(down, end=8).events()] == [LOOKING_AWAY]
    level = faces(0, 8, lambda t: face(t, eyes_closed=0.7, pitch=-5.0))
    assert [e.type for e in Run(level, end=8).events()] == [EYES_CLOSED]


def test_a_phone_over_a_hidden_face_counts():
    """Head down over the phone, the face not found, the candidate still in the seat: looking at it."""
    visible = lambda t: FaceObservation(t, 1, (Face((280, 90, 80, 90), 0.9),))
    phone = Detection("cell phone", 0.5, (300, 300, 40, 60))  # low, in front of the chest
    obs = faces(0, 3, visible) + faces(3, 10, lambda t: face(t, 0))
    obs += seen(0, 3, (SEATED,)) + seen(3, 10, (SEATED, phone))
    run = Run(obs, end=10)
    [e] = run.events(SUSPICIOUS_OBJECT)
    assert e.detail == {"label": "cell phone", "confidence": 0.5} and e.start >= 3
    assert run.events(FACE_MISSING) == [] and run.events(LOOKING_AWAY)[0].detail.get("face_hidden") is True
    # the same phone while the face shows, looking at the camera, is a badge
    obs = faces(0, 10, visible) + seen(0, 10, (SEATED, phone))
    assert Run(obs, end=10).events(SUSPICIOUS_OBJECT) == []
