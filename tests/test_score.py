"""score(): a pure function of events and policy weights."""
from __future__ import annotations

import pytest

from bot.analysis.events import (
    BACKGROUND_VOICE,
    EYES_CLOSED,
    FACE_MISSING,
    LOOKING_AWAY,
    MULTIPLE_FACES,
    SUSPICIOUS_OBJECT,
    Event,
)
from bot.analysis.policy import Policy
from bot.analysis.score import Score, score


def ev(event_type: str, start: float, end: float | None, confidence: float = 1.0, review: str | None = None) -> Event:
    return Event(type=event_type, start=start, end=end, confidence=confidence, review=review)


def test_no_events_is_a_clean_score():
    s = score([], Policy())
    assert s == Score(value=100.0, risk="low", needs_review=False, by_type={})


def test_penalty_formula_and_by_type():
    events = [
        ev(LOOKING_AWAY, 10, 40, confidence=0.5),  # 4 * 0.5 * (1 + 0.5 * 0.5) = 2.5
        ev(LOOKING_AWAY, 100, 130, confidence=1.0),  # 4 * 1 * 1.25 = 5
        ev(EYES_CLOSED, 200, 380, confidence=0.8),  # 3 * 0.8 * (1 + 0.5 * 3) = 6
    ]
    s = score(events, Policy())
    assert s.value == pytest.approx(100 - 13.5)
    assert s.by_type == {
        LOOKING_AWAY: {"count": 2, "total_seconds": 60.0, "penalty": 7.5},
        EYES_CLOSED: {"count": 1, "total_seconds": 180.0, "penalty": 6.0},
    }
    assert s.risk == "low" and s.needs_review is False  # 86.5 >= 85, no high-weight event


def test_dismissed_events_count_for_nothing():
    events = [ev(MULTIPLE_FACES, 0, 60), ev(SUSPICIOUS_OBJECT, 70, 80, review="dismissed")]
    s = score(events, Policy())
    assert s.value == pytest.approx(100 - 15 * 1.5)
    assert SUSPICIOUS_OBJECT not in s.by_type
    everything_dismissed = score([ev(MULTIPLE_FACES, 0, 60, review="dismissed")], Policy())
    assert everything_dismissed.value == 100.0 and not everything_dismissed.needs_review


def test_unreviewed_high_weight_event_needs_review_until_confirmed():
    phone = ev(SUSPICIOUS_OBJECT, 5, 10, confidence=0.5)  # 12 * 0.5 * ~1.04: score ~93.7, low risk
    s = score([phone], Policy())
    assert s.risk == "low" and s.needs_review
    phone.review = "confirmed"
    assert not score([phone], Policy()).needs_review


def test_risk_bands_and_floor():
    policy = Policy()
    medium = score([ev(MULTIPLE_FACES, 0, 10, review="confirmed"), ev(FACE_MISSING, 20, 30, review="confirmed")],
                   policy)
    assert 60 <= medium.value < 85 and medium.risk == "medium" and medium.needs_review  # below review_below
    high = score([ev(BACKGROUND_VOICE, i * 100, i * 100 + 600) for i in range(10)], policy)
    assert high.value == 0.0 and high.risk == "high"


def test_changing_weights_changes_the_score():
    events = [ev(LOOKING_AWAY, 0, 60), ev(FACE_MISSING, 100, 110, confidence=0.9)]
    before = score(events, Policy())
    after = score(events, Policy.from_dict({"scoring": {"weights": {"looking_away": 20.0}, "per_minute": 0.0}}))
    assert before.value == pytest.approx(round(100 - 4 * 1.5 - 8 * 0.9 * (1 + 0.5 * 10 / 60), 1))
    assert after.value == pytest.approx(100 - 20 - 8 * 0.9)
    assert after.by_type[LOOKING_AWAY]["penalty"] == 20.0


def test_open_events_count_without_duration():
    s = score([ev(FACE_MISSING, 50, None, confidence=0.5)], Policy())
    assert s.value == 96.0 and s.by_type[FACE_MISSING] == {"count": 1, "total_seconds": 0.0, "penalty": 4.0}


def test_to_dict_is_json_ready():
    d = score([ev(LOOKING_AWAY, 0, 30)], Policy()).to_dict()
    assert set(d) == {"value", "risk", "needs_review", "by_type"}
    assert d["by_type"][LOOKING_AWAY]["count"] == 1
