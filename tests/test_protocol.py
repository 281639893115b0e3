"""Socket.IO message schemas, size limits and rate limits."""
from __future__ import annotations

import base64

import pytest

from bot.analysis.events import Event
from signaling import protocol
from signaling.protocol import (
    BotEvent,
    Chat,
    PageEvent,
    ProtocolError,
    RateLimiter,
    Signal,
    TokenBucket,
    parse,
    validate,
)

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100


def bot_payload(**over):
    ev = Event(type="looking_away", start=3.5, end=None, confidence=0.8, detail={"yaw": 41.0})
    d = {"change": "opened", "event": ev.to_dict()}
    d.update(over)
    return d


# --- signal ---

def test_signal_ok():
    msg = parse("signal", {"to": "abc", "kind": "offer", "data": {"type": "offer", "sdp": "v=0"}})
    assert msg == Signal(to="abc", kind="offer", data={"type": "offer", "sdp": "v=0"})


def test_signal_end_of_candidates_may_be_null():
    assert parse("signal", {"to": "abc", "kind": "candidate", "data": None}).data is None


@pytest.mark.parametrize("payload, needle", [
    (None, "must be a JSON object"),
    ([1, 2], "must be a JSON object"),
    ("offer", "must be a JSON object"),
    ({"kind": "offer", "data": {}}, "signal.to"),
    ({"to": 5, "kind": "offer", "data": {}}, "signal.to"),
    ({"to": "", "kind": "offer", "data": {}}, "signal.to"),
    ({"to": "x" * 65, "kind": "offer", "data": {}}, "signal.to"),
    ({"to": "a", "kind": "hello", "data": {}}, "signal.kind"),
    ({"to": "a", "kind": "offer", "data": "sdp"}, "signal.data"),
    ({"to": "a", "kind": "offer", "data": None}, "signal.data"),
])
def test_signal_rejects(payload, needle):
    err = validate("signal", payload)
    assert err is not None and needle in err


def test_signal_too_large():
    err = validate("signal", {"to": "a", "kind": "offer", "data": {"sdp": "x" * (64 * 1024)}})
    assert err == "signal is too large (limit 64 KiB)"
    # just under the limit is fine
    assert validate("signal", {"to": "a", "kind": "offer", "data": {"sdp": "x" * (60 * 1024)}}) is None


def test_multibyte_text_counts_bytes_not_characters():
    # 20k characters of 4 bytes each is 80 KiB of JSON
    assert "too large" in validate("signal", {"to": "a", "kind": "offer", "data": {"sdp": "😀" * 20000}})


def test_deep_nesting_is_refused_without_recursion_error():
    deep: dict = {}
    cur = deep
    for _ in range(5000):
        cur["x"] = {}
        cur = cur["x"]
    err = validate("signal", {"to": "a", "kind": "offer", "data": deep})
    assert "nested" in err


def test_non_finite_numbers_are_refused():
    assert "finite" in validate("signal", {"to": "a", "kind": "offer", "data": {"n": float("nan")}})


def test_huge_integers_do_not_crash():
    assert validate("signal", {"to": "a", "kind": "offer", "data": {"n": 10**5000}}) is None


# --- bot_event ---

def test_bot_event_ok_with_snapshot():
    msg = parse("bot_event", bot_payload(snapshot_b64=base64.b64encode(JPEG).decode()))
    assert isinstance(msg, BotEvent)
    assert msg.change == "opened"
    assert msg.event.type == "looking_away" and msg.event.start == 3.5 and msg.event.end is None
    assert msg.event.snapshot == JPEG
    assert msg.event.detail == {"yaw": 41.0}
    assert msg.event.interview_id is None  # the server sets it from the token, not the message


def test_bot_event_ignores_claimed_interview_and_review():
    p = bot_payload()
    p["event"]["interview_id"] = "someone-else"
    p["event"]["review"] = "dismissed"
    msg = parse("bot_event", p)
    assert msg.event.interview_id is None and msg.event.review is None


def test_bot_event_may_be_larger_than_64k_but_not_512k():
    big = base64.b64encode(JPEG + b"\x00" * (200 * 1024)).decode()
    assert validate("bot_event", bot_payload(snapshot_b64=big)) is None
    huge = base64.b64encode(JPEG + b"\x00" * (600 * 1024)).decode()
    assert "too large" in validate("bot_event", bot_payload(snapshot_b64=huge))
    # and the allowance is for bot_event only
    assert "too large" in validate("chat", {"text": "hi", "pad": "x" * (100 * 1024)})


