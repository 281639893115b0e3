"""The server's `bot.ports.Bots` on the fleet: an invitation is a job, the bot runs wherever a worker claims it.

``FleetBots(dispatch)`` works over either dispatch: ``worker.LocalJobs`` (``proctor serve`` alone, one
process, no Redis) or ``jobs.RedisDispatch`` (any number of ``proctor worker`` processes on any host).

- ``invite``: submit the job (idempotent per interview) and wait up to ``claim_timeout`` s for a worker to
  claim it; nobody did -> the job is cancelled atomically and ``Capacity`` is raised (HTTP 503).
- ``end``: ask the call to end and wait until its worker has acknowledged it, so that the events the bot
  closes on leaving are sent before the report is built.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from bot.common import jsonable
from bot.fleet import Job
from bot.fleet.jobs import Dispatch
from bot.fleet.worker import DispatchFull
from bot.ports import Capacity

log = logging.getLogger("proctor.fleet")


class FleetBots:
    """Implements `bot.ports.Bots` by dispatching each call to a worker."""

    def __init__(self, dispatch: Dispatch, *, claim_timeout: float = 5.0, end_timeout: float = 20.0) -> None:
        self.dispatch = dispatch
        self.claim_timeout = claim_timeout
        self.end_timeout = end_timeout

    async def is_present(self, interview_id: str) -> bool:
        try:
            return await self.dispatch.worker_of(interview_id) is not None
        except Exception as e:  # Redis away: the answer is unknown; say "not present" and let invite decide
            log.warning("fleet: cannot tell whether a bot runs interview %s: %s", interview_id, e)
            return False

    async def invite(self, interview: dict[str, Any], bot_token: str, server_url: str) -> None:
        iid = str(interview["id"])
        job = Job(iid, {"interview": jsonable(interview), "bot_token": bot_token, "server_url": server_url})
        try:
            await self.dispatch.submit(job, claim_timeout=self.claim_timeout)
            worker = await self.dispatch.wait_claimed(iid, self.claim_timeout)
        except DispatchFull as e:
            raise Capacity(f"too many calls are waiting for a bot ({e}); try again later") from None
        except (RedisError, OSError) as e:
            raise Capacity(f"the bot fleet cannot be reached ({type(e).__name__}); try again later") from None
        if worker is None:
            raise Capacity(f"no bot worker took the call within {self.claim_timeout:g} s: every worker is "
                           "busy or none is running; try again later")
        log.info("fleet: interview %s claimed by worker %s", iid, worker)

    async def end(self, interview_id: str) -> None:
        try:
            outcome = await self.dispatch.request_end(interview_id)
        except Exception as e:
            log.warning("fleet: could not ask the bot of interview %s to end: %s", interview_id, e)
            return
        if outcome != "requested":
            return
        deadline = time.monotonic() + self.end_timeout
        while time.monotonic() < deadline:
            try:
                if await self.dispatch.worker_of(interview_id) is None:
                    return
            except Exception:
                pass  # Redis restarting: keep waiting until the deadline
            await asyncio.sleep(0.1)
        log.warning("fleet: the bot of interview %s did not confirm its end within %.0f s",
                    interview_id, self.end_timeout)

    async def close(self) -> None:
        return None
