"""BotPeer against the real signaling server (`bot.app`, tokens, rooms, stored events), with a real aiortc
candidate sending student.mkv and english.wav, and an interviewer socket that sees what the bot sends (its chat
lines, its events as alerts)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from bot.analysis.events import LOOKING_AWAY, Event
from bot.live.peer import SNAPSHOT_LIMIT, BotPeer, fit_snapshot
from tests.support.candidate import ENGLISH_AUDIO, STUDENT_VIDEO, CandidatePeer
from tests.support.clients import Peer, Served, served
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@dataclass
class Room:
    """One interview on the real server, watched by its interviewer."""

    server: Served
    iid: str
    interviewer: Peer
    chats: list[dict[str, Any]]
    alerts: list[dict[str, Any]]

    def bot(self, **kwargs: Any) -> BotPeer:
        return BotPeer(self.server.url, self.server.token(self.iid, "bot"), **kwargs)

    def candidate(self, **kwargs: Any) -> CandidatePeer:
        return CandidatePeer(self.server.url, self.server.token(self.iid, "candidate"), STUDENT_VIDEO,
                             ENGLISH_AUDIO, **kwargs)


@pytest.fixture
async def room(settings: Any, store: Any) -> AsyncIterator[Room]:
    async with served(settings, store) as server:
        iid = await server.interview("Ada")
        interviewer = Peer()
        chats: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        interviewer.sio.on("chat", lambda m: chats.append(m))
        interviewer.sio.on("alert", lambda m: alerts.append(m))
        await interviewer.connect(server.url, server.token(iid, "interviewer"))
        try:
            yield Room(server, iid, interviewer, chats, alerts)
        finally:
            await interviewer.close()


async def until(condition: Any, timeout: float, what: str) -> None:
    assert await wait_for(condition, timeout), f"timed out after {timeout}s waiting for {what}"


def said(room: Room, text: str) -> bool:
    return any(c.get("from_role") == "bot" and c.get("text") == text for c in room.chats)


async def test_bot_receives_the_candidates_video_audio_and_page_events(room: Room) -> None:
    media: list[str] = []
    cand = room.candidate()
    await cand.start()
    started = time.monotonic()
    bot = room.bot(on_media=media.append, audio_chunk=0.5)
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

        assert cand.offers_received == 1 and cand.answers_sent == 1  # relayed both ways by the server
        assert bot.offers_sent == 1 and bot.reoffers == 0
        assert said(room, "Proctoring bot joined")
        print(
            f"\npeer: first frame {first_frame:.2f}s after bot start, offer->connected "
            f"{bot.connect_seconds[0]:.2f}s, {fps:.1f} fps received"
        )
    finally:
        await bot.stop()
        await cand.stop()
    await until(lambda: said(room, "Proctoring bot left"), 5, "goodbye")
    assert bot.video.closed and bot.audio.closed and not bot.sio.connected


async def test_bot_renegotiates_when_the_candidate_comes_back_with_a_new_sid(room: Room) -> None:
    first = room.candidate()
    await first.start()
    bot = room.bot()
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

        second = room.candidate()  # ... and joins again with a new sid
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
        third = room.candidate()
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


async def test_bot_offers_again_when_media_drops_or_no_answer_comes(room: Room) -> None:
    cand = room.candidate(ignore_offers=1)  # the page misses the first offer
    await cand.start()
    bot = room.bot(answer_timeout=2.0, retry_grace=0.5)
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


async def test_bot_sends_events_with_snapshots(room: Room) -> None:
    bot = room.bot()
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
        await until(lambda: len(room.alerts) == 2, 5, "the alerts")
        opened, closed = room.alerts
        assert opened["change"] == "opened" and opened["event"]["type"] == LOOKING_AWAY and opened["has_snapshot"]
        assert Event.from_dict(closed["event"]).duration == pytest.approx(4.5) and not closed["has_snapshot"]
        await until(lambda: bot.unacknowledged == 0, 5, "the server's acknowledgements")
        store = room.server.store
        for _ in range(100):  # written in the background, after the alert
            stored = await store.list_events(room.iid, snapshots=True)
            if stored and stored[0].end is not None:
                break
            await asyncio.sleep(0.05)
        assert [(e.id, e.end, e.snapshot) for e in stored] == [(event.id, 7.5, jpeg)]  # one event, as sent
    finally:
        await bot.stop()
    assert not await bot.send_event("updated", event.to_dict())  # the socket is away: kept, not lost
    assert bot.unacknowledged == 1


async def test_bot_survives_a_signaling_blip(room: Room) -> None:
    cand = room.candidate()
    await cand.start()
    bot = room.bot()
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
        await until(lambda: any(a["event"]["id"] == event.id for a in room.alerts), 5, "the resent event")
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
