"""The Janus VideoRoom adapter against Debian's real Janus, with an aiortc candidate publishing real media.

Janus (`tests.support.janus_server`) runs with the VideoRoom plugin and the HTTP and WebSocket transports. The
candidate (`tests.support.janus_publisher`) publishes
``student.mkv`` and ``english.wav`` under a display name; a decoy publishes audio only under
another name.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from adapters.conferencing import BOT_DISPLAY_NAME, JanusRoom, JoinError, parse_room
from adapters.conferencing.janus import JanusSource
from tests.support.candidate import ENGLISH_AUDIO, STUDENT_VIDEO
from tests.support.janus_publisher import JanusPublisher, room_participants
from tests.support.janus_server import PIN, ROOM, JanusServer, janus_executable
from tests.support.media_sink import TrackSink, until
from tests.support.paths import MEDIA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.skipif(janus_executable() is None, reason="Debian's janus is not installed"),
]

KEEPALIVE = 2.0  # the adapter's and the publishers' keepalive period (Janus' session timeout: 6 s)
CANDIDATE = "Alice Candidate"


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    server = JanusServer(tmp_path, session_timeout=6, websocket=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def sink() -> AsyncIterator[TrackSink]:
    sink = TrackSink()
    yield sink
    await sink.close()


def room(janus: JanusServer, **overrides: object) -> JanusRoom:
    description = {"kind": "janus", "url": janus.url, "room": ROOM, "pin": PIN, "candidate": CANDIDATE}
    parsed = parse_room({**description, **overrides})
    assert isinstance(parsed, JanusRoom)
    return parsed


def candidate(janus: JanusServer) -> JanusPublisher:
    return JanusPublisher(janus.url, ROOM, CANDIDATE, pin=PIN, video=STUDENT_VIDEO, audio=ENGLISH_AUDIO,
                          keepalive_every=KEEPALIVE)


async def bot_listing(janus: JanusServer) -> list[dict[str, object]]:
    return [p for p in await room_participants(janus.url, ROOM) if p.get("display") == BOT_DISPLAY_NAME]


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_follows_the_candidate_by_name_through_a_republish_and_a_reload(
    janus: JanusServer, sink: TrackSink, transport: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    decoy = JanusPublisher(janus.url, ROOM, "Interviewer", pin=PIN, audio=MEDIA / "audio" / "french.aiff",
                           keepalive_every=KEEPALIVE)
    alice, alice2 = candidate(janus), candidate(janus)
    url = janus.url if transport == "http" else janus.ws_url
    source = JanusSource(room(janus, url=url), keepalive_every=KEEPALIVE)
    try:
        await decoy.start()
        await source.join(sink.on_track)  # before the candidate: it waits, and is listed
        assert source.state == "waiting for the candidate"
        [bot] = await bot_listing(janus)
        assert bot["publisher"] is False and bot["id"] == source.participant_id

        await alice.start()  # found from the room's "publishers" event, not the decoy
        await until(lambda: source.state == "receiving", "the adapter to receive")
        await until(lambda: sink.count("video") >= 10 and sink.count("audio") >= 20, "video and audio frames")
        assert sink.kinds() == ["audio", "video"]
        frame = sink.last_video
        assert frame is not None and (frame.width, frame.height) >= (160, 120)
        assert float(np.std(frame.to_ndarray(format="gray"))) > 10  # a real picture, not a blank one

        await alice.unpublish()
        await until(lambda: source.state == "waiting for the candidate", "the adapter to notice the unpublish")
        await until(lambda: all(sink.ended), "the old tracks to end")
        await alice.publish()
        await until(lambda: len(sink.tracks) == 4, "new tracks after the republish")
        await until(lambda: sink.count("video", 2) >= 10 and sink.count("audio", 2) >= 20, "frames after the republish")
        assert source.state == "receiving" and source.subscriptions == 2

        # the candidate reloads the page: a new feed with the same name while the old one lingers
        await alice2.start()
        await until(lambda: source.subscriptions == 3 and len(sink.tracks) == 6, "the switch to the new feed")
        await alice.stop()  # the stale feed goes: nothing changes for the adapter
        await until(lambda: sink.count("video", 4) >= 10 and sink.count("audio", 4) >= 20, "frames of the new feed")
        assert source.state == "receiving" and source.subscriptions == 3
        [bot] = await bot_listing(janus)
        assert bot["publisher"] is False  # it never publishes
        assert source.joins == 1

        await source.leave()
        assert source.state == "left"
        assert await bot_listing(janus) == []
        await until(lambda: all(sink.ended), "the tracks to end after leave()")
        assert PIN not in caplog.text
    finally:
        await source.leave()
        await alice.stop()
        await alice2.stop()
        await decoy.stop()


async def test_follows_the_candidate_turning_the_camera_on(janus: JanusServer, sink: TrackSink) -> None:
    """Audio first, then a video stream added to the same feed: the adapter subscribes again for both."""
    alice = JanusPublisher(janus.url, ROOM, CANDIDATE, pin=PIN, audio=ENGLISH_AUDIO, keepalive_every=KEEPALIVE)
    source = JanusSource(room(janus), keepalive_every=KEEPALIVE)
    try:
        await alice.start()
        await source.join(sink.on_track)
        await until(lambda: sink.count("audio") >= 10, "audio frames")
        assert sink.kinds() == ["audio"]
        await alice.add_video(STUDENT_VIDEO)
        await until(lambda: sink.count("video") >= 10 and sink.count("audio", 1) >= 10, "video and audio of the new feed")
        assert sink.kinds(1) == ["audio", "video"] and source.subscriptions == 2
    finally:
        await source.leave()
        await alice.stop()


async def test_rejoins_after_janus_restarts(janus: JanusServer, sink: TrackSink) -> None:
    alice = candidate(janus)
    source = JanusSource(room(janus), keepalive_every=KEEPALIVE)
    try:
        await alice.start()
        await source.join(sink.on_track)
        await until(lambda: sink.count("video") >= 5 and sink.count("audio") >= 10, "frames before the restart")

        janus.stop()  # every Janus session is gone
        await until(lambda: source.state == "reconnecting", "the adapter to notice Janus went away")
        janus.start()  # same port
        await alice.reconnect()  # the candidate's page does the same: new session, new feed id
        await until(lambda: source.joins == 2, "the adapter to join again")
        await until(lambda: len(sink.tracks) == 4 and sink.count("video", 2) >= 5 and sink.count("audio", 2) >= 10,
                    "frames after the restart")
        assert source.state == "receiving"
        [bot] = await bot_listing(janus)
        assert bot["publisher"] is False
    finally:
        await source.leave()
        await alice.stop()


async def test_a_wrong_pin_or_an_absent_server_fails_the_join(janus: JanusServer) -> None:
    source = JanusSource(room(janus, pin="wrong"))
    with pytest.raises(JoinError, match="433|pin|nauthorized"):
        await source.join(lambda track: None)
    assert source.state == "left"
    assert await bot_listing(janus) == []

    janus.stop()
    source = JanusSource(room(janus))
    with pytest.raises(JoinError, match=f"room {ROOM}"):
        await source.join(lambda track: None)


async def test_keepalives_hold_the_session(tmp_path: Path) -> None:
    """Janus' long poll does not count as activity: without keepalives a session dies after its timeout."""
    janus = JanusServer(tmp_path, session_timeout=3)
    janus.start()
    source = JanusSource(room(janus), keepalive_every=1.0)
    try:
        await source.join(lambda track: None)
        await asyncio.sleep(7)  # over twice the session timeout: time itself is the condition here
        assert source.joins == 1 and source.state == "waiting for the candidate"
        assert len(await bot_listing(janus)) == 1
        assert "Timeout expired" not in janus.log_tail(100_000)
    finally:
        await source.leave()
        janus.stop()
