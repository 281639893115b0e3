"""A person in the seat whose face is hidden is looking_away (face_hidden), not face_missing; an empty room
with people walking through seen from behind stays face_missing. Real media, composed (tests/scenario.py).

phone_in_hand_profile.mp4 (MANIFEST.md): frames 12-52 a man holds a phone and looks down at it; letterboxed
to 640x480 his face is found in frames 20-45 (turned, looking down) and not in 13-18 (head down over the
phone). one-by-one-person-detection.mp4: an empty room, people walk in seen only from behind.
"""
from __future__ import annotations

import pytest

from bot.analysis.offline import analyze_file
from bot.analysis.policy import Policy
from tests.support.paths import MEDIA, shared_models
from tests.support.scenario import Segment, Timeline, clip, compose

VIDEO = MEDIA / "video"
SEGMENTS = [
    Segment("at_camera", 6, clip(VIDEO / "phone_in_hand_front.mp4", slice(72, 87))),
    Segment("phone_turned", 5, clip(VIDEO / "phone_in_hand_profile.mp4", slice(20, 45)), expect={"looking_away"}),
    Segment("phone_hidden", 9, clip(VIDEO / "phone_in_hand_profile.mp4", slice(13, 19)), expect={"looking_away"}),
    Segment("empty_room", 20, clip(VIDEO / "one-by-one-person-detection.mp4", slice(0, 200)),
            expect={"face_missing"}),
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Timeline:
    return compose(tmp_path_factory.mktemp("seat") / "seat.mp4", SEGMENTS)


@pytest.fixture(scope="module")
def events(scenario):
    return analyze_file(scenario.path, models=shared_models(), policy=Policy(), progress=False).events


def during(events, kind: str, start: float, end: float):
    return [e for e in events if e.type == kind and e.start < end and (e.end or e.start) > start]


def test_head_down_over_a_phone_is_looking_away_with_the_face_hidden(scenario, events):
    print("\n" + ", ".join(f"{e.type}@{e.start:.1f}-{(e.end or 0):.1f}{e.detail}" for e in events))
    start, end = scenario.window("phone_turned")[0], scenario.window("phone_hidden")[1]
    away = during(events, "looking_away", start, end)
    assert away, "no looking_away while he looks down at the phone"
    assert any(e.detail.get("face_hidden") for e in away)
    covered = sum(min(e.end or end, end) - max(e.start, start) for e in away)
    assert covered >= 0.8 * (end - start - 3.0)  # one event over both segments, minus the dwell
    assert not during(events, "face_missing", start, end - 0.1), "he is in his seat: not face_missing"


def test_an_empty_room_stays_face_missing(scenario, events):
    start, end = scenario.window("empty_room")
    missing = during(events, "face_missing", start, end)
    assert missing and missing[0].start == pytest.approx(start, abs=2.0)
    assert sum(min(e.end or end, end) - max(e.start, start) for e in missing) >= end - start - 3.0
    # people walking through, seen from behind, are neither looking away nor an extra person
    assert not during(events, "looking_away", start + 1.5, end)
