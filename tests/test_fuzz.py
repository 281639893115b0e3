"""Fuzzing with generated input (hypothesis): every Socket.IO event the server handles, raw Engine.IO/Socket.IO
frames, and every HTTP route, with malformed JSON, wrong types, huge strings, odd Unicode, missing fields and
wrong tokens. Nothing may escape a handler (no log record at ERROR), no route may answer 500, and the server
must keep answering (a chat round trip and /healthz after each input). Generators: `tests.support.fuzz`.
The memory cost of such a flood is measured by `benchmarks/bench_fuzz_memory.py`."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from urllib.parse import quote

import aiohttp
import bson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from signaling import api, protocol, tokens
from signaling.protocol import ProtocolError, RateLimiter
from tests.support.clients import Peer, served
from tests.support.fuzz import ODD_TEXT, strategies

S = strategies()
SOCKET_EVENTS = (*protocol.EVENTS, "nope", "", "alert", "participants", "error", "message", "x" * 300, "\ud800")
ROUTES = [  # (method, path template) of signaling.api.add_routes and the pages
    ("GET", "/healthz"), ("POST", "/api/interviews"), ("POST", "/api/interviews/{id}/bot"),
    ("POST", "/api/interviews/{id}/end"), ("GET", "/api/interviews/{id}/events"),
    ("GET", "/api/interviews/{id}/events/{event_id}/snapshot"), ("PATCH", "/api/interviews/{id}/events/{event_id}"),
    ("GET", "/api/interviews/{id}/report.pdf"), ("GET", "/api/interviews/{id}/report.csv"),
    ("GET", "/api/interviews/{id}/report.json"), ("DELETE", "/api/interviews/{id}"), ("GET", "/api/catalogue"),
    ("GET", "/"), ("GET", "/interview/{id}"), ("GET", "/static/{path}"),
    ("GET", "/socket.io/"), ("POST", "/socket.io/"),
]
FUZZ = hsettings(max_examples=200, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                        HealthCheck.data_too_large])


def errors(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


# --- the parser alone: fast, many inputs ------------------------------------------------------------

@hsettings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(protocol.EVENTS).flatmap(lambda e: st.tuples(st.just(e), S.message(e))))
def test_the_parser_raises_only_protocol_errors_and_accepts_only_storable_events(case):
    event, payload = case
    try:
        msg = protocol.parse(event, payload)
    except ProtocolError as e:
        assert str(e)
        return
    if isinstance(msg, protocol.BotEvent):  # what the store writes and the alert carries
        d = msg.event.to_dict()
        bson.encode({"event": {k: v for k, v in d.items() if k != "snapshot"}})
        json.dumps(d, allow_nan=False)
        assert protocol._ID.fullmatch(msg.event.id)


def test_known_bad_inputs_are_refused_naming_the_field():
    ev = {"type": "looking_away", "start": 1, "id": "e1"}
    cases = [
        ({"change": "opened", "event": {**ev, "start": 10**400}}, "bot_event.event.start must be a finite number"),
        ({"change": "opened", "event": {**ev, "confidence": -(10**400)}}, "bot_event.event.confidence"),
        ({"change": "opened", "event": {**ev, "detail": {"yaw": 2**64}}}, "bot_event.event.detail.yaw: integers must fit"),
        ({"change": "opened", "event": {**ev, "start": 1e400}}, "bot_event.event.start: numbers must be finite"),
        ({"change": "opened", "event": {**ev, "id": "e1\n"}}, "bot_event.event.id must be"),
        ({"change": "opened", "event": {**ev, "detail": {"note": "a\ud800"}}}, "bot_event.event.detail.note must be valid Unicode"),
        ({"change": "opened", "event": {**ev, "detail": {"$set": 1}}}, "bot_event.event.detail has an invalid key '$set'"),
        ({"change": "opened", "event": {**ev, "detail": {"a": {"b.c": 1}}}}, "bot_event.event.detail.a has an invalid key"),
        ({"change": "opened", "event": {**ev, "detail": {"n\x00": 1}}}, "invalid key"),
    ]
    for payload, needle in cases:
        with pytest.raises(ProtocolError) as got:
            protocol.parse("bot_event", payload)
        assert needle in str(got.value), (payload, str(got.value))
    with pytest.raises(ProtocolError, match="chat.text must be valid Unicode"):
        protocol.parse("chat", {"text": "hi \udc80"})


# --- over a real server -----------------------------------------------------------------------------

class Call:
    """The served app, an interview, and an interviewer, a candidate and a bot connected to it."""

    def __init__(self, srv, iid: str, peers: dict[str, Peer]) -> None:
        self.srv, self.iid, self.peers = srv, iid, peers
        self.hub = srv.app.application[api.HUB]
        self.n = 0

    async def renew(self) -> None:
        """A new interview with the three sockets in it (the old one was deleted or ended)."""
        await asyncio.gather(*(p.close() for p in self.peers.values()), return_exceptions=True)
        self.iid = await self.srv.interview()
        for role in list(self.peers):
            self.peers[role] = await Peer().connect(self.srv.url, self.srv.token(self.iid, role))
        self.unlimit()

    def unlimit(self) -> None:
        """No rate limits for the fuzzing sockets: every input reaches the parser."""
        for p in self.peers.values():
            if p.sio.connected:
                self.hub.limits[p.sid] = RateLimiter(limits={k: (1e9, 1e9) for k in protocol.DEFAULT_LIMITS})

    async def alive(self) -> None:
        """A chat round trip on the interviewer's socket, /healthz, and every socket still connected."""
        self.n += 1
        text = f"probe {self.n}"
        await self.peers["interviewer"].sio.emit("chat", {"text": text})
        await self.peers["interviewer"].until("chat", lambda m: m["text"] == text, timeout=5)
        async with aiohttp.ClientSession() as s, s.get(self.srv.url + "/healthz") as r:
            assert r.status == 200
        assert all(p.sio.connected for p in self.peers.values())
        await self.hub.writer.flush()
        for p in self.peers.values():  # nobody reads these: keep the queues short
            for q in p.queues.values():
                while not q.empty():
                    q.get_nowait()


