"""A small WHEP endpoint (RFC 9725) for tests, built over aiortc + aiohttp.

There is no WHEP server package here (no MediaMTX, SRS, Janus WHEP gateway...), so the tests use
this one: it plays looping media from the shared folder (`tests.support.candidate.LoopingTrack`) to
every session, as a media server plays a published stream.

- ``POST /whep/<stream>`` with ``Content-Type: application/sdp`` and the complete offer -> ``201``,
  the SDP answer (all candidates inside: aiortc gathers before answering) and ``Location:
  /whep/resource/<id>`` (relative, as RFC 9725 allows). ``415`` for another content type, ``401``
  without the right ``Authorization: Bearer`` (when `bearer` is set; DELETE too), ``404`` for another stream,
  ``503`` while `refusing` is set (the stream is away).
- ``DELETE /whep/resource/<id>`` -> ``200`` and the session ends; ``404`` if unknown.
- `drop()` ends every session from the server side (its peer connections close and the
  resources are forgotten), as a media server does when it restarts.

`posts`, `deletes` and `sessions` let a test see what the client did.
"""
from __future__ import annotations

import secrets
from pathlib import Path

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.support.candidate import LoopingTrack


class WhepEndpoint:
    """A WHEP server on 127.0.0.1 serving one stream, ``/whep/<stream>``."""

    def __init__(self, video: Path, audio: Path, *, stream: str = "interview", bearer: str | None = None) -> None:
        self.video = video
        self.audio = audio
        self.stream = stream
        self.bearer = bearer
        self.refusing = False
        self.posts = 0
        self.deletes: list[str] = []  # resource ids deleted by the client
        self.sessions: dict[str, RTCPeerConnection] = {}
        self.app = web.Application()
        self.app.router.add_post("/whep/{stream}", self._post)
        self.app.router.add_delete("/whep/resource/{id}", self._delete)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/whep/{self.stream}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drop(self) -> None:
        """End every session from the server side."""
        sessions, self.sessions = self.sessions, {}
        for pc in sessions.values():
            await _close(pc)

    async def _post(self, request: web.Request) -> web.Response:
        self.posts += 1
        if request.match_info["stream"] != self.stream or self.refusing:
            return web.Response(status=503 if self.refusing else 404, text="no such stream")
        if not self._authorized(request):
            return web.Response(status=401, text="bad token", headers={"WWW-Authenticate": "Bearer"})
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="expected application/sdp")
        offer = await request.text()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            for transceiver in pc.getTransceivers():  # the client's recvonly transceivers: send on them
                path = self.video if transceiver.kind == "video" else self.audio
                pc.addTrack(LoopingTrack(path, transceiver.kind))
            await pc.setLocalDescription(await pc.createAnswer())
        except ValueError as exc:
            await _close(pc)
            return web.Response(status=400, text=f"bad offer: {exc}")
        resource = secrets.token_hex(8)
        self.sessions[resource] = pc
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whep/resource/{resource}"})

    async def _delete(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401, text="bad token", headers={"WWW-Authenticate": "Bearer"})
        resource = request.match_info["id"]
        pc = self.sessions.pop(resource, None)
        if pc is None:
            return web.Response(status=404, text="no such session")
        self.deletes.append(resource)
        await _close(pc)
        return web.Response(status=200)


    def _authorized(self, request: web.Request) -> bool:
        return self.bearer is None or request.headers.get("Authorization") == f"Bearer {self.bearer}"


async def _close(pc: RTCPeerConnection) -> None:
    for sender in pc.getSenders():
        if sender.track is not None:
            sender.track.stop()
    await pc.close()
