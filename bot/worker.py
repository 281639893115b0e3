"""Bot workers: one `BotSession` per interview, with admission control.

At the default rates a call costs about a fifth of a core for its detectors
(`benchmarks/bench_live.py`: 4 calls with their candidates' encoders used 146%
of one core on 2 cores), so a machine admits at most `settings.max_bots` calls
at once; one more invitation is refused with `Capacity` (HTTP 503) instead of
slowing every call down.
"""
from __future__ import annotations

import asyncio
import logging

from bot.session import BotSession
from bot.settings import Settings
from signaling.api import Capacity  # the API answers it with 503

log = logging.getLogger(__name__)


class BotWorker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.sessions: dict[str, BotSession] = {}
        self._lock = asyncio.Lock()

    def is_present(self, interview_id: str) -> bool:
        s = self.sessions.get(interview_id)
        return s is not None and s.running

    async def invite(self, interview: dict, bot_token: str, server_url: str) -> None:
        """Start the bot for an interview (idempotent while it runs)."""
        iid = interview["id"]
        async with self._lock:
            current = self.sessions.get(iid)
            if current is not None and current.running:
                return
            if current is not None:  # its loop died: clean up before a new one
                await current.stop()
            running = sum(1 for s in self.sessions.values() if s.running)
            if running >= self.settings.max_bots:
                raise Capacity(f"this server analyses at most {self.settings.max_bots} calls at once "
                               "(PROCTOR_MAX_BOTS); try again when one ends")
            session = BotSession(interview, bot_token, server_url, self.settings)
            await session.start()
            self.sessions[iid] = session
            log.info("bot joined interview %s (%d/%d calls)", iid, running + 1, self.settings.max_bots)

    async def end(self, interview_id: str) -> None:
        async with self._lock:
            session = self.sessions.pop(interview_id, None)
        if session is not None:
            await session.stop()

    async def close(self) -> None:
        for iid in list(self.sessions):
            await self.end(iid)