@pytest.fixture
async def call(settings, store):
    async with served(settings, store, reports=True) as srv:
        iid = await srv.interview()
        peers = {}
        try:
            for role in ("interviewer", "candidate", "bot"):
                peers[role] = await Peer().connect(srv.url, srv.token(iid, role))
            c = Call(srv, iid, peers)
            c.unlimit()
            yield c
        finally:
            await asyncio.gather(*(p.close() for p in peers.values()), return_exceptions=True)


@pytest.mark.slow  # each fuzz test over the server: ~2 s to start a database and the server, ~4 s of 200 inputs
@FUZZ
@given(role=st.sampled_from(["interviewer", "candidate", "bot"]),
       case=st.sampled_from(SOCKET_EVENTS).flatmap(
           lambda e: st.tuples(st.just(e), st.lists(S.message(e), max_size=3))))
async def test_socketio_events_with_generated_payloads(call, caplog, role, case):
    event, args = case
    caplog.clear()
    caplog.set_level(logging.ERROR)
    peer = call.peers[role]
    await peer.sio.emit(event, tuple(args) if len(args) != 1 else args[0])
    await call.alive()
    assert errors(caplog) == [], ([e[:300] for e in errors(caplog)], role, event, str(args)[:300])


RAW_FRAMES = st.one_of(
    st.tuples(st.sampled_from(["42", "42/", "43", "45", "46", "41", "40", "44", "4", "2", "3", "5", "6", "9", ""]),
              st.one_of(S.text, S.json.map(json.dumps),
                        st.tuples(S.text, S.json).map(lambda t: json.dumps([t[0], t[1]])))).map("".join),
    st.sampled_from(['42["chat",', '42["chat",{"text":"a"}', '42[]', '42{}', '42[1]', '42[null,{}]', '42["chat"]',
                     '451-["chat",{"_placeholder":true,"num":0}]', '42["chat",NaN]', '42["chat",1e999]',
                     '42["chat",' + "[" * 5000 + "]" * 5000 + "]", '40{"token":', '42999999999999999999999["x"]']),
    st.binary(max_size=64),
)


