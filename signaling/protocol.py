"""Socket.IO message schemas, size limits and per-socket rate limits.

Pure functions: `parse(event, payload)` returns a typed message or raises
`ProtocolError` whose message is what the sender gets back in ``error``;
`RateLimiter` is a set of token buckets, one per event name, for one socket.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.analysis.events import EVENT_TYPES, Event

MAX_MESSAGE = 64 * 1024  # bytes of JSON, every event but bot_event
MAX_BOT_EVENT = 512 * 1024  # bot_event may carry a base64 JPEG snapshot
MAX_SNAPSHOT = 384 * 1024  # decoded snapshot bytes
MAX_CHAT = 500  # characters
MAX_DEPTH = 16  # nesting of objects/arrays
MAX_ID = 64  # characters of an event id or a sid

SIGNAL_KINDS = ("offer", "answer", "candidate")
CHANGES = ("opened", "updated", "closed")
PAGE_KINDS = ("tab_hidden", "window_blur")
EVENTS = ("signal", "bot_event", "page_event", "chat", "bot_state")
BOT_STATES = ("analysing", "no_media")
FAMILIES = ("faces", "objects", "camera")

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ProtocolError(ValueError):
    """A message that breaks the protocol; str(error) is the reply for the sender."""


@dataclass(frozen=True, slots=True)
class Signal:
    to: str
    kind: str
    data: dict[str, Any] | None


@dataclass(slots=True)
class BotEvent:
    change: str
    event: Event  # snapshot decoded; interview_id not yet set (the server sets it)
    taken_at: float | None = None  # unix time the bot took the frame (or audio) behind the change


@dataclass(frozen=True, slots=True)
class PageEvent:
    kind: str
    active: bool


@dataclass(frozen=True, slots=True)
class Chat:
    text: str


@dataclass(frozen=True, slots=True)
class BotState:
    """The bot's heartbeat (every few seconds): what it is doing and what it has analysed since it joined."""

    state: str  # analysing | no_media
    face_fps: float  # faces sampled per second lately
    samples: dict[str, int]  # detector family -> frames analysed since this bot joined
    audio_seconds: float  # audio analysed since this bot joined
    since: float  # call time (s) this bot joined


Message = Signal | BotEvent | PageEvent | Chat | BotState


def max_size(event: str) -> int:
    return MAX_BOT_EVENT if event == "bot_event" else MAX_MESSAGE


def json_size(value: Any, limit: int, depth: int = 0, path: str = "message") -> int:
    """Roughly the bytes ``value`` takes as JSON; stops counting once past ``limit``.

    Raises `ProtocolError` naming the field (``path``) for values JSON cannot carry, text that is not valid
    Unicode (a lone surrogate, which JSON escapes can carry but no database stores) or nesting deeper than
    MAX_DEPTH.
    """
    if depth > MAX_DEPTH:
        raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"{path}: numbers must be finite")
        return 24 if isinstance(value, float) else value.bit_length() * 3 // 10 + 2
    if isinstance(value, str):
        try:
            return 2 + len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolError(f"{path} must be valid Unicode text (no lone surrogates)") from None
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        total = 2
        for k, v in value.items():
            where = f"{path}.{str(k)[:32]}"
            total += json_size(k, limit, depth + 1, f"{path} key") + 1 + json_size(v, limit, depth + 1, where) + 1
            if total > limit:
                return total
        return total
    if isinstance(value, (list, tuple)):
        total = 2
        for i, v in enumerate(value):
            total += json_size(v, limit, depth + 1, f"{path}[{i}]") + 1
            if total > limit:
                return total
        return total
    raise ProtocolError(f"{path}: unsupported value of type {type(value).__name__}")


