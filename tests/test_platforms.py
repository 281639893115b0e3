"""The bot in interviews held on another platform, end to end on real parts: the real app (`bot.app`, the bot in
this process), an interview created through `POST /api/interviews` with a `room`, the interviewer's Socket.IO
client with the token of the monitor page, and

- Debian's Janus (`tests.support.janus_server`), where the candidate publishes real media with aiortc
  (`tests.support.janus_publisher`) into a pin-protected VideoRoom;
- a WHEP endpoint built for the test over aiortc (`tests.support.whep_endpoint`): there is no WHEP server
  package here (no MediaMTX, SRS, ...), so it plays the shared media as a media server plays a published stream.

The empty-room clip makes the bot raise `face_missing`, which reaches the interviewer's socket and is stored;
the candidate republishes (Janus) or the stream restarts (WHEP) and the bot follows.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.conferencing import BOT_DISPLAY_NAME
from tests.support.candidate import ENGLISH_AUDIO, STUDENT_VIDEO
from tests.support.clients import Listener, Served, http, served
from tests.support.janus_publisher import JanusPublisher, room_participants
from tests.support.janus_server import PIN, ROOM, JanusServer, janus_executable
from tests.support.paths import MEDIA
from tests.support.waiting import wait_for
from tests.support.whep_endpoint import WhepEndpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

EMPTY_ROOM = MEDIA / "video" / "one-by-one-person-detection.mp4"  # no one in the first seconds: face_missing
CANDIDATE = "Alice Candidate"
BEARER = "whep-bearer-s3cr3t"


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    if janus_executable() is None:
        pytest.skip("Debian's janus is not installed")
    server = JanusServer(tmp_path / "janus")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def srv(settings: Any, store: Any) -> AsyncIterator[Served]:
    async with served(settings, store, bots=True, reports=True) as s:
        yield s


class Monitor:
    """The interviewer on the monitor page: alerts and chat lines on their socket, the API with their token."""

    def __init__(self, srv: Served, created: dict[str, Any]) -> None:
        self.srv = srv
        self.iid: str = created["id"]
        self.token = parse_qs(urlsplit(created["monitor_url"]).query)["token"][0]
        self.listener = Listener()
        self.chats: list[str] = []

        async def on_chat(message: dict[str, Any]) -> None:
            self.chats.append(message.get("text", ""))

        self.listener.sio.on("chat", on_chat)

    async def api(self, method: str, path: str = "") -> tuple[int, Any]:
        status, body, _ = await http(method, f"{self.srv.url}/api/interviews/{self.iid}{path}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        return status, body

    async def stored_types(self) -> set[str]:
        status, body = await self.api("GET", "/events")
        assert status == 200, body
        return {e["type"] for e in body["events"]}

    async def stored(self, kind: str, timeout: float = 10.0) -> bool:
        """Whether an event of `kind` is stored within `timeout` s: the server alerts first and writes in the
        background (signaling.server's ordered writer), so an alert may reach the page before the database."""
        async def found() -> bool:
            return kind in await self.stored_types()
        return await wait_for(found, timeout)


async def create_and_watch(srv: Served, room: dict[str, Any]) -> Monitor:
    status, created, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator, json={
        "candidate_name": CANDIDATE, "interviewer_email": "iris@example.com", "room": room})
    assert status == 201, created
    monitor = Monitor(srv, created)
    await monitor.listener.connect(srv.url, monitor.token)
    return monitor


