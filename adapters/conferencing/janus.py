"""Janus VideoRoom adapter: the bot joins a Janus room as a listed, never-publishing participant.

Janus' HTTP API (the REST transport with long polling):

- ``POST /janus`` ``{"janus": "create"}`` makes a session; ``POST /janus/<session>``
  ``{"janus": "attach", "plugin": "janus.plugin.videoroom"}`` a handle;
  ``POST /janus/<session>/<handle>`` ``{"janus": "message", "body": ...}`` talks to the plugin. Plugin
  requests that take time are acknowledged (``ack``) and answered later by an event with the same
  transaction; events arrive on the long poll, ``GET /janus/<session>?maxev=N``, which Janus holds up
  to 30 s.
- A session dies after ``session_timeout`` (60 s by default) without a request: `JanusSession` sends a
  keepalive every 25 s. A restarted Janus has no sessions: requests answer error 458, the long poll
  fails, and the adapter starts again with a new session (backing off while Janus is away).

VideoRoom, as a subscriber that people can see:

1. handle A joins the room with ``ptype: publisher`` and the display name "Proctoring bot", and
   never configures/publishes: the room lists it as a participant (``listparticipants``; a
   ``joining`` notice on rooms with ``notify_joining``), as the candidate's consent notice promises,
   and it receives the room's ``publishers``/``unpublished``/``leaving`` events on that handle;
2. the candidate's feed is the publisher whose display name (or feed id) the room description names;
3. handle B joins with ``ptype: subscriber`` and ``streams: [{feed}]``; Janus offers (its candidates
   are in the SDP: Janus half-trickles), aiortc answers receive-only, ``start``;
4. an ``unpublished``/``leaving`` of that feed, a change of its streams (a camera added or removed),
   a hangup of handle B or a failed connection drop the subscription; the candidate's feed (the same
   one, or a new publisher with the candidate's name after a reconnect) is subscribed again, and
   its tracks are handed to ``on_track`` again.

The same requests also go over Janus' WebSocket transport (a ``ws(s)://`` room URL).
"""
from __future__ import annotations

import abc
import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from adapters.conferencing import (
    BOT_DISPLAY_NAME,
    Backoff,
    JanusRoom,
    JoinError,
    SourceBase,
    StateHandler,
    TrackHandler,
)

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
KEEPALIVE_EVERY = 25.0  # Janus' default session_timeout is 60 s
REQUEST_TIMEOUT = 10.0
POLL_TIMEOUT = 45.0  # Janus answers a long poll after 30 s at the latest
MAX_EVENTS_PER_POLL = 10
MAX_QUEUED = 256
SESSION_NOT_FOUND = 458


