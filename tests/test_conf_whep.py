"""The WHEP adapter against a WHEP endpoint built for the test over aiortc + aiohttp (`tests.support.whep_endpoint`).

There is no WHEP server package here; the endpoint follows RFC 9725 (POST offer -> 201 answer +
Location, DELETE the resource, bearer tokens) and plays ``student.mkv`` and ``english.wav``.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import numpy as np
import pytest

from adapters.conferencing import JoinError, WhepRoom, parse_room
from adapters.conferencing.whep import WhepSource
from tests.support.candidate import ENGLISH_AUDIO, STUDENT_VIDEO
from tests.support.media_sink import TrackSink, until
from tests.support.whep_endpoint import WhepEndpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

TOKEN = "whep-token-s3cr3t"


@pytest.fixture
async def endpoint() -> AsyncIterator[WhepEndpoint]:
    server = WhepEndpoint(STUDENT_VIDEO, ENGLISH_AUDIO, bearer=TOKEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def sink() -> AsyncIterator[TrackSink]:
    sink = TrackSink()
    yield sink
    await sink.close()


def room(endpoint: WhepEndpoint, bearer: str = TOKEN) -> WhepRoom:
    parsed = parse_room({"kind": "whep", "url": endpoint.url, "bearer": bearer})
    assert isinstance(parsed, WhepRoom)
    return parsed


async def test_receives_frames_and_deletes_the_session_on_leave(
    endpoint: WhepEndpoint, sink: TrackSink, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    source = WhepSource(room(endpoint))
    try:
        await source.join(sink.on_track)
        await until(lambda: source.state == "receiving", "the WHEP session to connect")
        await until(lambda: sink.count("video") >= 10 and sink.count("audio") >= 20, "video and audio frames")
        assert sink.kinds() == ["audio", "video"]
        frame = sink.last_video
        assert frame is not None and float(np.std(frame.to_ndarray(format="gray"))) > 10
        [resource] = endpoint.sessions
    finally:
        await source.leave()
    assert endpoint.deletes == [resource] and endpoint.sessions == {}  # DELETE, with the token
    assert source.state == "left"
    await until(lambda: all(sink.ended), "the tracks to end")
    assert TOKEN not in caplog.text


async def test_reconnects_when_the_server_drops_the_session(endpoint: WhepEndpoint, sink: TrackSink) -> None:
    states: list[str] = []
    source = WhepSource(room(endpoint), on_state=states.append)
    try:
        await source.join(sink.on_track)
        await until(lambda: sink.count("video") >= 5 and sink.count("audio") >= 10, "frames")

        endpoint.refusing = True  # the stream goes away for a while: 503 to new sessions
        await endpoint.drop()
        await until(lambda: source.state == "waiting for the candidate", "the adapter to wait for the stream")
        endpoint.refusing = False
        await until(lambda: source.sessions == 2 and source.state == "receiving", "a new WHEP session")
        await until(lambda: len(sink.tracks) == 4 and sink.count("video", 2) >= 5 and sink.count("audio", 2) >= 10,
                    "frames from the new session")
        assert states[:3] == ["receiving", "reconnecting", "waiting for the candidate"] and states[-1] == "receiving"
        assert endpoint.posts >= 3 and len(endpoint.sessions) == 1
    finally:
        await source.leave()
    assert len(endpoint.deletes) == 1


async def test_a_refused_token_fails_the_join(endpoint: WhepEndpoint) -> None:
    source = WhepSource(room(endpoint, bearer="wrong"))
    with pytest.raises(JoinError, match="401"):
        await source.join(lambda track: None)
    assert source.state == "left" and endpoint.posts == 1 and endpoint.sessions == {}
