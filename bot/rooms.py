"""Where a call is held when it is not on this server: the room description an interview carries.

    {"kind": "janus", "url": "http(s)://host:port/janus" | "ws(s)://...", "room": 1234,
     "pin"?: "...", "candidate": "display name" | feed id}
    {"kind": "whep", "url": "http(s)://...", "bearer"?: "..."}

`parse_room` turns the decoded JSON into a value (`JanusRoom`, `WhepRoom`); bad input raises `RoomError`
naming the field (``room.url must be an http(s) or ws(s) URL``). Secrets (the pin, the bearer token) are
`Secret` values: never in ``repr()``/``str()`` (so never in logs), never in ``public()``; only the
conferencing adapters read them, with ``reveal()``, to send them; ``stored()`` is the form the database
keeps (secrets included) so the bot can use them.

Pure values, standard library only: the API (`signaling`) validates with them, the adapters
(`adapters.conferencing`) connect with them, and neither imports the other.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit


class RoomError(ValueError):
    """A bad room description; ``field`` is the offending key (``room.url``), the message names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name} {message}")
        self.field = field_name


class Secret:
    """A string that never shows itself: ``repr``/``str`` give ``'***'``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class JanusRoom:
    """A Janus VideoRoom: server URL (HTTP API root or WebSocket), room number, the candidate's feed."""

    url: str
    room: int
    candidate: str | int  # a display name, or a feed id (int; a string also matches a feed id as text)
    pin: Secret | None = field(default=None, repr=False)
    kind: Literal["janus"] = "janus"

    def public(self) -> dict[str, Any]:
        """What may be shown or returned: everything but the pin."""
        return {"kind": self.kind, "url": self.url, "room": self.room, "candidate": self.candidate}

    def stored(self) -> dict[str, Any]:
        """The description to keep in the database, the pin included (read back with `parse_room`)."""
        return {**self.public(), **({"pin": self.pin.reveal()} if self.pin is not None else {})}


@dataclass(frozen=True)
class WhepRoom:
    """A WHEP endpoint (RFC 9725) that plays the candidate's stream."""

    url: str
    bearer: Secret | None = field(default=None, repr=False)
    kind: Literal["whep"] = "whep"

    def public(self) -> dict[str, Any]:
        """What may be shown or returned: everything but the bearer token."""
        return {"kind": self.kind, "url": self.url}

    def stored(self) -> dict[str, Any]:
        """The description to keep in the database, the bearer token included (read back with `parse_room`)."""
        return {**self.public(), **({"bearer": self.bearer.reveal()} if self.bearer is not None else {})}


Room = JanusRoom | WhepRoom

_FIELDS = {"janus": {"kind", "url", "room", "pin", "candidate"}, "whep": {"kind", "url", "bearer"}}


def parse_room(value: object) -> Room:
    """The room description of an interview (decoded JSON) as a value; `RoomError` names a bad field."""
    if not isinstance(value, Mapping):
        raise RoomError("room", "must be an object")
    kind = value.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:  # (a list is unhashable: no `in` on it)
        raise RoomError("room.kind", "must be 'janus' or 'whep'")
    unknown = sorted(str(k) for k in value if k not in _FIELDS[kind])
    if unknown:
        raise RoomError(f"room.{unknown[0][:50]}", f"is not a field of a {kind} room")
    if kind == "janus":
        return JanusRoom(
            url=_url(value.get("url"), ("http", "https", "ws", "wss"), "an http(s) or ws(s) URL"),
            room=_room_number(value.get("room")),
            candidate=_candidate(value.get("candidate")),
            pin=_secret(value, "pin"),
        )
    return WhepRoom(url=_url(value.get("url"), ("http", "https"), "an http(s) URL"), bearer=_secret(value, "bearer"))


def _url(value: object, schemes: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise RoomError("room.url", f"must be {what}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise RoomError("room.url", f"must be {what}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise RoomError("room.url", f"must be {what}")
    if parts.username is not None or parts.password is not None:  # a secret in the URL would be shown
        raise RoomError("room.url", "must not carry credentials (user:password@)")
    return value


def _room_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**53:
        raise RoomError("room.room", "must be a positive integer (the VideoRoom number)")
    return value


def _candidate(value: object) -> str | int:
    if isinstance(value, bool):
        raise RoomError("room.candidate", "must be a display name or a numeric feed id")
    if isinstance(value, int) and 0 < value < 2**53:
        return value
    if isinstance(value, str) and value.strip() and len(value) <= 256:
        return value
    raise RoomError("room.candidate", "must be a display name or a numeric feed id")


def _secret(value: Mapping[str, Any], key: str) -> Secret | None:
    if key not in value or value[key] is None:
        return None
    secret = value[key]
    if not isinstance(secret, str) or not secret or len(secret) > 4096:
        raise RoomError(f"room.{key}", "must be a non-empty string")
    return Secret(secret)


def public_room(value: object) -> dict[str, Any] | None:
    """What may be shown of a stored room description (secrets dropped); None if there is none."""
    if value is None:
        return None
    try:
        return parse_room(value).public()
    except RoomError:  # stored before a rule changed: show its kind only, never its fields
        kind = value.get("kind") if isinstance(value, Mapping) else None
        return {"kind": kind if isinstance(kind, str) and kind in _FIELDS else "unknown"}


__all__ = ["JanusRoom", "Room", "RoomError", "Secret", "WhepRoom", "parse_room", "public_room"]