class JanusError(RuntimeError):
    """An error answer of Janus or of the VideoRoom plugin (``code`` as Janus gives it)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}" if code is not None else f"Janus: {reason}")
        self.code = code


class SessionLost(ConnectionError):
    """The Janus session is gone: Janus restarted or is unreachable, or the session timed out."""


EventHandler = Callable[[dict[str, Any]], None]
LostHandler = Callable[[Exception], None]


class JanusSession(abc.ABC):
    """One Janus session: requests, plugin messages, incoming events, keepalives.

    `create()` picks the transport from the URL: `HttpJanusSession` (``http(s)://``: POST requests,
    events by long poll) or `WsJanusSession` (``ws(s)://``: one WebSocket, subprotocol
    ``janus-protocol``). Events that answer a pending plugin message resolve it; every other event
    goes to ``on_event``. When the session dies (the event stream or a keepalive fails, Janus says it
    is unknown, it timed out) ``on_lost`` is called once and pending requests fail with `SessionLost`.
    """

    def __init__(self, session_id: int, *, on_event: EventHandler | None, on_lost: LostHandler | None,
                 keepalive_every: float) -> None:
        self.id = session_id
        self.lost: SessionLost | None = None
        self._on_event = on_event or (lambda _event: None)
        self._on_lost = on_lost or (lambda _exc: None)
        self._keepalive_every = keepalive_every
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closing = False
        self._tasks = [asyncio.create_task(self._receive_loop()), asyncio.create_task(self._keepalive_loop())]

    @staticmethod
    async def create(
        http: aiohttp.ClientSession, url: str, *,
        on_event: EventHandler | None = None, on_lost: LostHandler | None = None,
        keepalive_every: float = KEEPALIVE_EVERY,
    ) -> JanusSession:
        kind = WsJanusSession if url.startswith(("ws://", "wss://")) else HttpJanusSession
        return await kind.open(http, url, on_event=on_event, on_lost=on_lost, keepalive_every=keepalive_every)

    async def attach(self, plugin: str = VIDEOROOM) -> int:
        reply = await self._checked(None, {"janus": "attach", "plugin": plugin})
        return int(reply["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Send a plugin request; its answer (synchronous, or the event after an ``ack``) and jsep."""
        tx = secrets.token_hex(8)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[tx] = waiter
        try:
            payload: dict[str, Any] = {"janus": "message", "body": body}
            if jsep is not None:
                payload["jsep"] = jsep
            reply = await self._checked(handle, payload, tx)
            if reply.get("janus") != "success":  # "ack": the answer comes as an event
                reply = await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(tx, None)
        data = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data or "error" in data:
            raise JanusError(data.get("error_code"), str(data.get("error", "plugin error")))
        return data, reply.get("jsep")

    async def trickle_completed(self, handle: int) -> None:
        """Tell Janus there are no more candidates than those in our SDP."""
        await self._checked(handle, {"janus": "trickle", "candidate": {"completed": True}})

    async def detach(self, handle: int) -> None:
        await self._checked(handle, {"janus": "detach"})

    async def close(self, *, destroy: bool, timeout: float = 3.0) -> None:
        """Stop receiving and keepalives; with ``destroy`` also end the session on Janus (best effort)."""
        self._closing = True
        if destroy and self.lost is None:
            try:
                await asyncio.wait_for(self._checked(None, {"janus": "destroy"}), timeout)
            except (TimeoutError, JanusError, SessionLost, aiohttp.ClientError) as exc:
                log.info("Janus session %s not destroyed: %s", self.id, exc)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_waiters(SessionLost("session closed"))
        await self._close_transport()

    async def _checked(self, handle: int | None, payload: dict[str, Any], tx: str | None = None) -> dict[str, Any]:
        if self.lost is not None:
            raise SessionLost(str(self.lost))
        return _checked_reply(await self._request(handle, payload, tx or secrets.token_hex(8)))

    @abc.abstractmethod
    async def _request(self, handle: int | None, payload: dict[str, Any], tx: str) -> dict[str, Any]:
        """Send one request of this session (to ``handle`` if given); Janus' immediate reply."""

    @abc.abstractmethod
    async def _receive_loop(self) -> None:
        """Hand every incoming event to `_dispatch` until the transport fails (-> `_lose`)."""

    async def _close_transport(self) -> None:  # noqa: B027 - a hook: most transports hold nothing more
        """Release what the transport holds beyond the tasks."""

    async def _keepalive_loop(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._keepalive_every)
                await self._checked(None, {"janus": "keepalive"})
        except asyncio.CancelledError:
            raise
        except (TimeoutError, SessionLost, JanusError, aiohttp.ClientError, ValueError) as exc:
            self._lose(exc)

    def _dispatch(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("janus")
        if kind in ("keepalive", "ack"):  # an idle long poll; the answer to a keepalive
            return
        if kind == "error":
            _checked_reply(event)  # raises
        if kind == "timeout":
            raise SessionLost("the session timed out on Janus")
        waiter = self._waiters.get(event.get("transaction", ""))
        if kind == "event" and waiter is not None and not waiter.done():
            waiter.set_result(event)
            return
        self._on_event(event)

    def _lose(self, exc: Exception) -> None:
        if self._closing or self.lost is not None:
            return
        self.lost = exc if isinstance(exc, SessionLost) else SessionLost(f"{type(exc).__name__}: {exc}")
        log.warning("Janus session %s lost: %s", self.id, self.lost)
        self._fail_waiters(self.lost)
        self._on_lost(self.lost)

    def _fail_waiters(self, exc: Exception) -> None:
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiters.clear()


class HttpJanusSession(JanusSession):
    """Janus' REST transport: ``POST <url>/<session>[/<handle>]``, events by ``GET <url>/<session>``."""

    def __init__(self, http: aiohttp.ClientSession, url: str, session_id: int, **kwargs: Any) -> None:
        self.url = url.rstrip("/")
        self._http = http
        super().__init__(session_id, **kwargs)

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, **kwargs: Any) -> HttpJanusSession:
        create = {"janus": "create", "transaction": secrets.token_hex(8)}
        reply = _checked_reply(await _post(http, url.rstrip("/"), create))
        return cls(http, url, int(reply["data"]["id"]), **kwargs)

    async def _request(self, handle: int | None, payload: dict[str, Any], tx: str) -> dict[str, Any]:
        path = f"{self.url}/{self.id}" + (f"/{handle}" if handle is not None else "")
        return await _post(self._http, path, {**payload, "transaction": tx})

    async def _receive_loop(self) -> None:
        params = {"maxev": str(MAX_EVENTS_PER_POLL)}
        try:
            while True:
                async with self._http.get(f"{self.url}/{self.id}", params=params,
                                          timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT)) as resp:
                    if resp.status != 200:
                        raise SessionLost(f"long poll: HTTP {resp.status}")
                    reply = await resp.json(content_type=None)
                for event in reply if isinstance(reply, list) else [reply]:
                    self._dispatch(event)
        except asyncio.CancelledError:
            raise
        except (TimeoutError, SessionLost, JanusError, aiohttp.ClientError, ValueError) as exc:
            self._lose(exc)


