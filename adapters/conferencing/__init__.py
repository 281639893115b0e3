"""Conferencing adapters: receive the candidate's audio and video from the platform the call is on.

Every platform implements one small interface, `MediaSource`: ``join(on_track)`` enters the call
and hands each received aiortc track to ``on_track`` (again whenever the candidate's tracks are
replaced: a republish, a reconnect), ``leave()`` exits, and ``state`` says where it stands. The
bot session behind it does not know which platform delivers the tracks.

A call's place is a room description (`bot.rooms`: `parse_room`, `JanusRoom`, `WhepRoom`, `Secret`,
re-exported here), the pure values the API validates with; only an adapter reveals a secret, to send it.
`open_media(description, on_state)` is the `bot.ports.OpenMedia` the wiring module hands to the bot.

This package imports aiortc, aiohttp, `bot.rooms` and the standard library only.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp
from aiortc.mediastreams import MediaStreamTrack

from bot.ports import MediaSource
from bot.rooms import JanusRoom, Room, RoomError, Secret, WhepRoom, parse_room

log = logging.getLogger(__name__)

SourceState = Literal["joining", "receiving", "waiting for the candidate", "reconnecting", "left"]
TrackHandler = Callable[[MediaStreamTrack], None]
StateHandler = Callable[[str], None]

BOT_DISPLAY_NAME = "Proctoring bot"


class JoinError(RuntimeError):
    """The first attempt to join failed (unreachable server, wrong room or pin, refused token)."""


class SourceBase:
    """What the adapters share: the ``state`` value (its log line and callback), the background task and the
    HTTP session, and `leave()`, which stops the task, lets the adapter release its platform session
    (`_release`), closes the HTTP session and ends in "left"."""

    def __init__(self, *, on_state: StateHandler | None = None) -> None:
        self._state: SourceState = "joining"
        self._on_state = on_state
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def leave(self) -> None:
        if self.state == "left":
            return
        task, self._task = self._task, None
        if task is not None:
            await cancel_until_done(task)
        await self._release()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._set_state("left")

    async def _release(self) -> None:
        """Leave the platform's session (detach, DELETE); called once by `leave()`."""
        raise NotImplementedError

    @property
    def state(self) -> str:
        return self._state

    def _set_state(self, state: SourceState) -> None:
        if state == self._state or self._state == "left":  # nothing happens after leave()
            return
        log.info("%s: %s -> %s", type(self).__name__, self._state, state)
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:  # the listener's bug must not stop the media
                log.exception("state listener failed")


async def cancel_until_done(task: asyncio.Task[Any], *, patience: float = 10.0) -> None:
    """Cancel `task` and wait for its end, cancelling again while it goes on.

    Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives just as the awaited call completes
    (it returns the result instead; fixed in 3.12): one ``cancel()`` then leaves the task running, and an
    adapter's task that goes back to waiting for room events would keep ``leave()`` waiting for ever (seen once in
    eight runs of ``bench_live.py --janus``, the candidate leaving as the bot left).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
        if not task.done() and loop.time() > deadline:
            log.error("%s did not end %.0f s after its cancellation; leaving it", task.get_name(), patience)
            return
    if not task.cancelled() and task.exception() is not None:
        log.info("%s ended with %r", task.get_name(), task.exception())


class Backoff:
    """Exponential delays with jitter between reconnection attempts: first, first*2, ... up to cap."""

    def __init__(self, first: float = 0.5, cap: float = 15.0) -> None:
        self.first = first
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0 ** self.attempts)
        self.attempts += 1
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempts = 0


def open_source(room: Room, *, on_state: StateHandler | None = None) -> MediaSource:
    """The adapter for a room description (not joined yet)."""
    if isinstance(room, JanusRoom):  # imported here: the adapters import this module
        from adapters.conferencing.janus import JanusSource
        return JanusSource(room, on_state=on_state)
    from adapters.conferencing.whep import WhepSource
    return WhepSource(room, on_state=on_state)


def open_media(description: Mapping[str, Any], on_state: StateHandler | None = None) -> MediaSource:
    """`bot.ports.OpenMedia`: the adapter for a stored room description (`RoomError` if it is not one)."""
    return open_source(parse_room(description), on_state=on_state)


__all__ = [
    "BOT_DISPLAY_NAME", "Backoff", "JanusRoom", "JoinError", "MediaSource", "Room", "RoomError", "Secret",
    "SourceBase", "SourceState", "StateHandler", "TrackHandler", "WhepRoom", "cancel_until_done", "open_media",
    "open_source", "parse_room",
]
