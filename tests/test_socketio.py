"""The Socket.IO protocol with real python-socketio clients, a real aiohttp server and the real Store."""
from __future__ import annotations

import asyncio
import base64
import time

import pytest
import socketio

from bot.analysis.events import Event
from signaling import tokens
from tests.support.clients import Peer, http, outbox_mails, pdf_text, peers, served

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


@pytest.fixture
async def srv(settings, store):
    """The server with the real bot worker and reports (mail into ``settings.outbox``)."""
    async with served(settings, store, bots=True, reports=True) as s:
        yield s


async def join(made: list[Peer], srv, iid: str, role: str, name: str | None = None, **kw) -> Peer:
    p = Peer()
    made.append(p)
    await p.connect(srv.url, srv.token(iid, role, name=name), **kw)
    return p


def roles(participants: dict) -> list[str]:
    return sorted(p["role"] for p in participants["participants"])


async def wait_for(pred, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_alerts_reach_the_interviewer_only_and_are_stored(srv):
    iid = await srv.interview()
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        candidate = await join(made, srv, iid, "candidate", name="Cory")
        bot = await join(made, srv, iid, "bot", name="Proctor bot")
        got = await interviewer.until("participants", lambda d: len(d["participants"]) == 3)
        assert roles(got) == ["bot", "candidate", "interviewer"]
        assert {"sid": candidate.sid, "role": "candidate", "name": "Cory"} in got["participants"]
        await candidate.until("participants", lambda d: len(d["participants"]) == 3)

        ev = Event(type="looking_away", start=12.5, end=None, confidence=0.9, detail={"yaw": 44.0})
        await bot.sio.emit("bot_event", {"change": "opened", "event": ev.to_dict(),
                                         "snapshot_b64": base64.b64encode(JPEG).decode()})
        alert = await interviewer.next("alert")
        assert alert["change"] == "opened" and alert["has_snapshot"] is True
        assert alert["event"]["id"] == ev.id and alert["event"]["type"] == "looking_away"
        assert alert["event"]["interview_id"] == iid and "snapshot" not in alert["event"]
        assert await candidate.nothing("alert", within=0.7)
        assert await bot.nothing("alert", within=0.01)

        stored = await wait_for(lambda: srv.store.list_events(iid))
        assert [e.id for e in stored] == [ev.id] and stored[0].end is None
        assert await srv.store.get_snapshot(iid, ev.id) == JPEG

        # the close of the same event updates it in place, and keeps the snapshot
        ev.end = 20.0
        await bot.sio.emit("bot_event", {"change": "closed", "event": ev.to_dict()})
        alert = await interviewer.next("alert")
        assert alert["change"] == "closed" and alert["event"]["end"] == 20.0 and alert["has_snapshot"] is False

        async def closed():
            events = await srv.store.list_events(iid)
            return events if events and events[0].end == 20.0 else None
        (stored,) = await wait_for(closed)
        assert stored.id == ev.id and await srv.store.get_snapshot(iid, ev.id) == JPEG
        assert await candidate.nothing("alert", within=0.3)

        # only the bot may send bot_event
        fake = Event(type="face_missing", start=1.0, end=None, confidence=1.0)
        for sender in (candidate, interviewer):
            await sender.sio.emit("bot_event", {"change": "opened", "event": fake.to_dict()})
            err = await sender.next("error")
            assert err == {"error": "only the bot may send bot_event", "for": "bot_event"}
        assert await interviewer.nothing("alert", within=0.3)
        assert [e.id for e in await srv.store.list_events(iid)] == [ev.id]


async def test_bot_events_are_stored_in_order(srv):
    iid = await srv.interview()
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        bot = await join(made, srv, iid, "bot")
        ev = Event(type="background_voice", start=1.0, end=None, confidence=0.6)
        for i in range(1, 21):  # opened, 18 updates, closed, back to back
            ev.end = None if i < 20 else 30.0
            ev.confidence = i / 20
            change = "opened" if i == 1 else "closed" if i == 20 else "updated"
            await bot.sio.emit("bot_event", {"change": change, "event": ev.to_dict()})
        alerts = [await interviewer.next("alert") for _ in range(20)]
        assert [a["event"]["confidence"] for a in alerts] == [i / 20 for i in range(1, 21)]

        async def final():
            events = await srv.store.list_events(iid)
            return events if events and events[0].end == 30.0 else None
        (stored,) = await wait_for(final)
        await asyncio.sleep(0.3)
        (stored,) = await srv.store.list_events(iid)
        assert stored.end == 30.0 and stored.confidence == 1.0


async def test_signal_relay_stays_inside_the_interview(srv):
    a, b = await srv.interview("A"), await srv.interview("B")
    async with peers() as made:
        interviewer = await join(made, srv, a, "interviewer")
        candidate = await join(made, srv, a, "candidate")
        stranger = await join(made, srv, b, "candidate")
        stranger_iv = await join(made, srv, b, "interviewer")

        offer = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}
        await interviewer.sio.emit("signal", {"to": candidate.sid, "kind": "offer", "data": offer})
        got = await candidate.next("signal")
        assert got == {"from": interviewer.sid, "role": "interviewer", "kind": "offer", "data": offer}
        await candidate.sio.emit("signal", {"to": interviewer.sid, "kind": "answer", "data": {"type": "answer", "sdp": "x"}})
        got = await interviewer.next("signal")
        assert got["from"] == candidate.sid and got["role"] == "candidate" and got["kind"] == "answer"

        # across interviews, to nobody, to oneself: an error, nothing delivered
        for to in (stranger.sid, "no-such-sid", interviewer.sid):
            await interviewer.sio.emit("signal", {"to": to, "kind": "offer", "data": offer})
            err = await interviewer.next("error")
            assert err["for"] == "signal" and "unknown recipient" in err["error"]
        assert await stranger.nothing("signal", within=0.3)
        assert await interviewer.nothing("signal", within=0.01)

        # chat goes to the room of its interview only
        await candidate.sio.emit("chat", {"text": "  can you hear me?  "})
        for peer in (interviewer, candidate):
            msg = await peer.next("chat")
            assert msg["from_role"] == "candidate" and msg["name"] == "A"  # from the interview record
            assert msg["text"] == "can you hear me?" and abs(msg["at"] - time.time()) < 5
        assert await stranger.nothing("chat", within=0.3) and await stranger_iv.nothing("chat", within=0.01)
        # participants lists never mix interviews
        got = await stranger_iv.until("participants", lambda d: len(d["participants"]) == 2)
        assert {p["sid"] for p in got["participants"]} == {stranger.sid, stranger_iv.sid}