def storable(value: Any, path: str, depth: int = 0) -> None:
    """What a database document can hold (for what is stored): keys that are text, not starting with ``$``,
    without ``.`` or NUL, and integers that fit in 64 bits; else `ProtocolError` naming the field."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ProtocolError(f"{path}: integers must fit in 64 bits")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not k or k.startswith("$") or "." in k or "\x00" in k:
                raise ProtocolError(f"{path} has an invalid key {str(k)[:32]!r} (empty, or with $, . or NUL)")
            storable(v, f"{path}.{k[:32]}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            storable(v, f"{path}[{i}]", depth + 1)


def _object(payload: Any, event: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ProtocolError(f"{event} must be a JSON object")
    limit = max_size(event)
    if json_size(payload, limit, path=event) > limit:
        raise ProtocolError(f"{event} is too large (limit {limit // 1024} KiB)")
    return payload


def _choice(d: dict[str, Any], key: str, choices: tuple[str, ...], event: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or v not in choices:
        raise ProtocolError(f"{event}.{key} must be one of {', '.join(choices)}")
    return v


def _number(d: dict[str, Any], key: str, event: str, *, optional: bool = False) -> float | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"{event}.{key} must be a finite number")
    try:
        f = float(v)  # an integer too large for a float overflows
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ProtocolError(f"{event}.{key} must be a finite number")
    return f


def parse_signal(payload: Any) -> Signal:
    d = _object(payload, "signal")
    to = d.get("to")
    if not isinstance(to, str) or not to or len(to) > MAX_ID:
        raise ProtocolError("signal.to must be the sid of a participant")
    kind = _choice(d, "kind", SIGNAL_KINDS, "signal")
    data = d.get("data")
    if not isinstance(data, dict) and not (kind == "candidate" and data is None):
        raise ProtocolError("signal.data must be an object")
    return Signal(to=to, kind=kind, data=data)


def decode_snapshot(text: Any) -> bytes:
    if not isinstance(text, str) or not text:
        raise ProtocolError("bot_event.snapshot_b64 must be a base64 string")
    if len(text) > (MAX_SNAPSHOT * 4) // 3 + 4:
        raise ProtocolError(f"bot_event.snapshot_b64 is larger than {MAX_SNAPSHOT // 1024} KiB")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bot_event.snapshot_b64 is not valid base64") from None
    if not raw.startswith(b"\xff\xd8\xff"):
        raise ProtocolError("bot_event.snapshot_b64 must be a JPEG image")
    return raw


def parse_bot_event(payload: Any) -> BotEvent:
    d = _object(payload, "bot_event")
    change = _choice(d, "change", CHANGES, "bot_event")
    e = d.get("event")
    if not isinstance(e, dict):
        raise ProtocolError("bot_event.event must be an object")
    where = "bot_event.event"
    etype = _choice(e, "type", EVENT_TYPES, where)
    start = _number(e, "start", where)
    end = _number(e, "end", where, optional=True)
    assert start is not None
    if start < 0:
        raise ProtocolError(f"{where}.start must be >= 0")
    if end is not None and end < start:
        raise ProtocolError(f"{where}.end must be >= start")
    confidence = 1.0 if e.get("confidence") is None else _number(e, "confidence", where)
    assert confidence is not None
    if not 0.0 <= confidence <= 1.0:
        raise ProtocolError(f"{where}.confidence must be between 0 and 1")
    detail = e.get("detail")
    if detail is None:
        detail = {}
    if not isinstance(detail, dict):
        raise ProtocolError(f"{where}.detail must be an object")
    storable(detail, f"{where}.detail")  # stored as it is (the other fields become floats and text)
    eid = e.get("id")
    if not isinstance(eid, str) or not _ID.fullmatch(eid):
        raise ProtocolError(f"{where}.id must be 1-{MAX_ID} letters, digits or _.:-")
    snapshot = None
    if d.get("snapshot_b64") is not None:
        snapshot = decode_snapshot(d["snapshot_b64"])
    event = Event(type=etype, start=start, end=end, confidence=confidence, detail=dict(detail),
                  snapshot=snapshot, id=eid)
    taken_at = _number(d, "taken_at", "bot_event", optional=True)  # unix time of the frame behind the change
    return BotEvent(change=change, event=event, taken_at=taken_at)


def parse_page_event(payload: Any) -> PageEvent:
    d = _object(payload, "page_event")
    kind = _choice(d, "kind", PAGE_KINDS, "page_event")
    active = d.get("active")
    if not isinstance(active, bool):
        raise ProtocolError("page_event.active must be true or false")
    return PageEvent(kind=kind, active=active)


def parse_chat(payload: Any) -> Chat:
    d = _object(payload, "chat")
    text = d.get("text")
    if not isinstance(text, str):
        raise ProtocolError("chat.text must be a string")
    text = text.strip()
    if not text:
        raise ProtocolError("chat.text must not be empty")
    if len(text) > MAX_CHAT:
        raise ProtocolError(f"chat.text is longer than {MAX_CHAT} characters")
    return Chat(text=text)


def parse_bot_state(payload: Any) -> BotState:
    d = _object(payload, "bot_state")
    state = _choice(d, "state", BOT_STATES, "bot_state")
    numbers = {k: _number(d, k, "bot_state") for k in ("face_fps", "audio_seconds", "since")}
    if any(v is None or v < 0 or v > 1e9 for v in numbers.values()):
        raise ProtocolError("bot_state.face_fps, audio_seconds and since must be >= 0")
    raw = d.get("samples")
    if not isinstance(raw, dict):
        raise ProtocolError("bot_state.samples must be an object")
    samples: dict[str, int] = {}
    for name in FAMILIES:
        v = raw.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10**9:
            raise ProtocolError(f"bot_state.samples.{name} must be a count")
        samples[name] = v
    return BotState(state=state, face_fps=float(numbers["face_fps"] or 0), samples=samples,
                    audio_seconds=float(numbers["audio_seconds"] or 0), since=float(numbers["since"] or 0))


_PARSERS: dict[str, Callable[[Any], Message]] = {
    "bot_state": parse_bot_state,
    "signal": parse_signal,
    "bot_event": parse_bot_event,
    "page_event": parse_page_event,
    "chat": parse_chat,
}


def parse(event: str, payload: Any) -> Message:
    """The typed message, or `ProtocolError` with the reason."""
    parser = _PARSERS.get(event)
    if parser is None:
        raise ProtocolError(f"unknown event {event!r}")
    try:
        return parser(payload)
    except RecursionError:
        raise ProtocolError(f"{event} is nested too deeply") from None


def validate(event: str, payload: Any) -> str | None:
    """None if the message is well formed, else the error string for the sender."""
    try:
        parse(event, payload)
    except ProtocolError as e:
        return str(e)
    return None


# --- rate limits -------------------------------------------------------------------

# event -> (tokens per second, burst)
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {
    "signal": (20.0, 60.0),  # browsers trickle ICE candidates in bursts
    "bot_event": (20.0, 60.0),
    "page_event": (4.0, 20.0),
    "bot_state": (2.0, 5.0),  # the bot's heartbeat, every 2 s
    "chat": (1.0, 5.0),
    "error": (5.0, 10.0),  # replies we send back: bounds what a flood costs us
}


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> bool:
        if self.tokens < 0:  # first use: full bucket
            self.tokens, self.stamp = self.burst, now
        elif now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait(self, cost: float = 1.0) -> float:
        """Seconds until `take(cost)` would succeed (after a failed `take`)."""
        return max(0.0, (cost - self.tokens) / self.rate) if self.rate > 0 else float("inf")


@dataclass(slots=True)
class RateLimiter:
    """One socket's buckets, one per event name."""

    limits: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def allow(self, event: str, now: float) -> bool:
        bucket = self.buckets.get(event)
        if bucket is None:
            rate, burst = self.limits.get(event, (10.0, 20.0))
            bucket = self.buckets[event] = TokenBucket(rate, burst)
        return bucket.take(now)

    def check(self, event: str, now: float) -> str | None:
        """None if allowed, else the error string for the sender."""
        if self.allow(event, now):
            return None
        rate, _ = self.limits.get(event, (10.0, 20.0))
        return f"too many {event} messages (limit {rate:g} per second)"
