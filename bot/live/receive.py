"""One receive-only WebRTC session of the bot with one remote participant.

The bot offers (``recvonly`` video and audio, no tracks of its own); aiortc
gathers every ICE candidate inside ``setLocalDescription``, so the offer is
complete and nothing is trickled. The remote side answers once; candidates it
trickles anyway are added (mDNS ``.local`` ones are skipped: aioice cannot
resolve them). The offer asks for 60 ms audio packets (``a=ptime:60``, which
Chromium's Opus encoder follows) instead of 20 ms: the bot judges audio in
0.5 s chunks, so it takes a third of the packets to receive, decrypt and decode
for the same sound. A session is never restarted: the bot replaces it with a new one
(see `bot.live.peer.BotPeer`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger(__name__)

MAX_EARLY_CANDIDATES = 64
AUDIO_PTIME_MS = 60  # audio packet length the bot asks for (Opus allows 10-120 ms)


def ask_ptime(sdp: str, ms: int = AUDIO_PTIME_MS) -> str:
    """The SDP with ``a=ptime:ms`` in every audio section that has none."""
    nl = "\r\n" if "\r\n" in sdp else "\n"
    sections: list[list[str]] = [[]]
    for line in sdp.split(nl):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out: list[str] = []
    for lines in sections:
        if lines and lines[0].startswith("m=audio") and not any(x.startswith("a=ptime:") for x in lines):
            while lines and lines[-1] == "":
                lines.pop()
            lines.append(f"a=ptime:{ms}")
        out.extend(lines)
    text = nl.join(out)
    return text if text.endswith(nl) else text + nl


class ReceiveSession:
    """A recvonly RTCPeerConnection to `remote_sid`; reports tracks and trouble by callbacks."""

    def __init__(
        self,
        remote_sid: str,
        *,
        on_track: Callable[[MediaStreamTrack], None],
        on_trouble: Callable[[ReceiveSession, str], None],
    ) -> None:
        self.remote_sid = remote_sid
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.answered = False
        self.closing = False
        self._early: list[dict[str, Any]] = []
        self._on_track = on_track
        self._on_trouble = on_trouble
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", self._track)
        self.pc.on("connectionstatechange", self._state_changed)

    @property
    def state(self) -> str:
        return self.pc.connectionState

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def create_offer(self) -> dict[str, str]:
        """The complete offer (ICE gathered), as the ``data`` of a ``signal``."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        return {"type": offer.type, "sdp": ask_ptime(offer.sdp)}

    async def accept_answer(self, data: Any) -> bool:
        """Apply the remote answer; False if it is not one this session waits for."""
        if self.closing or self.pc.signalingState != "have-local-offer":
            return False
        if not isinstance(data, dict) or data.get("type") != "answer" or not isinstance(data.get("sdp"), str):
            log.warning("ignored a malformed answer from %s", self.remote_sid)
            return False
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        self.answered = True
        early, self._early = self._early, []
        for candidate in early:
            await self.add_candidate(candidate)
        return True

    async def add_candidate(self, data: dict[str, Any] | None) -> None:
        """A trickled remote candidate (``{candidate, sdpMid, sdpMLineIndex}``); empty/None ends them."""
        if self.closing:
            return
        if not self.answered:
            if len(self._early) < MAX_EARLY_CANDIDATES:
                self._early.append(data or {})
            return
        data = data or {}
        text = data.get("candidate") or ""
        try:
            if not text:
                await self.pc.addIceCandidate(None)
                return
            candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
            if candidate.ip.endswith(".local"):
                return
            candidate.sdpMid = data.get("sdpMid")
            candidate.sdpMLineIndex = data.get("sdpMLineIndex")
            if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
                candidate.sdpMLineIndex = 0
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:  # a bad candidate is the remote's problem, not a crash
            log.warning("ignored remote candidate %r from %s: %s", text[:200], self.remote_sid, exc)

    async def close(self) -> None:
        self.closing = True
        await self.pc.close()

    def _track(self, track: MediaStreamTrack) -> None:
        log.info("receiving %s from %s", track.kind, self.remote_sid)
        self._on_track(track)

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        log.info("connection to %s: %s", self.remote_sid, state)
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
        if state in ("failed", "disconnected", "closed") and not self.closing:
            self._on_trouble(self, state)