async def test_alerts_do_not_cross_interviews(srv):
    a, b = await srv.interview("A"), await srv.interview("B")
    async with peers() as made:
        iv_a = await join(made, srv, a, "interviewer")
        iv_b = await join(made, srv, b, "interviewer")
        bot_a = await join(made, srv, a, "bot")
        ev = Event(type="face_missing", start=3.0, end=None, confidence=1.0)
        ev.interview_id = b  # a claim in the message does not choose the interview
        await bot_a.sio.emit("bot_event", {"change": "opened", "event": ev.to_dict()})
        alert = await iv_a.next("alert")
        assert alert["event"]["interview_id"] == a
        assert await iv_b.nothing("alert", within=0.5)
        await wait_for(lambda: srv.store.list_events(a))
        assert await srv.store.list_events(b) == []


async def test_page_events_go_to_the_bot_with_time_and_start_the_interview(srv):
    iid = await srv.interview()
    assert (await srv.store.get_interview(iid))["started_at"] is None
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        bot = await join(made, srv, iid, "bot")
        before = time.time()
        candidate = await join(made, srv, iid, "candidate")
        # stored before the candidate's connect was acknowledged: a bot invited at once reads the call's clock
        iv = await srv.store.get_interview(iid)
        assert iv["started_at"] is not None and iv["status"] == "live"

        await asyncio.sleep(0.3)
        await candidate.sio.emit("page_event", {"kind": "tab_hidden", "active": True})
        got = await bot.next("page_event")
        assert got["kind"] == "tab_hidden" and got["active"] is True
        assert 0.25 <= got["t"] <= time.time() - before + 0.1
        assert await interviewer.nothing("page_event", within=0.3)

        for sender in (interviewer, bot):
            await sender.sio.emit("page_event", {"kind": "window_blur", "active": False})
            err = await sender.next("error")
            assert err == {"error": "only the candidate may send page_event", "for": "page_event"}
        await candidate.sio.emit("page_event", {"kind": "devtools", "active": True})
        assert "page_event.kind" in (await candidate.next("error"))["error"]
        assert await bot.nothing("page_event", within=0.3)

        # a reconnecting candidate does not restart the clock
        first_start = iv["started_at"]
        await candidate.close()
        candidate2 = await join(made, srv, iid, "candidate")
        await asyncio.sleep(0.3)
        assert (await srv.store.get_interview(iid))["started_at"] == first_start
        await candidate2.sio.emit("page_event", {"kind": "window_blur", "active": False})
        assert (await bot.next("page_event"))["t"] >= got["t"]