class WsJanusSession(JanusSession):
    """Janus' WebSocket transport: requests and events on one socket, matched by transaction."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: int, **kwargs: Any) -> None:
        self._ws = ws
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        super().__init__(session_id, **kwargs)

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, **kwargs: Any) -> WsJanusSession:
        ws = await http.ws_connect(url, protocols=("janus-protocol",), timeout=aiohttp.ClientWSTimeout(ws_close=5),
                                   max_msg_size=8 * 1024 * 1024)
        try:
            tx = secrets.token_hex(8)
            await ws.send_json({"janus": "create", "transaction": tx})
            async with asyncio.timeout(REQUEST_TIMEOUT):
                while (reply := await ws.receive_json()).get("transaction") != tx:
                    pass
            session_id = int(_checked_reply(reply)["data"]["id"])
        except BaseException:
            await ws.close()
            raise
        return cls(ws, session_id, **kwargs)

    async def _request(self, handle: int | None, payload: dict[str, Any], tx: str) -> dict[str, Any]:
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[tx] = reply
        try:
            message = {**payload, "transaction": tx, "session_id": self.id}
            if handle is not None:
                message["handle_id"] = handle
            await self._ws.send_json(message)
            return await asyncio.wait_for(reply, REQUEST_TIMEOUT)
        finally:
            self._replies.pop(tx, None)

    async def _receive_loop(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                message = json.loads(frame.data)
                reply = self._replies.get(message.get("transaction", "")) if isinstance(message, dict) else None
                if reply is not None and not reply.done() and message.get("janus") in ("ack", "success", "error"):
                    reply.set_result(message)
                else:
                    self._dispatch(message)
            raise SessionLost(f"the WebSocket closed ({self._ws.close_code})")
        except asyncio.CancelledError:
            raise
        except (SessionLost, JanusError, aiohttp.ClientError, ValueError) as exc:
            self._lose(exc)

    def _fail_waiters(self, exc: Exception) -> None:
        super()._fail_waiters(exc)
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(exc)
        self._replies.clear()

    async def _close_transport(self) -> None:
        await self._ws.close()


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request of Janus' REST transport; its JSON reply."""
    async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
        if resp.status != 200:
            raise JanusError(None, f"HTTP {resp.status} from {resp.url.with_query(None)}")
        reply = await resp.json(content_type=None)
    if not isinstance(reply, dict):
        raise JanusError(None, "malformed answer")
    return reply


def _checked_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply, unless it is an error: `SessionLost` for an unknown session, else `JanusError`."""
    if reply.get("janus") == "error":
        error = reply.get("error") or {}
        if error.get("code") == SESSION_NOT_FOUND:
            raise SessionLost(str(error.get("reason", "no such session")))
        raise JanusError(error.get("code"), str(error.get("reason", "")))
    return reply


@dataclass(frozen=True)
class _Item:
    """Work for the adapter's loop: a Janus event, a peer connection's state change, the session's end."""

    kind: Literal["event", "pc", "lost"]
    event: dict[str, Any] | None = None
    pc: RTCPeerConnection | None = None
    error: Exception | None = None