@pytest.mark.parametrize("mutate, needle", [
    (lambda p: p.update(change="reopened"), "bot_event.change"),
    (lambda p: p.update(event=None), "bot_event.event must be an object"),
    (lambda p: p["event"].update(type="nap"), "bot_event.event.type"),
    (lambda p: p["event"].update(start="3"), "bot_event.event.start"),
    (lambda p: p["event"].update(start=True), "bot_event.event.start"),
    (lambda p: p["event"].update(start=-1), "start must be >= 0"),
    (lambda p: p["event"].update(end=1.0), "end must be >= start"),
    (lambda p: p["event"].update(confidence=2), "confidence"),
    (lambda p: p["event"].update(detail=[1]), "detail"),
    (lambda p: p["event"].update(id=""), "bot_event.event.id"),
    (lambda p: p["event"].update(id="../../etc"), "bot_event.event.id"),
    (lambda p: p["event"].pop("id"), "bot_event.event.id"),
    (lambda p: p.update(snapshot_b64="not base64!!"), "not valid base64"),
    (lambda p: p.update(snapshot_b64=12), "base64 string"),
    (lambda p: p.update(snapshot_b64=base64.b64encode(b"GIF89a....").decode()), "JPEG"),
])
def test_bot_event_rejects(mutate, needle):
    p = bot_payload()
    mutate(p)
    err = validate("bot_event", p)
    assert err is not None and needle in err, err


def test_bot_event_closed_round_trips_event_dict():
    ev = Event(type="tab_hidden", start=1.0, end=4.0, confidence=1.0)
    msg = parse("bot_event", {"change": "closed", "event": ev.to_dict()})
    assert msg.event.id == ev.id and msg.event.duration == 3.0


# --- page_event / chat ---

def test_page_event():
    assert parse("page_event", {"kind": "tab_hidden", "active": True}) == PageEvent("tab_hidden", True)
    assert "page_event.kind" in validate("page_event", {"kind": "devtools", "active": True})
    assert "page_event.active" in validate("page_event", {"kind": "window_blur", "active": "yes"})
    assert "page_event.active" in validate("page_event", {"kind": "window_blur", "active": 1})


def test_chat():
    assert parse("chat", {"text": "  hello  "}) == Chat("hello")
    assert parse("chat", {"text": "x" * 500}).text == "x" * 500
    assert "longer than 500" in validate("chat", {"text": "x" * 501})
    assert "must not be empty" in validate("chat", {"text": "   "})
    assert "must be a string" in validate("chat", {"text": ["hi"]})
    assert "must be a string" in validate("chat", {})


def test_unknown_event():
    with pytest.raises(ProtocolError, match="unknown event"):
        parse("shutdown", {})


def test_bytes_and_odd_types():
    # binary attachments are not part of any schema, but must not crash the size walk
    assert validate("chat", {"text": "hi", "blob": b"\x00" * 10}) is None
    assert "unsupported" in validate("chat", {"text": "hi", "x": object()})


# --- rate limits ---

def test_token_bucket_burst_then_refill():
    b = TokenBucket(rate=2.0, burst=3.0)
    assert [b.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(10.2) is False  # 0.4 tokens
    assert b.take(10.5) is True  # 1.0 token
    assert b.take(100.0) and b.take(100.0) and b.take(100.0) and not b.take(100.0)  # capped at burst


def test_token_bucket_ignores_clock_going_backwards():
    b = TokenBucket(rate=1.0, burst=1.0)
    assert b.take(5.0)
    assert not b.take(4.0)


def test_rate_limiter_is_per_event():
    r = RateLimiter(limits={"chat": (1.0, 2.0), "signal": (10.0, 10.0)})
    assert r.check("chat", 0.0) is None and r.check("chat", 0.0) is None
    err = r.check("chat", 0.0)
    assert err == "too many chat messages (limit 1 per second)"
    assert all(r.check("signal", 0.0) is None for _ in range(10))
    assert r.check("chat", 1.0) is None


def test_default_limits_cover_every_event():
    assert set(protocol.EVENTS) <= set(protocol.DEFAULT_LIMITS)
