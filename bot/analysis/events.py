"""Events: what the rules conclude, what is stored, alerted, scored and reported."""
from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Every event type, in report order.
FACE_MISSING = "face_missing"
MULTIPLE_FACES = "multiple_faces"
IDENTITY_CHANGED = "identity_changed"  # the face in the seat is not the enrolled candidate's
LOOKING_AWAY = "looking_away"
EYES_CLOSED = "eyes_closed"
SUSPICIOUS_OBJECT = "suspicious_object"
BACKGROUND_VOICE = "background_voice"
CAMERA_BLOCKED = "camera_blocked"
CAMERA_FROZEN = "camera_frozen"
TAB_HIDDEN = "tab_hidden"  # live only
WINDOW_BLUR = "window_blur"  # live only
MEDIA_LOST = "media_lost"  # live only: a track sent no frames for N seconds

# What the candidate's page reports (live only); each kind is also the event type it becomes.
PAGE_KINDS: tuple[str, ...] = (TAB_HIDDEN, WINDOW_BLUR)


@dataclass(frozen=True, slots=True)
class EventKind:
    """How an event type is named and shown everywhere (report, interviewer's page, API)."""

    type: str
    title: str
    severity: str  # "high" | "medium" | "low": how loudly the interviewer's page shows it
    color: tuple[int, int, int]  # RGB of its lane in the report's timeline and its chip on the page
    live_only: bool = False


CATALOGUE: dict[str, EventKind] = {k.type: k for k in (
    EventKind(FACE_MISSING, "Face missing", "medium", (231, 76, 60)),
    EventKind(MULTIPLE_FACES, "Several faces", "high", (142, 68, 173)),
    EventKind(IDENTITY_CHANGED, "Different person", "high", (192, 57, 43)),
    EventKind(LOOKING_AWAY, "Looking away", "medium", (243, 156, 18)),
    EventKind(EYES_CLOSED, "Eyes closed", "low", (52, 152, 219)),
    EventKind(SUSPICIOUS_OBJECT, "Suspicious object", "high", (176, 42, 55)),
    EventKind(BACKGROUND_VOICE, "Background voice", "high", (22, 160, 133)),
    EventKind(CAMERA_BLOCKED, "Camera blocked", "high", (44, 62, 80)),
    EventKind(CAMERA_FROZEN, "Camera frozen", "medium", (127, 140, 141)),
    EventKind(TAB_HIDDEN, "Tab hidden", "medium", (211, 84, 0), live_only=True),
    EventKind(WINDOW_BLUR, "Window left", "medium", (202, 162, 0), live_only=True),
    EventKind(MEDIA_LOST, "Media lost", "medium", (110, 120, 140), live_only=True),
)}

EVENT_TYPES: tuple[str, ...] = tuple(CATALOGUE)


def title(event_type: str) -> str:
    """The catalogue's title, or a readable form of an unknown type."""
    kind = CATALOGUE.get(event_type)
    return kind.title if kind is not None else event_type.replace("_", " ").capitalize()


def catalogue_json() -> list[dict[str, Any]]:
    """The catalogue as the interviewer's page reads it (``GET /api/catalogue``)."""
    return [{"type": k.type, "title": k.title, "severity": k.severity,
             "color": "#{:02x}{:02x}{:02x}".format(*k.color), "live_only": k.live_only} for k in CATALOGUE.values()]


REVIEW_STATES = ("confirmed", "dismissed")


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Event:
    type: str
    start: float
    end: float | None  # None while the event is still going on
    confidence: float
    detail: dict[str, Any] = field(default_factory=dict)
    snapshot: bytes | None = None  # JPEG evidence
    id: str = field(default_factory=new_event_id)
    interview_id: str | None = None
    review: str | None = None  # None, "confirmed" or "dismissed"

    @property
    def open(self) -> bool:
        return self.end is None

    @property
    def duration(self) -> float:
        return 0.0 if self.end is None else max(0.0, self.end - self.start)

    def to_dict(self, *, snapshot: bool = False) -> dict[str, Any]:
        """JSON-ready; the snapshot is left out unless asked for (it is bytes)."""
        d = asdict(self)
        if not snapshot:
            d.pop("snapshot")
        d["duration"] = self.duration
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            type=d["type"],
            start=float(d["start"]),
            end=None if d.get("end") is None else float(d["end"]),
            confidence=float(d.get("confidence", 1.0)),
            detail=dict(d.get("detail") or {}),
            snapshot=d.get("snapshot"),
            id=d.get("id") or new_event_id(),
            interview_id=d.get("interview_id"),
            review=d.get("review"),
        )
