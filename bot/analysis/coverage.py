"""Coverage: how much of an interview was actually analysed, and the gaps with their reason.

A report that says "no events" must also say whether anybody was watching. For a live interview the bot
reports what it analysed (its heartbeat, kept per bot instance in the interview's ``bot_coverage``: frames per
detector family and seconds of audio); the server records when the bot first arrived (``bot_first_at``) and
every gap between two bots (``bot_gaps``: a restart, a move to another worker); ``media_lost`` events are the
gaps in the candidate's media. A recording analysed offline is covered end to end (every sampled frame was
analysed), minus its media gaps.

Seconds analysed per family are frames analysed divided by the family's sampling rate (and seconds of audio).
The share is that of the faces family (the one most rules stand on), capped at 1.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.analysis.events import Event
from bot.analysis.policy import Policy

FAMILIES = ("faces", "objects", "camera", "audio")
LOW = 0.8  # below this share the report says plainly how much was analysed
MOSTLY_UNWATCHED = 0.5  # below this share the risk is never "low"

NOT_INVITED = "bot not invited yet"
NO_MEDIA = "no media from the candidate"


@dataclass(frozen=True)
class Gap:
    start: float
    end: float
    reason: str

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "seconds": round(self.seconds, 3),
                "reason": self.reason}


@dataclass(frozen=True)
class Coverage:
    call_seconds: float
    analysed: dict[str, float]  # family -> seconds analysed
    gaps: list[Gap] = field(default_factory=list)

    @property
    def share(self) -> float:
        """Share of the call the faces were analysed for (0..1); 1 for a call of no length."""
        if self.call_seconds <= 0:
            return 1.0
        return max(0.0, min(1.0, self.analysed.get("faces", 0.0) / self.call_seconds))

    @property
    def low(self) -> bool:
        return self.share < LOW

    @property
    def mostly_unwatched(self) -> bool:
        return self.share < MOSTLY_UNWATCHED

    def sentence(self) -> str:
        """One plain line for the score card."""
        pct = round(self.share * 100)
        if not self.low:
            return f"Analysed {pct}% of the call."
        return (f"Analysed only {pct}% of the call: the events below cover that part; the rest was not "
                "watched (see the gaps).")

    def to_dict(self) -> dict[str, Any]:
        return {"call_seconds": round(self.call_seconds, 3), "share": round(self.share, 4),
                "analysed_seconds": {k: round(v, 1) for k, v in self.analysed.items()},
                "gaps": [g.to_dict() for g in self.gaps]}


def _rates(policy: Policy) -> dict[str, float]:
    s = policy.sampling
    return {"faces": s.face_fps, "objects": s.object_fps, "camera": s.camera_fps}


def _media_gaps(events: Iterable[Event], until: float) -> list[Gap]:
    return [Gap(e.start, e.end if e.end is not None else until, NO_MEDIA) for e in events if e.type == "media_lost"]


def live_coverage(interview: dict[str, Any], events: list[Event], policy: Policy, call_seconds: float) -> Coverage:
    """An interview the bot joined live: what its heartbeats reported, and the gaps the server recorded."""
    rates = _rates(policy)
    analysed = dict.fromkeys(FAMILIES, 0.0)
    for counters in (interview.get("bot_coverage") or {}).values():
        if not isinstance(counters, dict):
            continue
        samples = counters.get("samples") or {}
        for name, rate in rates.items():
            n = samples.get(name, 0)
            if isinstance(n, (int, float)) and n > 0 and rate > 0:
                analysed[name] += n / rate
        audio = counters.get("audio_seconds", 0)
        if isinstance(audio, (int, float)) and audio > 0:
            analysed["audio"] += float(audio)
    gaps: list[Gap] = []
    first = interview.get("bot_first_at")
    if isinstance(first, (int, float)) and first > 0:
        gaps.append(Gap(0.0, min(float(first), call_seconds or float(first)), NOT_INVITED))
    elif not interview.get("bot_coverage"):
        gaps.append(Gap(0.0, call_seconds, NOT_INVITED))
    for g in interview.get("bot_gaps") or []:
        if isinstance(g, dict) and isinstance(g.get("from"), (int, float)) and isinstance(g.get("to"), (int, float)):
            gaps.append(Gap(float(g["from"]), float(g["to"]), str(g.get("reason") or "bot away")))
    gaps += _media_gaps(events, call_seconds)
    if call_seconds > 0:
        analysed = {k: min(v, call_seconds) for k, v in analysed.items()}
    return Coverage(call_seconds, analysed, sorted(gaps, key=lambda g: g.start))


def recording_coverage(events: list[Event], seconds: float) -> Coverage:
    """A recording analysed offline: every family over the whole media, minus the media gaps."""
    gaps = _media_gaps(events, seconds)
    missing = sum(g.seconds for g in gaps)
    covered = max(0.0, seconds - missing)
    return Coverage(seconds, dict.fromkeys(FAMILIES, covered), gaps)
