"""A scripted interview candidate for tests: aiortc + python-socketio, sending real media.

`CandidatePeer` joins the signaling server with a candidate token, answers every
WebRTC offer it gets (from the bot, the interviewer, anyone) with the tracks of
a looping media file, and can send `page_event`s.

`LoopingTrack` plays a file for ever with `aiortc.contrib.media.MediaPlayer`.
``MediaPlayer(path, loop=True)`` does not loop with PyAV 18: at the end of the file
``next(container.decode())`` raises ``av.error.EOFError`` where aiortc expects
``StopIteration``, so the track just ends. LoopingTrack opens a fresh player at
each end and shifts the timestamps so they keep increasing.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import av
import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.support.paths import MEDIA

log = logging.getLogger(__name__)

STUDENT_VIDEO = MEDIA / "video" / "student.mkv"
ENGLISH_AUDIO = MEDIA / "audio" / "english.wav"


class LoopingTrack(MediaStreamTrack):
    """One kind ("video"/"audio") of a media file, played in a loop at its own rate."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.path = str(path)
        self.loops = 0
        self._player: MediaPlayer | None = None
        self._source: MediaStreamTrack | None = None
        self._offset = 0  # added to the pts of the current pass
        self._next_pts = 0  # first pts after the last frame returned
        self._last_pts: int | None = None
        self._step = 1  # pts between two video frames

    def _open(self) -> MediaStreamTrack:
        self._player = MediaPlayer(self.path)
        source = self._player.video if self.kind == "video" else self._player.audio
        if source is None:
            raise ValueError(f"{self.path} has no {self.kind} stream")
        self._source = source
        return source

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source or self._open()
            try:
                frame = await source.recv()
            except MediaStreamError:
                if self.readyState != "live" or self.loops > 100_000:
                    raise
                self.loops += 1
                self._source = None
                self._offset = self._next_pts
                continue
            frame.pts += self._offset
            if isinstance(frame, av.AudioFrame):
                self._next_pts = frame.pts + frame.samples
            else:
                if self._last_pts is not None and frame.pts > self._last_pts:
                    self._step = frame.pts - self._last_pts
                self._last_pts = frame.pts
                self._next_pts = frame.pts + self._step
            return frame

    def stop(self) -> None:
        super().stop()
        if self._source is not None:
            self._source.stop()
            self._source = None


class RateLimited(MediaStreamTrack):
    """A video track passed on at no more than ``max_fps`` (as a browser honours ``maxFramerate``)."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, max_fps: float) -> None:
        super().__init__()
        self.source = source
        self.period = 1.0 / max_fps
        self._next: float | None = None

    async def recv(self) -> av.VideoFrame:
        while True:
            frame = await self.source.recv()
            t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else 0.0
            if self._next is None or t + 1e-6 >= self._next or t < self._next - 10 * self.period:
                self._next = t + self.period if self._next is None or t >= self._next + self.period \
                    else self._next + self.period
                return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class EncodedTrack(MediaStreamTrack):
    """One stream of a pre-encoded file (packets read once into memory), sent packet by packet at the pace of
    its timestamps, looping with timestamps that keep going forward. No thread, nothing queued: aiortc's
    ``MediaPlayer(decode=False, loop=True)`` stops throttling after its first loop (its check compares the
    looped timestamps with the time since the start), so its reader thread spins and its queue grows: that
    was most of a benchmark candidate's CPU."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__()
        self.kind = kind
        with av.open(str(path)) as c:
            stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
            self._time_base = stream.time_base
            packets = [p for p in c.demux(stream) if p.size and p.pts is not None]
        first = packets[0].pts
        self._packets = [(p, int(p.pts - first)) for p in packets]
        step = (self._packets[-1][1] - self._packets[0][1]) / max(1, len(self._packets) - 1)
        self._length = self._packets[-1][1] + max(1, round(step))  # one pass, in time-base units
        self._i = 0
        self._start: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        loop_n, k = divmod(self._i, len(self._packets))
        self._i += 1
        packet, pts = self._packets[k]
        pts += loop_n * self._length
        at = float(pts * self._time_base)
        clock = asyncio.get_running_loop()
        if self._start is None:
            self._start = clock.time() - at
        wait = self._start + at - clock.time()
        if wait > 0:
            await asyncio.sleep(wait)
        packet.pts = packet.dts = pts
        packet.time_base = self._time_base
        return packet


