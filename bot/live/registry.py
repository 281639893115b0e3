"""The calls this process analyses: one `CallSession` per interview, with admission control.

At the default rates a call costs about a fifth of a core for its detectors
(`benchmarks/bench_live.py`: 4 calls with their candidates' encoders used 146%
of one core on 2 cores), so a machine admits at most `settings.max_bots` calls
at once; one more invitation is refused with `Capacity` (HTTP 503) instead of
slowing every call down.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.analysis.detectors import ModelPaths
from bot.live.call import CallSession
from bot.ports import Capacity, OpenMedia

log = logging.getLogger(__name__)


class CallRegistry:
    """Implements `bot.ports.Bots` in this process."""

    def __init__(self, models: ModelPaths, *, max_calls: int = 4, open_media: OpenMedia | None = None):
        self.models = models
        self.open_media = open_media  # for calls on another platform (interviews with a room)
        self.max_calls = max_calls
        self.sessions: dict[str, CallSession] = {}
        self._lock = asyncio.Lock()

    def running(self, interview_id: str) -> bool:
        s = self.sessions.get(interview_id)
        return s is not None and s.running

    async def is_present(self, interview_id: str) -> bool:
        return self.running(interview_id)

    async def invite(self, interview: dict[str, Any], bot_token: str, server_url: str) -> None:
        """Start the bot for an interview (idempotent while it runs)."""
        iid = interview["id"]
        async with self._lock:
            current = self.sessions.get(iid)
            if current is not None and current.running:
                return
            if current is not None:  # its loop died: clean up before a new one
                await current.stop()
            running = sum(1 for s in self.sessions.values() if s.running)
            if running >= self.max_calls:
                raise Capacity(f"this server analyses at most {self.max_calls} calls at once "
                               "(PROCTOR_MAX_BOTS); try again when one ends")
            session = CallSession(interview, bot_token, server_url, self.models, open_media=self.open_media)
            await session.start()
            self.sessions[iid] = session
            log.info("bot joined interview %s (%d/%d calls)", iid, running + 1, self.max_calls)

    async def end(self, interview_id: str) -> None:
        async with self._lock:
            session = self.sessions.pop(interview_id, None)
        if session is not None:
            await session.stop()

    async def close(self) -> None:
        for iid in list(self.sessions):
            await self.end(iid)