class JanusSource(SourceBase):
    """`MediaSource` for a Janus VideoRoom: a listed participant that subscribes to the candidate's feed."""

    def __init__(
        self, room: JanusRoom, *, on_state: StateHandler | None = None, display: str = BOT_DISPLAY_NAME,
        keepalive_every: float = KEEPALIVE_EVERY, backoff: Backoff | None = None,
    ) -> None:
        super().__init__(on_state=on_state)
        self.room = room
        self.display = display
        self.keepalive_every = keepalive_every
        self.backoff = backoff or Backoff()
        self.joins = 0  # sessions joined (1 + rejoins after a lost session)
        self.subscriptions = 0  # subscriptions to the candidate's feed started
        self.participant_id: int | None = None  # the bot's id in the room
        self._on_track: TrackHandler | None = None
        self._session: JanusSession | None = None
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(MAX_QUEUED)
        self._handle: int | None = None  # the participant handle
        self._private_id: int | None = None
        self._publishers: dict[Any, dict[str, Any]] = {}
        self._sub_handle: int | None = None
        self._sub_feed: Any = None
        self._sub_streams: tuple[tuple[str, str], ...] = ()  # what the subscription was made for
        self._pc: RTCPeerConnection | None = None

    async def join(self, on_track: TrackHandler) -> None:
        if self._task is not None or self.state == "left":
            raise RuntimeError("join() is called once per JanusSource")
        self._on_track = on_track
        self._http = aiohttp.ClientSession()
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first))
        try:
            await first
        except BaseException:
            await self.leave()
            raise

    async def _release(self) -> None:
        await self._drop_session()

    # --- the session's life ---

    async def _run(self, first: asyncio.Future[None]) -> None:
        """Join, follow the candidate until the session is lost, back off, join again; until leave()."""
        try:
            while True:
                try:
                    await self._connect()
                    if not first.done():
                        first.set_result(None)
                    self.backoff.reset()
                    await self._follow()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not first.done():
                        first.set_exception(JoinError(f"could not join Janus room {self.room.room}: {exc}"))
                        return
                    if not isinstance(exc, (JanusError, SessionLost, aiohttp.ClientError, asyncio.TimeoutError)):
                        log.exception("Janus adapter failed; joining again")
                    log.warning("left Janus room %s: %s; joining again", self.room.room, exc)
                await self._drop_session()
                self._set_state("reconnecting")
                await asyncio.sleep(self.backoff.next_delay())
        finally:
            if not first.done():  # leave() while the first join was under way
                first.set_exception(JoinError("left before the join completed"))

    async def _connect(self) -> None:
        """A new Janus session, the participant handle, and the join as a never-publishing participant."""
        assert self._http is not None
        queue: asyncio.Queue[_Item] = asyncio.Queue(MAX_QUEUED)  # events of an older session cannot reach it
        self._queue = queue
        self._session = await JanusSession.create(
            self._http, self.room.url, keepalive_every=self.keepalive_every,
            on_event=lambda event: _offer(queue, _Item("event", event=event)),
            on_lost=lambda exc: _offer(queue, _Item("lost", error=exc)),
        )
        self._handle = await self._session.attach(VIDEOROOM)
        data, _ = await self._session.message(self._handle, self._with_pin(
            {"request": "join", "ptype": "publisher", "room": self.room.room, "display": self.display}))
        if data.get("videoroom") != "joined":
            raise JanusError(None, f"unexpected answer to join: {data.get('videoroom')!r}")
        self.participant_id = data.get("id")
        self._private_id = data.get("private_id")
        self._publishers = {p["id"]: p for p in data.get("publishers", []) if isinstance(p, dict) and "id" in p}
        self.joins += 1
        log.info("joined Janus room %s as %r (%s publishers)", self.room.room, self.display, len(self._publishers))

    async def _follow(self) -> None:
        """Subscribe to the candidate and follow the room's events until the session is lost."""
        await self._update_subscription()
        while True:
            item = await self._queue.get()
            if item.kind == "lost":
                raise item.error or SessionLost("lost")
            if item.kind == "pc":
                await self._pc_changed(item.pc)
            elif item.event is not None:
                self._room_event(item.event)
                await self._update_subscription()

    def _room_event(self, event: dict[str, Any]) -> None:
        """Keep the room's publishers up to date; notice the end of our subscription."""
        sender = event.get("sender")
        kind = event.get("janus")
        if sender is not None and sender == self._sub_handle and kind in ("hangup", "detached"):
            log.info("Janus ended the subscription (%s: %s)", kind, event.get("reason", ""))
            self._sub_feed = None  # _update_subscription replaces it
            return
        if kind != "event" or sender != self._handle:
            return
        data = event.get("plugindata", {}).get("data", {})
        if data.get("videoroom") == "destroyed":
            raise SessionLost("the room was destroyed")
        for publisher in data.get("publishers", []):
            if isinstance(publisher, dict) and "id" in publisher:
                self._publishers[publisher["id"]] = publisher
        for key in ("unpublished", "leaving", "kicked"):
            if key in data:
                self._publishers.pop(data[key], None)

    def _candidate_feed(self) -> Any:
        """The candidate's feed id among the publishers (the latest one with the name), or None."""
        wanted = self.room.candidate
        found = None
        for feed, publisher in self._publishers.items():
            if isinstance(wanted, int):
                if feed == wanted:
                    found = feed
            elif publisher.get("display") == wanted or str(feed) == wanted:
                found = feed
        return found

    def _streams(self, feed: Any) -> tuple[tuple[str, str], ...]:
        """The feed's active streams as (mid, type): a change (camera added/removed) means new tracks."""
        streams = self._publishers.get(feed, {}).get("streams", [])
        return tuple(sorted((str(s.get("mid")), str(s.get("type"))) for s in streams
                            if isinstance(s, dict) and not s.get("disabled")))

    async def _update_subscription(self) -> None:
        feed = self._candidate_feed()
        if self._sub_handle is not None and (
            feed is None or feed != self._sub_feed or self._streams(feed) != self._sub_streams
        ):
            await self._unsubscribe()
        if feed is None:
            self._set_state("waiting for the candidate")
            return
        if self._sub_handle is None:
            try:
                await self._subscribe(feed)
            except JanusError as exc:  # e.g. the feed left meanwhile: wait for the next event
                log.warning("could not subscribe to feed %s: %s", feed, exc)
                await self._unsubscribe()
                self._set_state("waiting for the candidate")

    async def _subscribe(self, feed: Any) -> None:
        session = self._session
        assert session is not None
        self._sub_handle = handle = await session.attach(VIDEOROOM)
        self._sub_feed = feed
        self._sub_streams = self._streams(feed)
        body: dict[str, Any] = {"request": "join", "ptype": "subscriber", "room": self.room.room,
                                "streams": [{"feed": feed}]}
        if self._private_id is not None:
            body["private_id"] = self._private_id  # ties the subscription to our participant
        data, jsep = await session.message(handle, self._with_pin(body))
        if data.get("videoroom") != "attached" or not jsep or jsep.get("type") != "offer":
            raise JanusError(None, f"unexpected answer to subscribe: {data.get('videoroom')!r}")
        self._pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        queue = self._queue
        pc.on("track", self._track)
        pc.on("connectionstatechange", lambda: _offer(queue, _Item("pc", pc=pc)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())  # recvonly: aiortc has no track to send
        await session.message(handle, {"request": "start"},
                              jsep={"type": "answer", "sdp": pc.localDescription.sdp})
        await session.trickle_completed(handle)
        self.subscriptions += 1
        log.info("subscribed to feed %s in Janus room %s", feed, self.room.room)

    async def _pc_changed(self, pc: RTCPeerConnection | None) -> None:
        if pc is None or pc is not self._pc:
            return
        state = pc.connectionState
        if state == "connected":
            self._set_state("receiving")
        elif state in ("failed", "closed"):
            log.warning("connection to Janus %s; subscribing again", state)
            await self._unsubscribe()
            await self._update_subscription()

    async def _unsubscribe(self) -> None:
        """Close our peer connection and detach the subscriber handle (best effort)."""
        pc, self._pc = self._pc, None
        handle, self._sub_handle = self._sub_handle, None
        self._sub_feed = None
        self._sub_streams = ()
        if pc is not None:
            await pc.close()
        if handle is not None:
            await self._quietly(lambda session: session.detach(handle))

    async def _drop_session(self) -> None:
        """Leave the room and end the Janus session (best effort: it may be gone already)."""
        await self._unsubscribe()
        handle, self._handle = self._handle, None
        if handle is not None:
            await self._quietly(lambda session: session.detach(handle))
        session, self._session = self._session, None
        self._publishers = {}
        if session is not None:
            await session.close(destroy=True)

    async def _quietly(self, call: Callable[[JanusSession], Any], timeout: float = 3.0) -> None:
        session = self._session
        if session is None or session.lost is not None:
            return
        try:
            await asyncio.wait_for(call(session), timeout)
        except (TimeoutError, JanusError, SessionLost, aiohttp.ClientError) as exc:
            log.info("Janus cleanup request failed: %s", exc)

    def _track(self, track: MediaStreamTrack) -> None:
        log.info("receiving %s from the candidate's Janus feed", track.kind)
        if self._on_track is None:
            return
        try:
            self._on_track(track)
        except Exception:  # the consumer's bug must not end the subscription
            log.exception("on_track failed")

    def _with_pin(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.room.pin is not None:
            return {**body, "pin": self.room.pin.reveal()}
        return body


def _offer(queue: asyncio.Queue[_Item], item: _Item) -> None:
    """Queue without blocking; when full (it should never be) drop the oldest and say so."""
    if queue.full():
        dropped = queue.get_nowait()
        log.error("Janus adapter queue full: dropped a %s item", dropped.kind)
    queue.put_nowait(item)
