"""A Janus VideoRoom participant for tests: publishes real media with aiortc, under a display name.

`JanusPublisher` joins a room (``ptype: publisher``) and publishes looping media from the shared
media folder (`tests.support.candidate.LoopingTrack`): video and/or audio. It can add the camera
later (a renegotiation), unpublish and publish again, and `reconnect()` after a Janus restart (a
new session, a new feed id, the same display name). It reuses the adapter's `JanusSession` for the
HTTP API (create, attach, messages, long poll, keepalive).

`room_participants()` asks the VideoRoom who is in a room (``listparticipants``), with a session of
its own, as an independent observer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from adapters.conferencing.janus import VIDEOROOM, JanusSession
from tests.support.candidate import LoopingTrack


class JanusPublisher:
    """One participant publishing `video`/`audio` files (looped) into a Janus VideoRoom."""

    def __init__(
        self, url: str, room: int, display: str, *, pin: str | None = None,
        video: Path | None = None, audio: Path | None = None, keepalive_every: float = 25.0,
    ) -> None:
        self.url = url
        self.room = room
        self.display = display
        self.pin = pin
        self.video = video
        self.audio = audio
        self.keepalive_every = keepalive_every
        self.feed_id: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._session: JanusSession | None = None
        self._handle: int | None = None
        self._pc: RTCPeerConnection | None = None

    async def start(self) -> None:
        """Join the room and publish."""
        self._http = self._http or aiohttp.ClientSession()
        self._session = await JanusSession.create(self._http, self.url, keepalive_every=self.keepalive_every)
        self._handle = await self._session.attach(VIDEOROOM)
        body: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": self.room, "display": self.display}
        if self.pin is not None:
            body["pin"] = self.pin
        data, _ = await self._session.message(self._handle, body)
        self.feed_id = data["id"]
        await self.publish()

    async def publish(self) -> None:
        assert self._session is not None and self._handle is not None
        self._pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if self.video is not None:
            pc.addTrack(LoopingTrack(self.video, "video"))
        if self.audio is not None:
            pc.addTrack(LoopingTrack(self.audio, "audio"))
        await pc.setLocalDescription(await pc.createOffer())
        _, jsep = await self._session.message(
            self._handle, {"request": "publish"}, jsep={"type": "offer", "sdp": pc.localDescription.sdp})
        assert jsep is not None and jsep["type"] == "answer", jsep
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        await self._session.trickle_completed(self._handle)

    async def add_video(self, video: Path) -> None:
        """Turn the camera on while publishing: add a video track and renegotiate (``configure``)."""
        assert self._session is not None and self._handle is not None and self._pc is not None
        self.video = video
        self._pc.addTrack(LoopingTrack(video, "video"))
        await self._pc.setLocalDescription(await self._pc.createOffer())
        _, jsep = await self._session.message(
            self._handle, {"request": "configure"}, jsep={"type": "offer", "sdp": self._pc.localDescription.sdp})
        assert jsep is not None and jsep["type"] == "answer", jsep
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))

    async def unpublish(self) -> None:
        assert self._session is not None and self._handle is not None
        await self._session.message(self._handle, {"request": "unpublish"})
        await self._close_pc()

    async def reconnect(self) -> None:
        """After a Janus restart: the old session is gone; join and publish again."""
        await self._close_pc()
        if self._session is not None:
            await self._session.close(destroy=False)
        await self.start()

    async def stop(self) -> None:
        await self._close_pc()
        if self._session is not None:
            await self._session.close(destroy=True)
            self._session = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _close_pc(self) -> None:
        pc, self._pc = self._pc, None
        if pc is not None:
            for sender in pc.getSenders():
                if sender.track is not None:
                    sender.track.stop()
            await pc.close()


async def room_participants(url: str, room: int) -> list[dict[str, Any]]:
    """``listparticipants`` of the room: ``[{"id", "display", "publisher", ...}]``."""
    async with aiohttp.ClientSession() as http:
        session = await JanusSession.create(http, url)
        try:
            handle = await session.attach(VIDEOROOM)
            data, _ = await session.message(handle, {"request": "listparticipants", "room": room})
            return list(data.get("participants", []))
        finally:
            await session.close(destroy=True)
