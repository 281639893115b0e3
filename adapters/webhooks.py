"""Webhooks: signed JSON POSTs to ``PROCTOR_WEBHOOK_URL``, delivered from the durable outbox (`adapters.outbox`).

`WebhookSender.send(event, data)` writes the delivery into the outbox and wakes the sender (while the database is
away it holds up to `max_unsaved` deliveries in memory and writes them when it is back); one background task
claims due deliveries (at most `batch` in memory: the database is the queue), posts them and records the
outcome:

- 2xx: done.
- 408, 429, 5xx, a timeout or a connection error: retried with exponential backoff and jitter (a random 50-100%
  of ``retry_min * 2**(attempt-1)`` capped at ``retry_max``; a ``Retry-After`` in seconds is honoured up to
  ``retry_max``) until ``max_age`` seconds after it was queued, then given up.
- any other status (4xx, 3xx: redirects are not followed): given up after `client_error_attempts` attempts.

A given-up delivery stays in the outbox with ``state: failed``, its last status and error (and an error log).

Each POST carries the JSON body ``{"id", "event", "created_at", "data"}`` (the same bytes on every attempt) and
the headers ``X-Proctor-Event``, ``X-Proctor-Delivery`` (the idempotency id, also ``id`` in the body),
``X-Proctor-Timestamp`` (unix seconds of this attempt) and ``X-Proctor-Signature: sha256=<hex>``, the
HMAC-SHA256 with the webhook secret over ``timestamp + "." + body``. See README, "Webhooks", for checking it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import aiohttp

from bot.common import jsonable, utc_iso
from bot.ports import StoreUnavailable

log = logging.getLogger(__name__)

USER_AGENT = "proctor-bot-webhooks/1"
RETRY_STATUSES = (408, 429)
CLOSE_GRACE = 2.0  # s the sender's loop has to stop by itself on close before it is cancelled


class Outbox(Protocol):
    """What the sender needs from the outbox (`adapters.outbox.MongoOutbox`)."""

    async def put(self, delivery_id: str, event: str, body: str) -> bool: ...
    async def claim(self, limit: int, lease: float) -> list[dict[str, Any]]: ...
    async def next_due(self) -> datetime | None: ...
    async def done(self, delivery_id: str, *, attempts: int, status: int) -> None: ...
    async def retry(self, delivery_id: str, *, attempts: int, at: datetime, status: int | None,
                    error: str) -> None: ...
    async def fail(self, delivery_id: str, *, attempts: int, status: int | None, error: str) -> None: ...
    async def release(self, delivery_id: str) -> None: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Proctor-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp + "." + body``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is within ``tolerance`` seconds."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")


def delivery_id(*parts: str) -> str:
    """A stable idempotency id for a fact (e.g. an event's opening): queued twice, delivered once."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "proctor-webhook:" + ":".join(parts)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: use the backoff


class WebhookSender:
    """Implements `bot.ports.Webhooks`; see the module docstring."""

    def __init__(self, outbox: Outbox, url: str, secret: str, *, max_age: float = 24 * 3600,
                 retry_min: float = 2.0, retry_max: float = 3600.0, timeout: float = 10.0, batch: int = 8,
                 idle_poll: float = 5.0, client_error_attempts: int = 3, max_unsaved: int = 1000,
                 rng: Callable[[], float] = random.random) -> None:
        self.outbox = outbox
        self.url = url
        self.secret = secret
        self.max_age = max_age
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.timeout = timeout
        self.batch = batch
        self.lease = timeout + 30.0
        self.idle_poll = idle_poll
        self.client_error_attempts = client_error_attempts
        self.rng = rng
        self.max_unsaved = max_unsaved
        self._unsaved: deque[tuple[str, str, str]] = deque()  # only while the database is away
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._claimed: set[str] = set()  # deliveries this sender leased and has not settled yet

    # -- the port --------------------------------------------------------------------------------
    async def send(self, event: str, data: dict[str, Any], *, key: str | None = None) -> str:
        did = delivery_id(key) if key else str(uuid.uuid4())
        body = json.dumps({"id": did, "event": event, "created_at": utc_iso(datetime.now(timezone.utc)),
                           "data": jsonable(data)}, ensure_ascii=False, separators=(",", ":"))
        try:
            if self._unsaved:  # keep the order: behind the ones still waiting for the database
                raise StoreUnavailable("deliveries are waiting for the database")
            if await self.outbox.put(did, event, body):
                log.info("webhook %s %s queued", event, did)
        except StoreUnavailable as exc:
            self._hold(did, event, body, exc)
        self._wake.set()
        return did

    def _hold(self, did: str, event: str, body: str, exc: Exception) -> None:
        """The database is away: keep the delivery in memory (at most `max_unsaved`) until the outbox takes it."""
        if len(self._unsaved) >= self.max_unsaved:
            log.error("webhook %s %s LOST: the outbox is unavailable (%s) and %d deliveries already wait in memory",
                      event, did, exc, len(self._unsaved))
            return
        if not self._unsaved:
            log.warning("webhook outbox unavailable (%s): holding deliveries in memory (at most %d)", exc,
                        self.max_unsaved)
        self._unsaved.append((did, event, body))

    async def _save_held(self) -> None:
        """Write the deliveries held in memory into the outbox, oldest first (raises StoreUnavailable)."""
        while self._unsaved:
            did, event, body = self._unsaved[0]
            await self.outbox.put(did, event, body)
            self._unsaved.popleft()
            if not self._unsaved:
                log.warning("webhook outbox back: the deliveries held in memory are queued")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-sender")

    async def close(self) -> None:
        """Stop sending (deliveries being posted go back to the outbox, due now); the outbox keeps the rest.

        The loop is asked to stop at its next turn first (a claim under way completes, so its deliveries are
        known); only a loop still busy after ``CLOSE_GRACE`` s is cancelled. Whatever this sender still holds
        is released, so the next start (or another node) need not wait for the lease to pass."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_GRACE)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook sender ended with an error")
        for did in list(self._claimed):
            with contextlib.suppress(Exception):
                await self.outbox.release(did)
        self._claimed.clear()
        if self._session is not None:
            await self._session.close()

    # -- the sender ------------------------------------------------------------------------------
    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"User-Agent": USER_AGENT})
        db_delay = self.retry_min
        while not self._closed:
            self._wake.clear()
            try:
                await self._save_held()
                docs = await self.outbox.claim(self.batch, self.lease)
                self._claimed.update(str(doc["_id"]) for doc in docs)
                if docs:
                    await asyncio.gather(*(self._deliver(doc) for doc in docs))
                    continue  # there may be more due
                due = await self.outbox.next_due()
                db_delay = self.retry_min
            except StoreUnavailable as exc:
                log.warning("webhook outbox unavailable (%s); retrying in %.0f s", exc, db_delay)
                await asyncio.sleep(db_delay)
                db_delay = min(db_delay * 2, 30.0)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook sender failed; retrying")
                await asyncio.sleep(self.idle_poll)
                continue
            wait = self.idle_poll if not self._unsaved else min(self.idle_poll, db_delay)
            if due is not None:
                wait = min(wait, max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt: a random 50-100% of an exponential ceiling; at least Retry-After."""
        ceiling = min(self.retry_max, self.retry_min * 2 ** min(attempts - 1, 40))
        delay = ceiling * (0.5 + 0.5 * self.rng())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_max))
        return delay

    async def _deliver(self, doc: dict[str, Any]) -> None:
        did = str(doc["_id"])
        try:
            await self._deliver_held(did, doc)
        finally:
            self._claimed.discard(did)

    async def _deliver_held(self, did: str, doc: dict[str, Any]) -> None:
        attempts = int(doc.get("attempts") or 0) + 1
        try:
            status, error, retry_after = await self._post(did, str(doc.get("event")), str(doc["body"]).encode())
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.outbox.release(did))
            raise
        if status is not None and 200 <= status < 300:
            await self.outbox.done(did, attempts=attempts, status=status)
            log.info("webhook %s delivered (%d, attempt %d)", did, status, attempts)
            return
        transient = status is None or status >= 500 or status in RETRY_STATUSES
        age = (datetime.now(timezone.utc) - doc["created_at"]).total_seconds()
        if transient and age < self.max_age:
            delay = self.backoff(attempts, retry_after)
            at = datetime.now(timezone.utc) + timedelta(seconds=delay)
            await self.outbox.retry(did, attempts=attempts, at=at, status=status, error=error)
            log.warning("webhook %s not delivered (%s, attempt %d); next try in %.2f s", did, error, attempts, delay)
        elif not transient and attempts < self.client_error_attempts:
            at = datetime.now(timezone.utc) + timedelta(seconds=self.backoff(attempts))
            await self.outbox.retry(did, attempts=attempts, at=at, status=status, error=error)
            log.warning("webhook %s refused (%s, attempt %d of %d)", did, error, attempts,
                        self.client_error_attempts)
        else:
            await self.outbox.fail(did, attempts=attempts, status=status, error=error)
            log.error("webhook %s given up after %d attempts: %s", did, attempts, error)

    async def _post(self, did: str, event: str, body: bytes) -> tuple[int | None, str, float | None]:
        """(status or None, error text, Retry-After seconds) of one attempt."""
        assert self._session is not None
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Proctor-Event": event,
            "X-Proctor-Delivery": did,
            "X-Proctor-Timestamp": ts,
            "X-Proctor-Signature": sign(self.secret, ts, body),
        }
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as r:
                await r.read()
                return r.status, f"HTTP {r.status}", _retry_after(r.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__, None
