"""WHEP adapter (RFC 9725): pull the candidate's stream from a media server with one HTTP exchange.

A session is a receive-only aiortc peer (``recvonly`` audio and video transceivers, no ICE servers):
aiortc gathers its candidates before the offer is made, so the offer is complete and nothing is
trickled. The client POSTs it (``Content-Type: application/sdp``, ``Authorization: Bearer`` when
the room has a token) to the endpoint; the server answers ``201 Created`` with the SDP answer (its
ICE candidates inside) and the session's resource URL in ``Location``. ``DELETE`` on that URL ends
the session.

Not used: trickle and ICE restarts (``PATCH``, which aiortc cannot do), and ICE servers the
server may advertise in ``Link`` headers (they come with the answer, after aiortc has gathered).

The server may drop a session (it restarts, the publisher goes away, it deletes the resource): the
peer connection then closes (DTLS close) or fails (ICE consent lost). The adapter then opens a new
session, backing off while the server refuses; a refusal meaning "no such stream yet" (404, 409,
503) is shown as "waiting for the candidate".
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from adapters.conferencing import Backoff, JoinError, SourceBase, StateHandler, TrackHandler, WhepRoom

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 15.0
NOT_THERE_YET = {404, 409, 503}  # statuses servers use while the stream is not published


class WhepError(RuntimeError):
    """The WHEP server refused or answered something that is not a WHEP answer."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"WHEP {status}: {reason}" if status is not None else f"WHEP: {reason}")
        self.status = status


class WhepSession:
    """One WHEP session: the receive-only peer connection and its resource on the server."""

    def __init__(self, on_track: TrackHandler) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", on_track)
        self.resource: str | None = None
        self.ended = asyncio.Event()  # the connection failed or was closed
        self.pc.on("connectionstatechange", self._state_changed)

    async def open(self, http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        """POST the complete offer, apply the answer, remember the resource's URL."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(
            url, data=self.pc.localDescription.sdp,
            headers={**headers, "Content-Type": "application/sdp", "Accept": "application/sdp"},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise WhepError(resp.status, resp.reason or body[:200])
            location = resp.headers.get("Location")
            if not location:
                raise WhepError(resp.status, "the answer has no Location header")
            self.resource = urljoin(str(resp.url), location)  # may be relative (RFC 9725)
        if not body.startswith("v=0"):
            raise WhepError(201, "the answer is not an SDP")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def close(self, http: aiohttp.ClientSession | None, headers: dict[str, str]) -> None:
        """DELETE the resource (best effort: it may be gone already) and close the peer."""
        resource, self.resource = self.resource, None
        if resource is not None and http is not None:
            try:
                async with http.delete(resource, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    log.info("WHEP DELETE: HTTP %s", resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.info("WHEP DELETE failed: %s", exc)
        await self.pc.close()

    def _state_changed(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.ended.set()


class WhepSource(SourceBase):
    """`MediaSource` for a WHEP endpoint; reconnects with backoff when the server drops the session."""

    def __init__(self, room: WhepRoom, *, on_state: StateHandler | None = None, backoff: Backoff | None = None) -> None:
        super().__init__(on_state=on_state)
        self.room = room
        self.backoff = backoff or Backoff()
        self.sessions = 0  # sessions opened (1 + reconnections)
        self._on_track: TrackHandler | None = None
        self._session: WhepSession | None = None

    async def join(self, on_track: TrackHandler) -> None:
        if self._task is not None or self.state == "left":
            raise RuntimeError("join() is called once per WhepSource")
        self._on_track = on_track
        self._http = aiohttp.ClientSession()
        try:
            await self._open()
            if self.state == "left":  # leave() while the first session was being opened
                raise WhepError(None, "left before the session was open")
        except Exception as exc:  # whatever went wrong, the caller gets one error and nothing left open
            await self.leave()
            raise JoinError(f"could not open a WHEP session: {exc}") from exc
        self._task = asyncio.create_task(self._run())

    async def _release(self) -> None:
        await self._close_session()

    async def _open(self) -> None:
        assert self._http is not None
        self._session = session = WhepSession(self._track)
        session.pc.on("connectionstatechange", lambda: self._connection_changed(session))
        await session.open(self._http, self.room.url, self._headers())
        self.sessions += 1
        log.info("WHEP session opened (resource %s)", urlsplit(session.resource or "").path)  # no query: tokens

    async def _run(self) -> None:
        """Wait for the session to end, then open a new one, backing off while the server refuses."""
        while True:
            assert self._session is not None
            await self._session.ended.wait()
            log.warning("WHEP session ended (%s); reconnecting", self._session.pc.connectionState)
            self._set_state("reconnecting")
            await self._close_session()
            while self._session is None:
                await asyncio.sleep(self.backoff.next_delay())
                try:
                    await self._open()
                except (TimeoutError, WhepError, aiohttp.ClientError, ValueError) as exc:
                    log.warning("WHEP reconnection failed: %s", exc)
                    missing = isinstance(exc, WhepError) and exc.status in NOT_THERE_YET
                    self._set_state("waiting for the candidate" if missing else "reconnecting")
                    await self._close_session()

    def _connection_changed(self, session: WhepSession) -> None:
        if session is self._session and session.pc.connectionState == "connected":
            self.backoff.reset()
            self._set_state("receiving")

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(self._http, self._headers())

    def _headers(self) -> dict[str, str]:
        if self.room.bearer is None:
            return {}
        return {"Authorization": f"Bearer {self.room.bearer.reveal()}"}

    def _track(self, track: MediaStreamTrack) -> None:
        log.info("receiving %s over WHEP", track.kind)
        if self._on_track is None:
            return
        try:
            self._on_track(track)
        except Exception:  # the consumer's bug must not end the session
            log.exception("on_track failed")