async def test_reconnecting_candidate_replaces_the_old_socket(srv):
    iid = await srv.interview()
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        old = await join(made, srv, iid, "candidate")
        await interviewer.until("participants", lambda d: roles(d) == ["candidate", "interviewer"])
        new = await join(made, srv, iid, "candidate")
        await asyncio.wait_for(old.disconnected.wait(), 3)
        got = await interviewer.until(
            "participants", lambda d: [p["sid"] for p in d["participants"] if p["role"] == "candidate"] == [new.sid])
        assert roles(got) == ["candidate", "interviewer"]
        # the newcomer got the list too
        got = await new.until("participants", lambda d: len(d["participants"]) == 2)
        assert {p["sid"] for p in got["participants"]} == {interviewer.sid, new.sid}
        # and a second bot replaces the first
        bot1 = await join(made, srv, iid, "bot")
        bot2 = await join(made, srv, iid, "bot")
        await asyncio.wait_for(bot1.disconnected.wait(), 3)
        got = await interviewer.until(
            "participants", lambda d: [p["sid"] for p in d["participants"] if p["role"] == "bot"] == [bot2.sid])
        assert roles(got) == ["bot", "candidate", "interviewer"]


async def test_bad_tokens_are_refused(srv):
    iid = await srv.interview()
    other_secret = tokens.issue("another-secret", iid, "interviewer", 60)
    cases = [
        (None, "missing token"),
        ("", "missing token"),
        ("nonsense", "invalid token: malformed"),
        (other_secret, "invalid token: bad signature"),
        (srv.token(iid, "interviewer", ttl=-1), "invalid token: expired"),
        (srv.token("no-such-interview", "interviewer"), "unknown interview"),
    ]
    for tok, reason in cases:
        p = Peer()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await p.connect(srv.url, tok)
        assert reason in p.refusal, (tok, p.refusals)
        assert not p.sio.connected
    # a non-dict auth is refused too
    p = Peer()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await p.sio.connect(srv.url, auth=lambda: ["a", "list"], transports=["websocket"], wait_timeout=5)
    assert p.refusal == "missing token"
    # and the server still serves
    async with peers() as made:
        ok = await join(made, srv, iid, "interviewer")
        assert ok.sio.connected


async def test_after_end_candidate_and_bot_cannot_join(srv):
    iid = await srv.interview()
    auth = {"Authorization": f"Bearer {srv.token(iid, 'interviewer')}"}
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        await join(made, srv, iid, "candidate")
        status, _, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot", headers=auth)
        assert status == 202
        got = await interviewer.until("participants", lambda d: roles(d) == ["bot", "candidate", "interviewer"],
                                      timeout=15)
        bot_sid = next(p["sid"] for p in got["participants"] if p["role"] == "bot")
        assert bot_sid == srv.bots.sessions[iid].peer.sid
        hello = await interviewer.until("chat", lambda m: m["from_role"] == "bot")
        assert hello["text"] == "Proctoring bot joined"

        status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end", headers=auth)
        assert status == 200 and data["events"] == 0
        # the real bot says goodbye and leaves the call; the people stay until they hang up
        bye = await interviewer.until("chat", lambda m: m["from_role"] == "bot")
        assert bye["text"] == "Proctoring bot left"
        await interviewer.until("participants", lambda d: roles(d) == ["candidate", "interviewer"], timeout=10)
        assert not srv.bots.running(iid) and srv.bots.sessions == {}
    # and the report went to the interviewer
    (mail,) = outbox_mails(srv.settings)
    (attachment,) = mail.iter_attachments()
    assert "Cory Candidate" in pdf_text(attachment.get_content())
    for role in ("candidate", "bot"):
        p = Peer()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await p.connect(srv.url, srv.token(iid, role))
        assert p.refusal == "the interview has ended"
    async with peers() as made:
        assert (await join(made, srv, iid, "interviewer")).sio.connected  # may still look around