class CandidatePeer:
    """A candidate that answers WebRTC offers from any participant with real media.

    ``encoded``: a WebM file (VP8 + Opus) sent as it is, packet by packet, in a loop (aiortc packs the
    pre-encoded frames): what a browser would send, without the cost of encoding it here, so a benchmark
    measures the bots and not the candidates' encoders."""

    def __init__(
        self,
        server_url: str,
        token: str,
        video_path: str | Path,
        audio_path: str | Path | None = None,
        *,
        ignore_offers: int = 0,
        encoded: str | Path | None = None,
    ) -> None:
        self.server_url = server_url
        self.token = token
        self.encoded = encoded
        self.video = LoopingTrack(video_path, "video")
        self.audio = LoopingTrack(audio_path, "audio") if audio_path is not None else None
        self.ignore_offers = ignore_offers  # drop this many offers first (tests a re-offer)
        self.offers_received = 0
        self.answers_sent = 0
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.errors: list[dict[str, Any]] = []
        self.chats: list[dict[str, Any]] = []
        self._relay = MediaRelay()
        self._lock = asyncio.Lock()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("signal", self._on_signal)
        self.sio.on("participants", self._on_participants)
        self.sio.on("error", self._on_error)
        self.sio.on("chat", self._on_chat)

    @property
    def sid(self) -> str | None:
        return self.sio.get_sid()

    async def start(self) -> None:
        await self.sio.connect(self.server_url, auth={"token": self.token}, wait_timeout=10)

    async def stop(self) -> None:
        await self.close_peer_connections()
        self.video.stop()
        if self.audio is not None:
            self.audio.stop()
        if self.sio.connected:
            await self.sio.disconnect()

    async def close_peer_connections(self) -> None:
        """Drop the media without leaving the room (like a network cut)."""
        pcs, self.pcs = list(self.pcs.values()), {}
        for pc in pcs:
            await pc.close()

    async def send_page_event(self, kind: str, active: bool) -> None:
        await self.sio.emit("page_event", {"kind": kind, "active": active})

    async def _on_error(self, data: dict[str, Any]) -> None:
        self.errors.append(data)

    async def _on_chat(self, data: dict[str, Any]) -> None:
        self.chats.append(data)

    async def _on_participants(self, data: dict[str, Any]) -> None:
        present = {p.get("sid") for p in data.get("participants", [])}
        for sid in [s for s in self.pcs if s not in present]:
            await self.pcs.pop(sid).close()

    async def _on_signal(self, message: dict[str, Any]) -> None:
        if message.get("kind") != "offer":
            return  # aiortc offers carry all their candidates
        sender = message["from"]
        self.offers_received += 1
        if self.ignore_offers > 0:
            self.ignore_offers -= 1
            return
        async with self._lock:
            old = self.pcs.pop(sender, None)
            if old is not None:
                await old.close()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.pcs[sender] = pc
            data = message["data"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
            if self.encoded is not None:
                for kind in ("video", "audio"):
                    pc.addTrack(EncodedTrack(self.encoded, kind))
                await pc.setLocalDescription(await pc.createAnswer())
                answer = pc.localDescription
                await self.sio.emit(
                    "signal", {"to": sender, "kind": "answer", "data": {"type": answer.type, "sdp": answer.sdp}})
                self.answers_sent += 1
                return
            video: MediaStreamTrack = self._relay.subscribe(self.video, buffered=False)
            want = data.get("send") if isinstance(data.get("send"), dict) else {}
            if want.get("maxFramerate"):  # the bot asks for only what it samples, as the real page honours
                video = RateLimited(video, float(want["maxFramerate"]))
            pc.addTrack(video)
            if self.audio is not None:
                pc.addTrack(self._relay.subscribe(self.audio, buffered=False))
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription
            await self.sio.emit(
                "signal",
                {"to": sender, "kind": "answer", "data": {"type": answer.type, "sdp": answer.sdp}},
            )
            self.answers_sent += 1