@pytest.mark.slow
@FUZZ
@given(frames=st.lists(RAW_FRAMES, min_size=1, max_size=3))
async def test_raw_socketio_frames(call, caplog, frames):
    """Malformed JSON and packets below the client library: a raw Engine.IO websocket."""
    caplog.clear()
    caplog.set_level(logging.ERROR)
    url = call.srv.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        opened = await ws.receive(timeout=5)
        assert opened.data.startswith("0")
        await ws.send_str("40" + json.dumps({"token": call.srv.token(call.iid, "candidate")}))
        joined = await ws.receive(timeout=5)
        assert joined.data.startswith("40"), joined
        sid = json.loads(joined.data[2:])["sid"]
        call.hub.limits[sid] = RateLimiter(limits={k: (1e9, 1e9) for k in protocol.DEFAULT_LIMITS})
        for frame in frames:
            if ws.closed:
                break
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:  # a text frame is UTF-8: a lone surrogate cannot be sent as such
                await ws.send_str(frame.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
    # the raw candidate replaced the real one: bring it back
    if not call.peers["candidate"].sio.connected:
        call.peers["candidate"] = await Peer().connect(call.srv.url, call.srv.token(call.iid, "candidate"))
        call.unlimit()
    await call.alive()
    assert errors(caplog) == [], ([e[:300] for e in errors(caplog)], str(frames)[:300])


async def test_engineio_messages_that_read_as_json_are_refused(call, caplog):
    """Engine.IO reads a message not starting with a digit as JSON: "4null" reached python-socketio as None, an
    event without data (a traceback at ERROR, found by the raw-frame fuzz test). Each such frame now gets a
    warning and the connection is closed; the server goes on."""
    caplog.clear()
    caplog.set_level(logging.WARNING)
    url = call.srv.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    for frame in ("4null", "4true", "4{}", "4[1]", "4-1", '4{"a":[1]}'):
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            assert (await ws.receive(timeout=5)).data.startswith("0")
            await ws.send_str("40" + json.dumps({"token": call.srv.token(call.iid, "candidate")}))
            assert (await ws.receive(timeout=5)).data.startswith("40")
            await ws.send_str(frame)
            ends = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            for _ in range(20):  # the room's own messages (participants...) may come first
                msg = await ws.receive(timeout=5)
                if msg.type in ends or msg.data == "1":  # closed, or Engine.IO's CLOSE packet
                    break
            assert msg.type in ends or msg.data == "1", (frame, msg)
    if not call.peers["candidate"].sio.connected:
        call.peers["candidate"] = await Peer().connect(call.srv.url, call.srv.token(call.iid, "candidate"))
        call.unlimit()
    await call.alive()
    assert errors(caplog) == []
    warned = [r.getMessage() for r in caplog.records if "not a packet" in r.getMessage()]
    assert len(warned) == 6, warned


def _quoted(text: str, most: int = 2400) -> str:
    """A path segment, percent-encoded, at most `most` characters: a request line past aiohttp's 8 KiB is answered
    by its parser (plain-text 400) before any route, which is not the API's answer to test."""
    out = quote(text, safe="", errors="surrogatepass")
    while len(out) > most:
        text = text[: len(text) * 3 // 4]
        out = quote(text, safe="", errors="surrogatepass")
    return out


def _header_value(text: str, most: int = 6000) -> str:
    """A header value a client can send: no control characters, at most `most` bytes on the wire. The text goes
    as its UTF-8 bytes read as latin-1, and the client sends each of those characters past 0x7f as two bytes,
    so 6000 characters of "é" were 24,000 bytes: past aiohttp's 8 KiB line, answered by its parser (plain-text
    400) before any route (found by CI)."""
    out = re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "", text.encode("utf-8", "surrogatepass").decode("latin-1"))
    while len(out.encode("utf-8")) > most:
        out = out[: len(out) * 3 // 4]
    return out


def _tokens(call) -> st.SearchStrategy:
    srv, iid = call.srv, call.iid
    return st.one_of(
        st.none(), S.text,
        st.sampled_from([srv.token(iid, role) for role in tokens.ROLES] + [
            srv.token(iid, "interviewer", ttl=-5), srv.token("someone-else", "interviewer"),
            tokens.issue("other-secret", iid, "interviewer", 60), srv.token(iid, "interviewer", name="\u202e" * 3),
            srv.token(iid, "candidate", name="x" * 5000), "a.b", "." * 3, "é.é", "x" * 5000,
        ]))


@pytest.mark.slow
@FUZZ
@given(data=st.data())
async def test_http_routes_with_generated_requests(call, caplog, data):
    caplog.clear()
    caplog.set_level(logging.ERROR)
    srv, iid = call.srv, call.iid
    method, template = data.draw(st.sampled_from(ROUTES), label="route")
    method = data.draw(st.one_of(st.just(method), st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE"])))
    ids = st.one_of(st.just(iid), S.text.filter(bool).map(lambda t: t[:2000]), st.sampled_from(["..", "%2e%2e", "a" * 2000]))
    path = (template.replace("{id}", _quoted(data.draw(ids, label="id")))
            .replace("{event_id}", _quoted(data.draw(S.text, label="event_id")[:500] or "e"))
            .replace("{path}", quote(data.draw(st.sampled_from(["app.js", "../pyproject.toml", ".git/config",
                                                                 "node_modules/x", "x" * 300])), safe="/")))
    token = data.draw(_tokens(call), label="token")
    where = data.draw(st.sampled_from(["header", "query", "both"]), label="token in")
    headers = {}
    query = data.draw(st.dictionaries(st.sampled_from(["EIO", "transport", "sid", "t", "x"]), S.text, max_size=3))
    if token is not None and where in ("header", "both"):
        headers["Authorization"] = data.draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", ""])) + token
    if token is not None and where in ("query", "both"):
        query["token"] = token
    body = data.draw(st.one_of(st.none(), S.body), label="body")
    ctype = data.draw(st.sampled_from(["application/json", "text/plain", "application/octet-stream", None]))
    if ctype:
        headers["Content-Type"] = ctype
    # what a client can put in a header: no control characters, under aiohttp's 8 KiB limit per line
    headers = {k: _header_value(v) for k, v in headers.items()}
    # (kept under aiohttp's 8 KiB request line: past it its parser answers a plain-text 400 before any route)
    query = {k: v[:300].encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in query.items()}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, srv.url + path, params=query, headers=headers, data=body,
                             allow_redirects=False) as r:
            payload = await r.read()
            said = (method, path[:200], r.status, payload[:300])
            assert r.status < 500 or (r.status == 503 and b"not available" in payload), said
            if path.startswith("/api/") and r.status >= 400:
                assert r.headers["Content-Type"].startswith("application/json"), said
                assert "error" in json.loads(payload)
    if await srv.store.get_interview(iid) is None:
        await call.renew()  # a fuzzed DELETE went through: go on with a new interview
    await call.alive()
    assert errors(caplog) == [], ([e[:300] for e in errors(caplog)], method, path[:200], (body or b"")[:200])


def test_odd_text_covers_what_the_generators_promise():
    assert any(t and len(t) > 64 * 1024 for t in ODD_TEXT) and "\ud800" in ODD_TEXT and "\x00" in ODD_TEXT


async def test_known_bad_http_bodies_are_400_naming_the_field(call, caplog):
    """Text no database stores (a lone surrogate, valid as a JSON escape; a key starting with $) is refused
    before the store sees it (it was a 500 from the BSON encoder)."""
    caplog.set_level(logging.ERROR)
    srv, iid = call.srv, call.iid
    cases = [
        ("POST", "/api/interviews", {"candidate_name": "Cory \ud800", "interviewer_email": "i@example.com"},
         "candidate_name must be valid Unicode"),
        ("POST", "/api/interviews", {"candidate_name": "Cory", "interviewer_email": "i@example.com",
                                     "policy": {"rules": {"\udc00": {}}}}, "policy.rules key"),
        ("POST", "/api/interviews", {"candidate_name": "Cory", "interviewer_email": "i@example.com",
                                     "policy": {"$where": 1}}, "invalid key '$where'"),
        ("PATCH", f"/api/interviews/{iid}/events/e1", {"review": "confirmed", "note": "\udfff"},
         "note must be valid Unicode"),
    ]
    interviewer = {"Authorization": f"Bearer {srv.token(iid, 'interviewer')}", "Content-Type": "application/json"}
    operator = {**interviewer, "Authorization": f"Bearer {srv.settings.api_key}"}  # creating takes the operator key
    async with aiohttp.ClientSession() as s:
        for method, path, body, needle in cases:
            auth = operator if path == "/api/interviews" else interviewer
            async with s.request(method, srv.url + path, data=json.dumps(body), headers=auth) as r:
                got = await r.json()
                assert r.status == 400 and needle in got["error"], (path, r.status, got)
    assert errors(caplog) == []
