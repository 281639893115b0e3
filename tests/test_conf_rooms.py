"""Room descriptions of calls on other platforms (parsed values, errors naming the field, hidden secrets),
and what every adapter does alike."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.conferencing import (
    JanusRoom,
    JoinError,
    MediaSource,
    RoomError,
    Secret,
    SourceBase,
    WhepRoom,
    open_source,
    parse_room,
)
from tests.support.media_sink import until

JANUS = {"kind": "janus", "url": "https://janus.example.com:8089/janus", "room": 1234, "pin": "pin-9876",
         "candidate": "Alice Candidate"}
WHEP = {"kind": "whep", "url": "https://media.example.com/whep/interview-7", "bearer": "tok-abcdef"}


def test_parses_both_kinds() -> None:
    janus = parse_room(JANUS)
    assert isinstance(janus, JanusRoom)
    assert (janus.url, janus.room, janus.candidate) == (JANUS["url"], 1234, "Alice Candidate")
    assert janus.pin is not None and janus.pin.reveal() == "pin-9876"
    by_id = parse_room({**JANUS, "url": "wss://janus.example.com/ws", "candidate": 4242})
    assert isinstance(by_id, JanusRoom) and by_id.candidate == 4242
    whep = parse_room(WHEP)
    assert isinstance(whep, WhepRoom) and whep.bearer is not None and whep.bearer.reveal() == "tok-abcdef"
    assert parse_room({"kind": "whep", "url": "http://127.0.0.1:8889/cam/whep"}) == WhepRoom(
        url="http://127.0.0.1:8889/cam/whep")


@pytest.mark.parametrize(("value", "field", "message"), [
    ([], "room", "room must be an object"),
    ({"url": "https://x/janus"}, "room.kind", "room.kind must be 'janus' or 'whep'"),
    ({**JANUS, "kind": "zoom"}, "room.kind", "'janus' or 'whep'"),
    ({**JANUS, "url": "ftp://x/janus"}, "room.url", "room.url must be an http(s) or ws(s) URL"),
    ({**JANUS, "url": "https:///janus"}, "room.url", "http(s) or ws(s) URL"),
    ({**JANUS, "url": "http://x:99999/janus"}, "room.url", "http(s) or ws(s) URL"),
    ({**JANUS, "url": 12}, "room.url", "http(s) or ws(s) URL"),
    ({**JANUS, "url": "https://user:pw@x/janus"}, "room.url", "must not carry credentials"),
    ({**WHEP, "url": "wss://x/whep"}, "room.url", "room.url must be an http(s) URL"),
    ({k: v for k, v in JANUS.items() if k != "room"}, "room.room", "room.room must be a positive integer"),
    ({**JANUS, "room": "1234"}, "room.room", "positive integer"),
    ({**JANUS, "room": True}, "room.room", "positive integer"),
    ({**JANUS, "room": 0}, "room.room", "positive integer"),
    ({**JANUS, "candidate": ""}, "room.candidate", "room.candidate must be a display name or a numeric feed id"),
    ({**JANUS, "candidate": 1.5}, "room.candidate", "display name or a numeric feed id"),
    ({k: v for k, v in JANUS.items() if k != "candidate"}, "room.candidate", "display name"),
    ({**JANUS, "pin": 1234}, "room.pin", "room.pin must be a non-empty string"),
    ({**WHEP, "bearer": ""}, "room.bearer", "room.bearer must be a non-empty string"),
    ({**WHEP, "room": 1}, "room.room", "room.room is not a field of a whep room"),
    ({**JANUS, "bearer": "x"}, "room.bearer", "is not a field of a janus room"),
])
def test_bad_descriptions_name_the_field(value: Any, field: str, message: str) -> None:
    with pytest.raises(RoomError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_room(value)
    assert caught.value.field == field
    for secret in ("pin-9876", "tok-abcdef"):
        assert secret not in str(caught.value)


def test_secrets_never_show(caplog: pytest.LogCaptureFixture) -> None:
    janus, whep = parse_room(JANUS), parse_room(WHEP)
    caplog.set_level(logging.DEBUG)
    for room, secret in ((janus, "pin-9876"), (whep, "tok-abcdef")):
        logging.getLogger("test").info("room %s %r %s", room, room, room.public())
        for text in (repr(room), str(room), str(room.public()), f"{room}", repr(vars(room))):
            assert secret not in text
    assert janus.public() == {"kind": "janus", "url": JANUS["url"], "room": 1234, "candidate": "Alice Candidate"}
    assert whep.public() == {"kind": "whep", "url": WHEP["url"]}
    assert "pin-9876" not in caplog.text and "tok-abcdef" not in caplog.text
    assert repr(Secret("x")) == str(Secret("x")) == "Secret('***')"


def test_open_source_picks_the_adapter() -> None:
    janus, whep = open_source(parse_room(JANUS)), open_source(parse_room(WHEP))
    assert type(janus).__name__ == "JanusSource" and type(whep).__name__ == "WhepSource"
    assert isinstance(janus, MediaSource) and isinstance(whep, MediaSource)
    assert janus.state == whep.state == "joining"


@pytest.mark.parametrize("kind", ["janus", "whep"])
async def test_leave_while_joining_ends_the_join(kind: str) -> None:
    """A server that accepts connections and never answers: leave() must not leave join() hanging."""
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _reader, writer: writers.append(writer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    description = {**JANUS, "url": f"http://127.0.0.1:{port}/janus"} if kind == "janus" else {
        "kind": "whep", "url": f"http://127.0.0.1:{port}/whep/x"}
    source = open_source(parse_room(description))
    try:
        joining = asyncio.create_task(source.join(lambda track: None))
        await until(lambda: bool(writers), "the adapter to connect")
        await source.leave()
        with pytest.raises(JoinError):
            await asyncio.wait_for(joining, 5)
        assert source.state == "left"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_leave_ends_a_task_that_swallowed_its_cancellation() -> None:
    """Python 3.11's wait_for returns its result instead of raising when the cancellation arrives as the awaited
    call completes; the adapter's task then goes back to waiting for events. leave() cancels again."""

    class Stubborn(SourceBase):
        swallowed = 0

        async def run(self) -> None:
            while True:
                try:
                    await asyncio.Event().wait()  # waiting for room events
                except asyncio.CancelledError:
                    if self.swallowed < 2:  # as wait_for does when the inner call has just completed
                        self.swallowed += 1
                        continue
                    raise

        async def _release(self) -> None:
            pass

    source = Stubborn()
    source._task = asyncio.create_task(source.run())
    await asyncio.sleep(0)
    await asyncio.wait_for(source.leave(), 5)
    assert source.swallowed == 2 and source.state == "left"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)
_rooms = st.fixed_dictionaries(
    {"kind": st.sampled_from(["janus", "whep"]) | _json},
    optional={k: _json | st.sampled_from(["http://h:1/janus", "wss://h/ws", "ftp://h", "Alice", ""]) | st.integers()
              for k in ("url", "room", "pin", "candidate", "bearer", "other")})


@settings(max_examples=400, deadline=None)
@given(st.one_of(_json, _rooms))
def test_any_json_is_a_room_or_a_room_error_naming_a_field(value: Any) -> None:
    """What the API passes on from any request body: never another exception (a 500), never a secret shown."""
    try:
        room = parse_room(value)
    except RoomError as e:
        assert e.field == "room" or e.field.startswith("room.")
        return
    assert not {"pin", "bearer"} & set(room.public()) and "pin=" not in repr(room) and "bearer=" not in repr(room)
    assert parse_room(room.stored()) == room
