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

EVENT_TYPES: tuple[str, ...] = (
    FACE_MISSING,
    MULTIPLE_FACES,
    IDENTITY_CHANGED,
    LOOKING_AWAY,
    EYES_CLOSED,
    SUSPICIOUS_OBJECT,
    BACKGROUND_VOICE,
    CAMERA_BLOCKED,
    CAMERA_FROZEN,
    TAB_HIDDEN,
    WINDOW_BLUR,
    MEDIA_LOST,
)

EVENT_TITLES: dict[str, str] = {
    FACE_MISSING: "Face missing",
    MULTIPLE_FACES: "Several faces",
    IDENTITY_CHANGED: "Different person",
    LOOKING_AWAY: "Looking away",
    EYES_CLOSED: "Eyes closed",
    SUSPICIOUS_OBJECT: "Suspicious object",
    BACKGROUND_VOICE: "Background voice",
    CAMERA_BLOCKED: "Camera blocked",
    CAMERA_FROZEN: "Camera frozen",
    TAB_HIDDEN: "Tab hidden",
    WINDOW_BLUR: "Window left",
    MEDIA_LOST: "Media lost",
}

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
    def from_dict(cls, d: dict[str, Any]) -> "Event":
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