async def test_delete_disconnects_everyone(srv):
    iid = await srv.interview()
    async with peers() as made:
        candidate = await join(made, srv, iid, "candidate")
        interviewer = await join(made, srv, iid, "interviewer")
        status, _, _ = await http("DELETE", f"{srv.url}/api/interviews/{iid}",
                                  headers={"Authorization": f"Bearer {srv.token(iid, 'interviewer')}"})
        assert status == 200
        await asyncio.wait_for(candidate.disconnected.wait(), 3)
        await asyncio.wait_for(interviewer.disconnected.wait(), 3)
        p = Peer()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await p.connect(srv.url, srv.token(iid, "candidate"))
        assert p.refusal == "unknown interview"


async def test_malformed_oversized_and_flooding_messages_get_errors(srv):
    iid = await srv.interview()
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        candidate = await join(made, srv, iid, "candidate")
        bot = await join(made, srv, iid, "bot")
        await interviewer.until("participants", lambda d: len(d["participants"]) == 3)

        bad = [
            ("signal", "not an object", "signal must be a JSON object"),
            ("signal", [1, 2], "signal must be a JSON object"),
            ("signal", {"to": bot.sid, "kind": "shout", "data": {}}, "signal.kind"),
            ("signal", {"to": bot.sid, "kind": "offer", "data": {"sdp": "x" * (70 * 1024)}}, "too large"),
            ("chat", {"text": "x" * 501}, "longer than 500"),
            ("chat", {"text": 5}, "chat.text must be a string"),
            ("chat", {"text": "hi", "pad": "y" * (65 * 1024)}, "too large"),
            ("hello", {"x": 1}, "unknown event 'hello'"),
        ]
        for event, payload, needle in bad:
            await candidate.sio.emit(event, payload)
            err = await candidate.next("error")
            assert err["for"] == event and needle in err["error"], (event, err)
        # no argument / two arguments
        await candidate.sio.emit("chat")
        assert "exactly one" in (await candidate.next("error"))["error"]
        await candidate.sio.emit("chat", ({"text": "a"}, {"text": "b"}))
        assert "exactly one" in (await candidate.next("error"))["error"]
        # bot_event: large snapshots are fine, past 512 KiB is not
        ev = Event(type="suspicious_object", start=5.0, end=None, confidence=0.7, detail={"label": "cell phone"})
        big = base64.b64encode(JPEG + b"\x00" * (300 * 1024)).decode()
        await bot.sio.emit("bot_event", {"change": "opened", "event": ev.to_dict(), "snapshot_b64": big})
        assert (await interviewer.next("alert"))["event"]["id"] == ev.id
        huge = base64.b64encode(JPEG + b"\x00" * (600 * 1024)).decode()
        await bot.sio.emit("bot_event", {"change": "updated", "event": ev.to_dict(), "snapshot_b64": huge})
        assert "too large" in (await bot.next("error"))["error"]
        await bot.sio.emit("bot_event", {"change": "opened", "event": {**ev.to_dict(), "start": "soon"}})
        assert "bot_event.event.start" in (await bot.next("error"))["error"]
        assert await interviewer.nothing("alert", within=0.3)
        assert await candidate.nothing("chat", within=0.01)  # nothing bad was relayed

        # a chat flood (from a socket that has not chatted yet): the first few pass, then
        # rate-limit errors (themselves capped), and no disconnect
        for i in range(200):
            await interviewer.sio.emit("chat", {"text": f"spam {i}"})
        await asyncio.sleep(1.0)
        delivered = candidate.drain("chat")
        errors = interviewer.drain("error")
        assert 5 <= len(delivered) <= 7, len(delivered)
        assert [m["text"] for m in delivered[:5]] == [f"spam {i}" for i in range(5)]
        assert errors and all(e["for"] == "chat" and "too many chat messages" in e["error"] for e in errors)
        assert len(errors) <= 20  # replies to a flood are rate-limited too
        assert interviewer.sio.connected
        # the invalid chats above count against the candidate's own bucket, not anyone else's
        candidate.drain("error")

        # everyone keeps being served: signaling and alerts still work, and chat again after a pause
        await interviewer.sio.emit("signal", {"to": candidate.sid, "kind": "offer", "data": {"type": "offer", "sdp": ""}})
        assert (await candidate.next("signal"))["from"] == interviewer.sid
        ev2 = Event(type="eyes_closed", start=9.0, end=None, confidence=0.5)
        await bot.sio.emit("bot_event", {"change": "opened", "event": ev2.to_dict()})
        assert (await interviewer.next("alert"))["event"]["id"] == ev2.id
        await asyncio.sleep(1.1)
        await interviewer.sio.emit("chat", {"text": "sorry"})
        assert (await candidate.until("chat", lambda m: m["text"] == "sorry"))["from_role"] == "interviewer"


