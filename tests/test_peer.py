"""BotPeer with a real aiortc candidate sending student.mkv and english.wav.

The last test runs against the real `signaling/server.py` (tokens, rooms, stored events).
The others use `Relay`, a database-free Socket.IO relay that implements the part of the
protocol in docs/architecture.md the bot uses (and lets a test record every message): ``participants`` on every join/leave
(one candidate and one bot socket per interview, a newcomer replaces the old one),
``signal`` relayed as ``{from, role, kind, data}``, ``page_event`` relayed to the bot
with ``t``, ``bot_event`` stored and relayed as ``alert``, ``chat``. Its tokens are
plain ``role:name:interview`` strings.
"""
from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import cv2
import numpy as np
import pytest
import socketio
from aiohttp import web

from bot.events import LOOKING_AWAY, Event
from bot.peer import SNAPSHOT_LIMIT, BotPeer, fit_snapshot
from tests.candidate_peer import ENGLISH_AUDIO, STUDENT_VIDEO, CandidatePeer

pytestmark = pytest.mark.slow

SINGLE_ROLES = ("candidate", "bot")


class Relay:
    def __init__(self) -> None:
        self.sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        self.app = web.Application()
        self.sio.attach(self.app)
        self.members: dict[str, dict[str, str]] = {}  # sid -> {sid, role, name, iid}
        self.bot_events: list[dict[str, Any]] = []
        self.chats: list[dict[str, Any]] = []
        self.signals: list[tuple[str, str]] = []  # (role of sender, kind)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        self.sio.on("signal", self.signal)
        self.sio.on("page_event", self.page_event)
        self.sio.on("bot_event", self.bot_event)
        self.sio.on("chat", self.chat)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for sid in list(self.members):
            await self.sio.disconnect(sid)
        if self._runner is not None:
            await self._runner.cleanup()

    async def connect(self, sid: str, environ: dict, auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        parts = token.split(":") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] not in ("interviewer", "candidate", "bot"):
            raise socketio.exceptions.ConnectionRefusedError("bad token")
        role, name, iid = parts
        for other in [m for m in self.members.values() if m["iid"] == iid and m["role"] == role]:
            if role in SINGLE_ROLES:  # the newcomer replaces the old socket
                self.members.pop(other["sid"], None)
                await self.sio.disconnect(other["sid"])
        self.members[sid] = {"sid": sid, "role": role, "name": name, "iid": iid}
        await self.sio.enter_room(sid, f"iv:{iid}")
        self.sio.start_background_task(self.announce, iid)

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        member = self.members.pop(sid, None)
        if member is not None:
            await self.announce(member["iid"])

    async def announce(self, iid: str) -> None:
        people = [{k: m[k] for k in ("sid", "role", "name")} for m in self.members.values() if m["iid"] == iid]
        await self.sio.emit("participants", {"participants": people}, room=f"iv:{iid}")

    async def signal(self, sid: str, data: dict[str, Any]) -> None:
        sender, target = self.members.get(sid), self.members.get(data.get("to", ""))
        if sender is None or target is None or sender["iid"] != target["iid"]:
            await self.sio.emit("error", {"error": "unknown participant", "for": "signal"}, to=sid)
            return
        self.signals.append((sender["role"], data["kind"]))
        message = {"from": sid, "role": sender["role"], "kind": data["kind"], "data": data.get("data")}
        await self.sio.emit("signal", message, to=target["sid"])

    async def page_event(self, sid: str, data: dict[str, Any]) -> None:
        sender = self.members.get(sid)
        if sender is None or sender["role"] != "candidate":
            return
        message = {"kind": data["kind"], "active": bool(data["active"]), "t": time.time()}
        for bot in [m for m in self.members.values() if m["iid"] == sender["iid"] and m["role"] == "bot"]:
            await self.sio.emit("page_event", message, to=bot["sid"])

    async def bot_event(self, sid: str, data: dict[str, Any]) -> None:
        self.bot_events.append(data)

    async def chat(self, sid: str, data: dict[str, Any]) -> None:
        sender = self.members.get(sid)
        if sender is not None:
            self.chats.append({"from_role": sender["role"], "text": data["text"]})


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    relay = Relay()
    await relay.start()
    yield relay
    await relay.stop()


async def until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def candidate(relay: Relay, **kwargs: Any) -> CandidatePeer:
    return CandidatePeer(relay.url, "candidate:Ada:iv1", STUDENT_VIDEO, ENGLISH_AUDIO, **kwargs)


