"""Conferencing adapters: receive the candidate's audio and video from the platform the call is on.

Every platform implements one small interface, `MediaSource`: ``join(on_track)`` enters the call
and hands each received aiortc track to ``on_track`` (again whenever the candidate's tracks are
replaced: a republish, a reconnect), ``leave()`` exits, and ``state`` says where it stands. The
bot session behind it does not know which platform delivers the tracks.

A call's place is a room description, parsed from the JSON an interview carries by `parse_room`:

    {"kind": "janus", "url": "http(s)://host:port/janus" | "ws(s)://...", "room": 1234,
     "pin"?: "...", "candidate": "display name" | feed id}
    {"kind": "whep", "url": "http(s)://...", "bearer"?: "..."}

Bad input raises `RoomError` naming the field (``room.url must be an http(s) or ws(s) URL``).
Secrets (the pin, the bearer token) are `Secret` values: never in ``repr()``/``str()`` (so never in
logs), never in ``public()``; only an adapter reads them, with ``reveal()``, to send them.

This package imports aiortc, aiohttp and the standard library only.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from aiortc.mediastreams import MediaStreamTrack

log = logging.getLogger(__name__)

SourceState = Literal["joining", "receiving", "waiting for the candidate", "reconnecting", "left"]
TrackHandler = Callable[[MediaStreamTrack], None]
StateHandler = Callable[[str], None]

BOT_DISPLAY_NAME = "Proctoring bot"


@runtime_checkable
class MediaSource(Protocol):
    """Where the candidate's media comes from: one call on one platform."""

    @property
    def state(self) -> str:
        """"joining", "receiving", "waiting for the candidate", "reconnecting" or "left"."""
        ...

    async def join(self, on_track: TrackHandler) -> None:
        """Enter the call; returns once in (raises `JoinError` if the first attempt fails).

        Afterwards the source follows the candidate by itself (republish, reconnect, server restart)
        and calls ``on_track`` with every track it receives, replacements included. The caller must
        read every track it is given (aiortc queues frames nobody reads without limit).
        """
        ...

    async def leave(self) -> None:
        """Leave the call and release everything; idempotent."""
        ...


class JoinError(RuntimeError):
    """The first attempt to join failed (unreachable server, wrong room or pin, refused token)."""


class SourceBase:
    """What the adapters share: the ``state`` value (its log line and callback), the background task and the
    HTTP session, and `leave()`, which stops the task, lets the adapter release its platform session
    (`_release`), closes the HTTP session and ends in "left"."""

    def __init__(self, *, on_state: StateHandler | None = None) -> None:
        self._state: SourceState = "joining"
        self._on_state = on_state
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def leave(self) -> None:
        if self.state == "left":
            return
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._release()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._set_state("left")

    async def _release(self) -> None:
        """Leave the platform's session (detach, DELETE); called once by `leave()`."""
        raise NotImplementedError

    @property
    def state(self) -> str:
        return self._state

    def _set_state(self, state: SourceState) -> None:
        if state == self._state or self._state == "left":  # nothing happens after leave()
            return
        log.info("%s: %s -> %s", type(self).__name__, self._state, state)
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:  # the listener's bug must not stop the media
                log.exception("state listener failed")


class Backoff:
    """Exponential delays with jitter between reconnection attempts: first, first*2, ... up to cap."""

    def __init__(self, first: float = 0.5, cap: float = 15.0) -> None:
        self.first = first
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0 ** self.attempts)
        self.attempts += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempts = 0


# --- room descriptions ---------------------------------------------------------------------------

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


@dataclass(frozen=True)
class WhepRoom:
    """A WHEP endpoint (RFC 9725) that plays the candidate's stream."""

    url: str
    bearer: Secret | None = field(default=None, repr=False)
    kind: Literal["whep"] = "whep"

    def public(self) -> dict[str, Any]:
        """What may be shown or returned: everything but the bearer token."""
        return {"kind": self.kind, "url": self.url}


Room = JanusRoom | WhepRoom

_FIELDS = {"janus": {"kind", "url", "room", "pin", "candidate"}, "whep": {"kind", "url", "bearer"}}


def parse_room(value: object) -> Room:
    """The room description of an interview (decoded JSON) as a value; `RoomError` names a bad field."""
    if not isinstance(value, Mapping):
        raise RoomError("room", "must be an object")
    kind = value.get("kind")
    if kind not in _FIELDS:
        raise RoomError("room.kind", "must be 'janus' or 'whep'")
    unknown = sorted(str(k) for k in value if k not in _FIELDS[kind])
    if unknown:
        raise RoomError(f"room.{unknown[0]}", f"is not a field of a {kind} room")
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


def open_source(room: Room, *, on_state: StateHandler | None = None) -> MediaSource:
    """The adapter for a room description (not joined yet)."""
    if isinstance(room, JanusRoom):  # imported here: the adapters import this module
        from adapters.conferencing.janus import JanusSource
        return JanusSource(room, on_state=on_state)
    from adapters.conferencing.whep import WhepSource
    return WhepSource(room, on_state=on_state)


__all__ = [
    "BOT_DISPLAY_NAME", "Backoff", "JanusRoom", "JoinError", "MediaSource", "Room", "RoomError", "Secret",
    "SourceBase", "SourceState", "StateHandler", "TrackHandler", "WhepRoom", "open_source", "parse_room",
]