async def test_polling_transport_and_transport_limit(srv):
    """Long-polling works too; a packet past the transport limit drops only its sender."""
    iid = await srv.interview()
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer", transports=["polling"])
        bot = await join(made, srv, iid, "bot", transports=["polling"])
        ev = Event(type="camera_blocked", start=2.0, end=None, confidence=1.0)
        big = base64.b64encode(JPEG + b"\x00" * (200 * 1024)).decode()
        await bot.sio.emit("bot_event", {"change": "opened", "event": ev.to_dict(), "snapshot_b64": big})
        assert (await interviewer.next("alert", timeout=5))["has_snapshot"] is True

        rogue = await join(made, srv, iid, "candidate")
        await rogue.sio.emit("chat", {"text": "z" * (2 * 1024 * 1024)})
        await asyncio.wait_for(rogue.disconnected.wait(), 5)
        await interviewer.until("participants", lambda d: roles(d) == ["bot", "interviewer"], timeout=5)
        await bot.sio.emit("chat", {"text": "still here"})
        assert (await interviewer.until("chat", lambda m: m["text"] == "still here", timeout=5))["from_role"] == "bot"


class SlowStore:
    """The real store, with interview lookups slowed down (a busy database)."""

    def __init__(self, store, delay: float) -> None:
        self._store, self._delay = store, delay

    async def get_interview(self, iid):
        await asyncio.sleep(self._delay)
        return await self._store.get_interview(iid)

    def __getattr__(self, name):
        return getattr(self._store, name)


async def test_socket_gone_while_connecting_leaves_no_ghost(settings, store):
    import json

    import aiohttp

    from signaling import api

    async with served(settings, SlowStore(store, 0.5)) as srv:
        iid = await srv.interview()
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(srv.url + "/socket.io/?EIO=4&transport=websocket")
            opened = await ws.receive_str()
            assert opened.startswith("0{")
            await ws.send_str("40" + json.dumps({"token": srv.token(iid, "candidate")}))
            await asyncio.sleep(0.1)
            await ws.close()  # gone while the server looks the interview up
        await asyncio.sleep(1.0)
        hub = srv.app.application[api.HUB]
        assert hub.rooms.participants(iid) == []
        # and a real client still gets in
        async with peers() as made:
            p = await join(made, srv, iid, "candidate")
            got = await p.until("participants", lambda d: len(d["participants"]) == 1)
            assert got["participants"][0]["sid"] == p.sid


async def test_the_bots_heartbeat_reaches_the_interviewer_and_its_coverage_is_kept(srv):
    """bot_state: relayed to the interviewer's page as bot_status, never to the candidate; what the bot analysed
    is kept per bot instance for the report's coverage; the first bot's arrival time is the end of the
    "not invited yet" gap; a malformed heartbeat is an error naming the field."""
    iid = await srv.interview()
    async with peers() as made:
        interviewer = await join(made, srv, iid, "interviewer")
        candidate = await join(made, srv, iid, "candidate")
        bot = Peer()
        made.append(bot)
        await bot.connect(srv.url, srv.token(iid, "bot"), auth_extra={"instance": "inst-1"})
        state = {"state": "analysing", "face_fps": 4.8, "samples": {"faces": 240, "objects": 48, "camera": 96},
                 "audio_seconds": 48.0, "since": 3.0}
        await bot.sio.emit("bot_state", state)
        got = await interviewer.next("bot_status", 3)
        assert got["state"] == "analysing" and got["face_fps"] == 4.8
        assert await candidate.nothing("bot_status", within=0.3)

        async def kept():
            iv = await srv.store.get_interview(iid)
            return iv if iv and (iv.get("bot_coverage") or {}).get("inst-1") else None
        stored = await wait_for(kept)
        assert stored["bot_coverage"]["inst-1"]["samples"]["faces"] == 240 and stored["bot_first_at"] >= 0

        await bot.sio.emit("bot_state", {**state, "samples": {"faces": -1}})
        err = await bot.next("error")
        assert err["for"] == "bot_state" and "bot_state.samples.faces" in err["error"]
        await candidate.sio.emit("bot_state", state)
        assert (await candidate.next("error"))["error"] == "only the bot may send bot_state"