async def test_the_bot_joins_a_janus_room_alerts_the_interviewer_and_follows_a_republish(
    janus: JanusServer, srv: Served, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    candidate = JanusPublisher(janus.url, ROOM, CANDIDATE, pin=PIN, video=STUDENT_VIDEO, audio=ENGLISH_AUDIO)
    await candidate.start()
    monitor = await create_and_watch(srv, {"kind": "janus", "url": janus.url, "room": ROOM, "pin": PIN,
                                           "candidate": CANDIDATE})
    try:
        status, body = await monitor.api("POST", "/bot")
        assert status == 202, body
        assert srv.bots is not None
        session = srv.bots.sessions[monitor.iid]
        assert await wait_for(lambda: session.stats.frames_analysed > 5, 60), session.stats
        assert [p["display"] for p in await room_participants(janus.url, ROOM)
                if p.get("display") == BOT_DISPLAY_NAME] == [BOT_DISPLAY_NAME]
        assert monitor.listener.opened("face_missing") == []  # the student is in the picture

        # the candidate stops publishing and publishes again, from an empty room: the bot follows the new feed
        video = session.peer.video
        assert video is not None
        attached = video.tracks_attached
        await candidate.unpublish()
        candidate.video = EMPTY_ROOM
        await candidate.publish()
        assert await wait_for(lambda: video.tracks_attached > attached, 20)
        assert await wait_for(lambda: monitor.listener.opened("face_missing"), 60), monitor.listener.alerts
        assert await monitor.stored("face_missing"), await monitor.stored_types()
        status, shown = await monitor.api("GET")
        assert shown["status"] == "live" and shown["started_at"]  # the call's clock started with the bot
        assert session.peer.offers_sent == 0  # no WebRTC of its own: the media came from Janus
        assert any("(janus): receiving" in text for text in monitor.chats), monitor.chats

        status, body = await monitor.api("POST", "/end")
        assert status == 200, body
        assert not srv.bots.running(monitor.iid)
        assert await wait_for_async(lambda: bot_gone(janus), 10)
    finally:
        await monitor.listener.sio.disconnect()
        await candidate.stop()
    assert PIN not in "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("pymongo"))


async def test_the_bot_plays_a_whep_stream_alerts_the_interviewer_and_follows_a_restart(
    srv: Served, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    endpoint = WhepEndpoint(EMPTY_ROOM, ENGLISH_AUDIO, bearer=BEARER)
    await endpoint.start()
    monitor = await create_and_watch(srv, {"kind": "whep", "url": endpoint.url, "bearer": BEARER})
    try:
        status, body = await monitor.api("POST", "/bot")
        assert status == 202, body  # the endpoint refuses a session without the bearer token
        assert srv.bots is not None
        session = srv.bots.sessions[monitor.iid]
        assert await wait_for(lambda: monitor.listener.opened("face_missing"), 60), monitor.listener.alerts
        assert await monitor.stored("face_missing"), await monitor.stored_types()

        # the media server restarts the stream, now with the candidate in the picture: the bot reconnects
        # and sees the face, so face_missing ends
        video = session.peer.video
        assert video is not None
        attached, posts = video.tracks_attached, endpoint.posts
        endpoint.video = STUDENT_VIDEO
        await endpoint.drop()
        assert await wait_for(lambda: video.tracks_attached > attached, 30), (endpoint.posts, posts)
        assert await wait_for(lambda: monitor.listener.closed("face_missing"), 60), monitor.listener.alerts

        status, body = await monitor.api("POST", "/end")
        assert status == 200, body
        assert await wait_for(lambda: endpoint.deletes, 5)  # the bot's session is gone from the endpoint too
    finally:
        await monitor.listener.sio.disconnect()
        await endpoint.stop()
    assert BEARER not in "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("pymongo"))


async def test_in_the_fleet_the_call_process_plays_the_room_with_its_stored_secret(settings: Any, store: Any) -> None:
    """`proctor serve`'s default: the call runs in a child process of the local worker, from the job's interview
    (the room and its bearer token included); face_missing from the WHEP stream reaches the interviewer."""
    from dataclasses import replace

    from bot.fleet import FleetSettings

    fleet = replace(FleetSettings.from_env(), load_threshold=0.99, load_scope="worker")  # a busy machine admits it
    endpoint = WhepEndpoint(EMPTY_ROOM, ENGLISH_AUDIO, bearer=BEARER)
    await endpoint.start()
    try:
        async with served(settings, store, bots="fleet", reports=True, fleet=fleet) as srv:
            assert srv.worker is not None
            monitor = await create_and_watch(srv, {"kind": "whep", "url": endpoint.url, "bearer": BEARER})
            try:
                status, body = await monitor.api("POST", "/bot")
                assert status == 202, body
                assert await wait_for(lambda: monitor.listener.opened("face_missing"), 60), monitor.listener.alerts
                call = srv.worker.supervisor.calls()[monitor.iid]
                assert call.pid is not None and call.pid != os.getpid()
                assert endpoint.posts >= 1 and endpoint.sessions  # the child process holds the WHEP session
                status, body = await monitor.api("POST", "/end")
                assert status == 200, body
                assert await wait_for(lambda: endpoint.deletes, 10)
            finally:
                await monitor.listener.sio.disconnect()
    finally:
        await endpoint.stop()


async def test_an_unreachable_room_is_a_502_and_no_bot(srv: Served) -> None:
    monitor = await create_and_watch(srv, {"kind": "whep", "url": "http://127.0.0.1:9/whep/nobody"})
    try:
        status, body = await monitor.api("POST", "/bot")
        assert status == 502 and body["error"].startswith("the bot could not join the whep call"), body
        assert srv.bots is not None and not srv.bots.running(monitor.iid)
    finally:
        await monitor.listener.sio.disconnect()


async def bot_gone(janus: JanusServer) -> bool:
    return not [p for p in await room_participants(janus.url, ROOM) if p.get("display") == BOT_DISPLAY_NAME]


async def wait_for_async(check: Any, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False
