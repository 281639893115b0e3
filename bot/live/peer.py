"""The live bot as a silent, visible, receive-only participant of an interview.

`BotPeer` joins the signaling server (python-socketio ``AsyncClient``, the bot's
service token), watches ``participants`` and keeps one receive-only WebRTC
session (`bot.live.receive.ReceiveSession`) with the current candidate socket:
a new candidate sid (reload, reconnect) gets a new offer, a departed one has its
session closed, a session that fails, closes, or gets no answer/connection in
time is replaced by a fresh offer. Received tracks go to readers that outlive
sessions (`video`, `audio`), so the pipeline keeps the same objects across
reconnects. Page events become `PageObservation`s in a bounded queue. The bot
sends no media; it sends ``bot_event``s (with a base64 JPEG snapshot) and a chat
line when it joins and leaves.

With ``receive=False`` (the call is on another platform) it offers to nobody: the
media comes from a `bot.ports.MediaSource` whose tracks are handed to `add_track`,
into the same readers.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import socketio
from aiortc.mediastreams import MediaStreamTrack

from bot.analysis.evidence import shrink_jpeg
from bot.analysis.observations import PageObservation
from bot.live.readers import AudioReader, Clock, LatestFrame
from bot.live.receive import ReceiveSession

log = logging.getLogger(__name__)

PAGE_KINDS = ("tab_hidden", "window_blur")
# the server refuses decoded snapshots over 384 KiB and bot_event messages over 512 KiB of JSON;
# base64 grows by 4/3, so leave room for the event itself
SNAPSHOT_LIMIT = 360 * 1024
OUTBOX_SIZE = 200  # bot_events kept until the server acknowledges them (oldest dropped beyond)
OUTBOX_BURST = 40  # resent at once on reconnect; then paced under the server's 20/s rate limit
PAGE_T_SKEW = 2.0  # seconds a page event's server time may differ from our clock


class BotPeer:
    def __init__(
        self,
        server_url: str,
        bot_token: str,
        *,
        clock: Clock | None = None,
        audio_chunk: float = 0.5,
        audio_rate: int = 16000,
        audio_ring: int = 20,
        on_media: Callable[[str], None] | None = None,
        answer_timeout: float = 15.0,
        retry_grace: float = 2.0,
        page_queue: int = 256,
        resumed: str | None = None,
        video_wanted: dict[str, int] | None = None,
        receive: bool = True,
    ) -> None:
        self.server_url = server_url
        self.bot_token = bot_token
        # What the candidate's page should send the bot (``maxFramerate``, ``maxHeight``, ``maxBitrate``):
        # only what it samples
        self.video_wanted = video_wanted
        self.resumed = resumed  # why the previous bot of this call ended (a restart or a takeover), if any
        # One id per bot process: the server tells a reconnect of this bot (its open events go on) from
        # a new bot (the events a previous bot left open are closed as interrupted).
        self.instance = uuid.uuid4().hex
        if clock is None:
            origin = time.monotonic()
            clock = lambda: time.monotonic() - origin
        self.clock: Clock = clock
        self.audio_chunk = audio_chunk
        self.audio_rate = audio_rate
        self.audio_ring = audio_ring
        self.on_media = on_media
        self.receive = receive  # False: no WebRTC session with the candidate's page; tracks come via add_track
        self.answer_timeout = answer_timeout  # offer -> connected, else a new offer
        self.retry_grace = retry_grace  # failed/closed -> a new offer after this
        self.video: LatestFrame | None = None
        self.audio: AudioReader | None = None
        self.page_events: asyncio.Queue[PageObservation] = asyncio.Queue(maxsize=page_queue)
        self.page_events_dropped = 0
        self.session: ReceiveSession | None = None
        self.offers_sent = 0
        self.reoffers = 0
        self.connect_seconds: list[float] = []  # offer sent -> connected, per session
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.disconnect_reason: str | None = None
        self._wanted: str | None = None  # sid of the candidate to receive from
        self._stale = False  # our own sid changed: the current session is dead
        self._stopping = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unacked: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self._sequence = 0
        self.events_lost = 0  # pushed out of a full outbox before the server acknowledged them
        # handle_sigint=False: the client must not take SIGINT from the process that runs it (proctor serve)
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=1, reconnection_delay_max=5,
                                        handle_sigint=False)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("participants", self._on_participants)
        self.sio.on("signal", self._on_signal)
        self.sio.on("page_event", self._on_page_event)
        self.sio.on("error", self._on_error)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def sid(self) -> str | None:
        return self.sio.get_sid()

    @property
    def candidate_sid(self) -> str | None:
        return self._wanted

    @property
    def media_connected(self) -> bool:
        return self.session is not None and self.session.connected

    def _auth(self) -> dict[str, str]:
        """Sent with every (re)connect: the token, this bot's instance id and why its predecessor ended."""
        auth = {"token": self.bot_token, "instance": self.instance}
        if self.resumed:
            auth["resumed"] = self.resumed[:200]
        return auth

    async def start(self) -> None:
        """Join the call; raises socketio.exceptions.ConnectionError if the server refuses."""
        self._stopping = False
        await self.sio.connect(self.server_url, auth=self._auth, wait_timeout=10)
        await self.send_chat("Proctoring bot joined")

    @property
    def unacknowledged(self) -> int:
        """bot_events not yet acknowledged by the server (resent after a reconnect)."""
        return len(self._unacked)

    async def stop(self, ack_timeout: float = 3.0) -> None:
        """Say goodbye, close the session and the readers, leave the server.

        Waits up to `ack_timeout` seconds for the server to acknowledge the events sent so far.
        """
        self._stopping = True
        deadline = time.monotonic() + ack_timeout
        while self._unacked and self.online and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._unacked:
            log.warning("leaving with %d bot_events the server did not acknowledge", len(self._unacked))
        if self.online:
            await self.send_chat("Proctoring bot left")
        async with self._lock:
            self._wanted = None
            await self._close_session()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for reader in (self.video, self.audio):
            if reader is not None:
                await reader.close()
        await self.sio.disconnect()

    # -- outgoing ----------------------------------------------------------------------------

    async def send_chat(self, text: str) -> bool:
        return await self._emit("chat", {"text": text[:500]})

    def say(self, text: str) -> None:
        """Post a chat line in the background (from a synchronous callback); dropped while offline."""
        if not self._stopping:
            self._spawn(self.send_chat(text))

    async def send_event(self, change: str, event: dict[str, Any], snapshot_jpeg: bytes | None = None,
                         taken_at: float | None = None) -> bool:
        """Send one event change; False if the socket is away.

        Every change is kept until the server acknowledges it and resent after a reconnect
        (the server upserts events by id), up to OUTBOX_SIZE changes.
        """
        payload: dict[str, Any] = {"change": change, "event": {k: v for k, v in event.items() if k != "snapshot"}}
        if taken_at is not None:
            payload["taken_at"] = round(taken_at, 3)
        if snapshot_jpeg:
            jpeg = await fit_snapshot(snapshot_jpeg)
            if jpeg:
                payload["snapshot_b64"] = base64.b64encode(jpeg).decode("ascii")
        self._sequence += 1
        self._unacked[self._sequence] = payload
        while len(self._unacked) > OUTBOX_SIZE:
            self._unacked.popitem(last=False)
            self.events_lost += 1
        return await self._push(self._sequence)

    async def send_state(self, state: dict[str, Any]) -> bool:
        """The bot's heartbeat (``bot_state``); nothing is kept when the socket is away (the next one follows)."""
        return await self._emit("bot_state", state)

    async def _push(self, key: int) -> bool:
        payload = self._unacked.get(key)
        if payload is None:
            return True
        return await self._emit("bot_event", payload, callback=lambda *_: self._unacked.pop(key, None))

    def take_page_observations(self) -> list[PageObservation]:
        out: list[PageObservation] = []
        while not self.page_events.empty():
            out.append(self.page_events.get_nowait())
        return out

    @property
    def online(self) -> bool:
        """Joined to the server (already true inside the connect handler, unlike sio.connected)."""
        return "/" in self.sio.namespaces

    async def _emit(self, event: str, payload: dict[str, Any], callback: Callable[..., Any] | None = None) -> bool:
        if not self.online:
            return False
        try:
            await self.sio.emit(event, payload, callback=callback)
        except socketio.exceptions.SocketIOError as exc:
            log.warning("could not send %s: %s", event, exc)
            return False
        return True

    # -- socket events -----------------------------------------------------------------------

    async def _on_connect(self) -> None:
        log.info("bot joined %s as %s", self.server_url, self.sid)
        if self.session is not None:  # a reconnect: the candidate's page dropped our old sid
            self._stale = True
            self._spawn(self._reconcile())
        if self._unacked:
            self._spawn(self._resend())

    async def _resend(self) -> None:
        for sent, key in enumerate(list(self._unacked)):
            if not await self._push(key):
                break
            if sent >= OUTBOX_BURST:
                await asyncio.sleep(0.07)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnect_reason = str(reason) if reason is not None else None
        log.info("bot left the signaling server (%s)", reason)

    async def _on_error(self, data: Any) -> None:
        log.warning("signaling server error: %s", data)
        self.errors.append(data if isinstance(data, dict) else {"error": str(data)})

    async def _on_participants(self, data: Any) -> None:
        members = data.get("participants") if isinstance(data, dict) else None
        if not isinstance(members, list):
            return
        candidates = [p["sid"] for p in members
                      if isinstance(p, dict) and p.get("role") == "candidate" and p.get("sid")]
        self._wanted = candidates[-1] if candidates else None  # the newest candidate socket
        await self._reconcile()

    async def _on_signal(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        session = self.session
        kind, sender, data = message.get("kind"), message.get("from"), message.get("data")
        if session is None or sender != session.remote_sid:
            log.debug("ignored %s from %s: no session with it", kind, sender)
            return
        if kind == "answer":
            try:
                await session.accept_answer(data)
            except Exception as exc:  # a bad answer: the watchdog offers again
                log.warning("could not apply the answer from %s: %s", sender, exc)
                self._spawn(self._watch(session, self.retry_grace))
        elif kind == "candidate":
            await session.add_candidate(data)
        else:
            log.debug("ignored %s from %s: the bot only offers", kind, sender)

    async def _on_page_event(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("kind") not in PAGE_KINDS:
            return
        now = self.clock()
        t = data.get("t")
        # the server stamps t in seconds since the interview started, the same base as a clock
        # built on the interview's started_at; any other clock gets the arrival time instead
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not abs(t - now) <= PAGE_T_SKEW:
            t = now
        observation = PageObservation(t=float(t), kind=data["kind"], active=bool(data.get("active")))
        if self.page_events.full():
            self.page_events.get_nowait()
            self.page_events_dropped += 1
        self.page_events.put_nowait(observation)

    # -- sessions ----------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Make the session match the wanted candidate sid (serialised; uses the latest state)."""
        async with self._lock:
            session = self.session
            if session is not None and (self._stale or self._wanted != session.remote_sid):
                await self._close_session()
            self._stale = False
            if (self.receive and self._wanted is not None and self.session is None and not self._stopping
                    and self.online):
                await self._open_session(self._wanted)

    async def _open_session(self, remote_sid: str) -> None:
        session = ReceiveSession(remote_sid, on_track=self.add_track, on_trouble=self._on_trouble)
        self.session = session
        offer = await session.create_offer()
        sent_at = time.monotonic()
        session.pc.on("connectionstatechange", lambda: self._connected(session, sent_at))
        data: dict[str, Any] = {**offer, "send": self.video_wanted} if self.video_wanted else dict(offer)
        if not await self._emit("signal", {"to": remote_sid, "kind": "offer", "data": data}):
            log.warning("could not send the offer to %s", remote_sid)
        self.offers_sent += 1
        self._spawn(self._watch(session, self.answer_timeout))

    async def _close_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    def _connected(self, session: ReceiveSession, sent_at: float) -> None:
        if session.state == "connected" and session.connected_at is not None:
            self.connect_seconds.append(session.connected_at - sent_at)

    def add_track(self, track: MediaStreamTrack) -> None:
        """Read a received track (replacing the previous one of its kind) into `video` / `audio`."""
        if self._stopping:  # the readers are closing or closed
            return
        if track.kind == "video":
            if self.video is None:
                self.video = LatestFrame(self.clock)
            self.video.attach(track)
        elif track.kind == "audio":
            if self.audio is None:
                self.audio = AudioReader(
                    self.clock, chunk_seconds=self.audio_chunk, sample_rate=self.audio_rate, max_chunks=self.audio_ring
                )
            self.audio.attach(track)
        else:
            return
        if self.on_media is not None:
            try:
                self.on_media(track.kind)
            except Exception:
                log.exception("on_media(%s) failed", track.kind)

    def _on_trouble(self, session: ReceiveSession, state: str) -> None:
        if session is self.session and not self._stopping:
            self._spawn(self._watch(session, self.retry_grace))

    async def _watch(self, session: ReceiveSession, delay: float) -> None:
        """After `delay`, offer again if `session` is still current and not connected."""
        await asyncio.sleep(delay)
        async with self._lock:
            if session is not self.session or session.connected or self._stopping:
                return
            log.info("no media from %s (%s): offering again", session.remote_sid, session.state)
            self.reoffers += 1
            await self._close_session()
            if self._wanted == session.remote_sid and self.online:
                await self._open_session(session.remote_sid)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def fit_snapshot(jpeg: bytes, limit: int = SNAPSHOT_LIMIT) -> bytes | None:
    """`jpeg` if within `limit`, else re-encoded smaller (in a thread); None if it cannot fit."""
    if len(jpeg) <= limit:
        return jpeg
    return await asyncio.to_thread(shrink_jpeg, jpeg, limit)