async def test_bot_receives_the_candidates_video_audio_and_page_events(relay: Relay) -> None:
    media: list[str] = []
    cand = candidate(relay)
    await cand.start()
    started = time.monotonic()
    bot = BotPeer(relay.url, "bot:Proctor:iv1", on_media=media.append, audio_chunk=0.5)
    await bot.start()
    try:
        await until(lambda: bot.video is not None and bot.video.latest_t is not None, 15, "a video frame")
        first_frame = time.monotonic() - started
        assert bot.candidate_sid == cand.sid
        assert sorted(media) == ["audio", "video"]
        frame = await bot.video.next(timeout=5)
        assert frame is not None and (frame.width, frame.height) == (640, 480)
        assert frame.image.std() > 20
        chunk = await bot.audio.next(timeout=5)
        assert chunk is not None and len(chunk.samples) == 8000 and chunk.sample_rate == 16000
        loudest = -200.0
        for _ in range(6):  # english.wav loops: speech at about -21 dBFS within 3 s
            chunk = await bot.audio.next(timeout=5)
            assert chunk is not None
            loudest = max(loudest, 20 * np.log10(np.sqrt(np.mean(chunk.samples**2)) + 1e-12))
        assert loudest > -30

        received = bot.video.frames_received
        await asyncio.sleep(2.0)
        fps = (bot.video.frames_received - received) / 2.0
        assert fps > 15, fps

        await cand.send_page_event("tab_hidden", True)
        await cand.send_page_event("tab_hidden", False)
        await until(lambda: bot.page_events.qsize() >= 2, 5, "page events")
        events = bot.take_page_observations()
        assert [(e.kind, e.active) for e in events] == [("tab_hidden", True), ("tab_hidden", False)]
        assert abs(events[0].t - bot.clock()) < 2
        assert [(o.kind, o.active) for o in bot.take_page_observations()] == []

        assert ("bot", "offer") in relay.signals and ("candidate", "answer") in relay.signals
        assert bot.offers_sent == 1 and bot.reoffers == 0
        assert {"from_role": "bot", "text": "Proctoring bot joined"} in relay.chats
        print(
            f"\npeer: first frame {first_frame:.2f}s after bot start, offer->connected "
            f"{bot.connect_seconds[0]:.2f}s, {fps:.1f} fps received"
        )
    finally:
        await bot.stop()
        await cand.stop()
    await until(lambda: {"from_role": "bot", "text": "Proctoring bot left"} in relay.chats, 5, "goodbye")
    assert bot.video.closed and bot.audio.closed and not bot.sio.connected


async def test_bot_renegotiates_when_the_candidate_comes_back_with_a_new_sid(relay: Relay) -> None:
    first = candidate(relay)
    await first.start()
    bot = BotPeer(relay.url, "bot:Proctor:iv1")
    await bot.start()
    second = third = None
    try:
        await until(lambda: bot.video is not None and bot.video.latest_t is not None, 15, "first frames")
        video = bot.video
        old_sid = first.sid

        await first.stop()  # the candidate's page reloads: it leaves ...
        await until(lambda: bot.session is None, 5, "the old session to close")
        await asyncio.sleep(1.0)
        assert video.silent_for() > 0.8
        assert video.observation().kind == "video"

        second = candidate(relay)  # ... and joins again with a new sid
        await second.start()
        assert second.sid != old_sid
        before = video.frames_received
        after_t = video.latest_t
        frame = await video.next(after_t=after_t, timeout=15)
        assert frame is not None and (frame.width, frame.height) == (640, 480)
        assert bot.video is video  # the pipeline keeps the same reader
        assert bot.candidate_sid == second.sid
        await asyncio.sleep(1.0)
        assert video.frames_received - before > 15
        assert video.silent_for() < 0.5
        assert bot.offers_sent == 2

        # a new tab joins while the old socket is still there: the server replaces it
        third = candidate(relay)
        await third.start()
        await until(lambda: bot.candidate_sid == third.sid and bot.media_connected, 15, "the third candidate")
        t = video.latest_t
        assert await video.next(after_t=t, timeout=10) is not None
        assert bot.offers_sent == 3 and third.answers_sent == 1
    finally:
        await bot.stop()
        for cand in (first, second, third):
            if cand is not None:
                await cand.stop()


async def test_bot_offers_again_when_media_drops_or_no_answer_comes(relay: Relay) -> None:
    cand = candidate(relay, ignore_offers=1)  # the page misses the first offer
    await cand.start()
    bot = BotPeer(relay.url, "bot:Proctor:iv1", answer_timeout=2.0, retry_grace=0.5)
    await bot.start()
    try:
        await until(lambda: bot.video is not None and bot.video.latest_t is not None, 15, "frames")
        assert cand.offers_received == 2 and bot.reoffers == 1

        await cand.close_peer_connections()  # media cut while the socket stays
        await until(lambda: bot.reoffers == 2, 10, "a new offer after the cut")
        t = bot.video.latest_t
        frame = await bot.video.next(after_t=t, timeout=15)
        assert frame is not None
        assert cand.answers_sent == 2 and bot.media_connected
    finally:
        await bot.stop()
        await cand.stop()


