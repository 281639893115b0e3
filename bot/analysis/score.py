"""Integrity score: a pure function of the events and the policy's weights.

Each event takes off ``weight[type] * confidence * (1 + per_minute * minutes it lasted)`` points from 100.
Dismissed events (``review == "dismissed"``) take off nothing; open events count with no duration. The score is
never stored as the truth: recomputing it with other weights gives the new score.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.analysis.events import EVENT_TYPES, Event
from bot.analysis.policy import Policy

Risk = Literal["low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class Score:
    value: float  # 0..100, one decimal
    risk: Risk
    needs_review: bool
    # {type: {"count": int, "total_seconds": float, "penalty": float}}, types in report order
    by_type: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "risk": self.risk, "needs_review": self.needs_review,
                "by_type": {k: dict(v) for k, v in self.by_type.items()}}


def penalty(event: Event, policy: Policy) -> float:
    """Points this event takes off the score."""
    if event.review == "dismissed":
        return 0.0
    sc = policy.scoring
    weight = sc.weights.get(event.type, 0.0)
    confidence = min(1.0, max(0.0, event.confidence))
    return weight * confidence * (1.0 + sc.per_minute * event.duration / 60.0)


def needs_attention(event: Event, policy: Policy) -> bool:
    """An unreviewed event of a high-weight type: a person should look at it."""
    return event.review is None and policy.scoring.weights.get(event.type, 0.0) >= policy.scoring.review_weight


def risk_for(value: float, policy: Policy) -> Risk:
    sc = policy.scoring
    if value < sc.high_below:
        return "high"
    if value < sc.medium_below:
        return "medium"
    return "low"


def score(events: Iterable[Event], policy: Policy) -> Score:
    events = list(events)
    rows: dict[str, dict[str, Any]] = {}
    total = 0.0
    for e in events:
        if e.review == "dismissed":
            continue
        p = penalty(e, policy)
        total += p
        row = rows.setdefault(e.type, {"count": 0, "total_seconds": 0.0, "penalty": 0.0})
        row["count"] += 1
        row["total_seconds"] += e.duration
        row["penalty"] += p
    order = {t: i for i, t in enumerate(EVENT_TYPES)}
    by_type = {
        t: {"count": r["count"], "total_seconds": round(r["total_seconds"], 1), "penalty": round(r["penalty"], 1)}
        for t, r in sorted(rows.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    }
    value = round(max(0.0, 100.0 - total), 1)
    review = value < policy.scoring.review_below or any(needs_attention(e, policy) for e in events)
    return Score(value=value, risk=risk_for(value, policy), needs_review=review, by_type=by_type)
