"""What a report is built from: the interview, its events, the audit log and the score.

`ReportData.interview` is the interview record (`Store.get_interview`) or, offline, a dict with ``source`` (the
media file) and ``duration`` (seconds). Keys used: ``id``, ``candidate_name``, ``interviewer_email``,
``started_at``, ``ended_at`` (ISO strings or datetimes), ``source``, ``duration``, ``analyzed_at``, ``policy``.

Event times are seconds from the start of the media (offline) or of the call (live, ``started_at``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from bot.analysis.coverage import Coverage, live_coverage, recording_coverage
from bot.analysis.events import Event
from bot.analysis.policy import Policy, PolicyError
from bot.analysis.score import Score
from bot.analysis.score import score as compute_score
from bot.common import parse_utc

# ---- data ----------------------------------------------------------------------------------------------------


@dataclass
class ReportData:
    interview: dict[str, Any]
    events: list[Event]
    audit: list[dict[str, Any]] = field(default_factory=list)  # {at, by, event_id, action, note}
    score: Score | None = None  # computed from the events and policy when not given
    policy: Policy | None = None  # else the interview's "policy" (overrides or a full dump), else defaults
    generated_at: datetime | None = None  # shown in the PDF; now when not given
    coverage: Coverage | None = None  # what was analysed; computed when not given

    def __post_init__(self) -> None:
        self.events = sorted(self.events, key=lambda e: e.start)
        if self.policy is None:
            self.policy = _policy_of(self.interview.get("policy"))
        if self.score is None:
            self.score = compute_score(self.events, self.policy)
        if self.coverage is None:
            self.coverage = (recording_coverage(self.events, self.duration) if "source" in self.interview
                             else live_coverage(self.interview, self.events, self.policy, self.duration))
        if self.coverage.mostly_unwatched and self.score.risk == "low":
            # few events because little was watched is not a low risk: say so and ask for a review
            self.score = replace(self.score, risk="medium", needs_review=True)
        if self.generated_at is None:
            self.generated_at = datetime.now(timezone.utc)

    @property
    def started_at(self) -> datetime | None:
        return parse_utc(self.interview.get("started_at"))

    @property
    def duration(self) -> float:
        """Seconds covered: call start to end, else the media's duration, else up to the last event."""
        start, end = self.started_at, parse_utc(self.interview.get("ended_at"))
        if start is not None and end is not None and end > start:
            return (end - start).total_seconds()
        d = self.interview.get("duration")
        if isinstance(d, (int, float)) and d > 0:
            return float(d)
        return max((e.end if e.end is not None else e.start for e in self.events), default=0.0)


def _policy_of(value: Any) -> Policy:
    if isinstance(value, Policy):
        return value
    try:
        return Policy.from_dict(value if isinstance(value, dict) else None)
    except PolicyError:
        return Policy()