async def test_bot_sends_events_with_snapshots(relay: Relay) -> None:
    bot = BotPeer(relay.url, "bot:Proctor:iv1")
    await bot.start()
    try:
        capture = cv2.VideoCapture(str(STUDENT_VIDEO))
        ok, image = capture.read()
        capture.release()
        assert ok
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        event = Event(type=LOOKING_AWAY, start=3.0, end=None, confidence=0.8, detail={"yaw": 41.0})
        assert await bot.send_event("opened", event.to_dict(), jpeg)
        event.end = 7.5
        assert await bot.send_event("closed", event.to_dict())
        await until(lambda: len(relay.bot_events) == 2, 5, "bot events")
        opened, closed = relay.bot_events
        assert opened["change"] == "opened" and opened["event"]["type"] == LOOKING_AWAY
        assert base64.b64decode(opened["snapshot_b64"]) == jpeg
        assert Event.from_dict(closed["event"]).duration == pytest.approx(4.5)
        assert "snapshot_b64" not in closed
        await until(lambda: bot.unacknowledged == 0, 5, "the server's acknowledgements")
    finally:
        await bot.stop()
    assert not await bot.send_event("updated", event.to_dict())  # the socket is away: kept, not lost
    assert bot.unacknowledged == 1


async def test_bot_survives_a_signaling_blip(relay: Relay) -> None:
    cand = candidate(relay)
    await cand.start()
    bot = BotPeer(relay.url, "bot:Proctor:iv1")
    await bot.start()
    try:
        await until(lambda: bot.video is not None and bot.video.latest_t is not None, 15, "frames")
        old_sid = bot.sid
        await bot.sio.eio.ws.close()  # the bot's transport drops (not a clean leave)
        await until(lambda: not bot.sio.connected, 5, "the drop to be noticed")
        event = Event(type=LOOKING_AWAY, start=1.0, end=None, confidence=0.9)
        assert not await bot.send_event("opened", event.to_dict())  # during the gap
        await until(lambda: bot.sio.connected, 15, "the socket to reconnect")
        assert bot.sid != old_sid
        await until(lambda: any(e["event"]["id"] == event.id for e in relay.bot_events), 5, "the resent event")
        await until(lambda: bot.unacknowledged == 0, 5, "the acknowledgement")
        # the candidate's page dropped the pc of our old sid: the bot offers again as its new sid
        await until(lambda: bot.offers_sent == 2 and bot.media_connected, 15, "a new session")
        t = bot.video.latest_t
        assert await bot.video.next(after_t=t, timeout=10) is not None
        assert set(cand.pcs) == {bot.sid}
    finally:
        await bot.stop()
        await cand.stop()


async def test_an_oversized_snapshot_is_reencoded_under_the_server_limit() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    big = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    assert len(big) > SNAPSHOT_LIMIT
    small = await fit_snapshot(big)
    assert small is not None and len(small) <= SNAPSHOT_LIMIT
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR) is not None
    assert await fit_snapshot(b"\xff\xd8small") == b"\xff\xd8small"


async def test_bot_against_the_real_signaling_server(settings: Any, store: Any) -> None:
    """The same flow through signaling/server.py: real tokens, rooms, relay and event storage."""
    from tests.signaling_support import running

    async with running(settings, store) as server:
        iid = await server.interview()
        first = CandidatePeer(server.url, server.token(iid, "candidate"), STUDENT_VIDEO, ENGLISH_AUDIO)
        await first.start()
        bot = BotPeer(server.url, server.token(iid, "bot"))
        await bot.start()
        second = None
        try:
            await until(lambda: bot.video is not None and bot.video.latest_t is not None, 15, "frames")
            frame = await bot.video.next(timeout=5)
            assert frame is not None and (frame.width, frame.height) == (640, 480)
            assert await bot.audio.next(timeout=5) is not None

            await first.send_page_event("window_blur", True)
            await until(lambda: bot.page_events.qsize() >= 1, 5, "a page event")
            assert [(o.kind, o.active) for o in bot.take_page_observations()] == [("window_blur", True)]

            jpeg = cv2.imencode(".jpg", frame.image)[1].tobytes()
            event = Event(type=LOOKING_AWAY, start=max(0.0, frame.t), end=None, confidence=0.7)
            assert await bot.send_event("opened", event.to_dict(), jpeg)
            await until(lambda: bot.unacknowledged == 0, 5, "the acknowledgement")
            for _ in range(100):
                if await store.get_snapshot(iid, event.id) is not None:
                    break
                await asyncio.sleep(0.05)
            assert await store.get_snapshot(iid, event.id) == jpeg

            second = CandidatePeer(server.url, server.token(iid, "candidate"), STUDENT_VIDEO, ENGLISH_AUDIO)
            await second.start()  # a reload: the server replaces the old candidate socket
            await until(lambda: bot.candidate_sid == second.sid and bot.media_connected, 15, "the new candidate")
            t = bot.video.latest_t
            assert await bot.video.next(after_t=t, timeout=10) is not None
            assert not bot.errors, list(bot.errors)
        finally:
            await bot.stop()
            for cand in (first, second):
                if cand is not None:
                    await cand.stop()
