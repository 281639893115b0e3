"""The webhook outbox: a MongoDB collection that is the queue of webhook deliveries.

A delivery is written here first (`put`), then the sender (`adapters.webhooks`) claims due ones (`claim`),
posts them and marks each `done`, `retry` (a later ``next_at``) or `fail`. Nothing is kept only in memory, so a
restart or a receiver that is down loses nothing.

Collection ``webhook_outbox``, ``_id`` = the delivery id (the idempotency id the receiver sees):
``{event, body (the JSON text, the same bytes on every attempt), state: pending|done|failed, attempts,
created_at, next_at, last_status, last_error, delivered_at, expires_at}``. A claim moves ``next_at`` a lease
ahead, so a sender that dies mid-delivery leaves the delivery to be retried once the lease has passed, and two
servers on one database never post the same delivery at once. Done and failed deliveries expire (TTL index)
after ``keep_days``; pending ones never expire.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pymongo
import pymongo.errors
from motor.motor_asyncio import AsyncIOMotorDatabase

from bot.ports import StoreUnavailable

log = logging.getLogger(__name__)

COLLECTION = "webhook_outbox"
DB_DOWN: tuple[type[BaseException], ...] = (pymongo.errors.ConnectionFailure,)


def _now() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)  # what a BSON date keeps


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return _now()


class MongoOutbox:
    """The outbox on a motor database; every method raises `StoreUnavailable` while the database is away."""

    def __init__(self, db: AsyncIOMotorDatabase, *, keep_days: float = 7.0) -> None:
        self.coll = db[COLLECTION]
        self.keep = timedelta(days=keep_days)
        self._indexed = False

    async def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        await self.coll.create_index([("state", 1), ("next_at", 1)], name="state_next")
        await self.coll.create_index([("expires_at", 1)], expireAfterSeconds=0, name="expires_at_ttl")
        self._indexed = True

    async def put(self, delivery_id: str, event: str, body: str) -> bool:
        """Queue a delivery due now; False if one with this id is already queued (or was delivered)."""
        now = _now()
        try:
            await self._ensure_indexes()
            r = await self.coll.update_one(
                {"_id": delivery_id},
                {"$setOnInsert": {"event": event, "body": body, "state": "pending", "attempts": 0,
                                  "created_at": now, "next_at": now, "last_status": None, "last_error": None}},
                upsert=True,
            )
        except pymongo.errors.DuplicateKeyError:
            return False  # a concurrent put of the same id
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return r.upserted_id is not None

    async def claim(self, limit: int, lease: float) -> list[dict[str, Any]]:
        """Up to ``limit`` due pending deliveries, oldest due first, each leased for ``lease`` seconds."""
        now = _now()
        until = now + timedelta(seconds=lease)
        claimed: list[dict[str, Any]] = []
        try:
            await self._ensure_indexes()
            docs = await self.coll.find({"state": "pending", "next_at": {"$lte": now}}).sort(
                [("next_at", 1), ("_id", 1)]).limit(limit).to_list(limit)
            for doc in docs:
                r = await self.coll.update_one(
                    {"_id": doc["_id"], "state": "pending", "next_at": doc["next_at"]},
                    {"$set": {"next_at": until}})
                if r.modified_count == 1:  # else another sender took it meanwhile
                    doc["created_at"] = _aware(doc.get("created_at"))
                    claimed.append(doc)
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return claimed

    async def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        try:
            doc = await self.coll.find_one({"state": "pending"}, {"next_at": 1}, sort=[("next_at", 1)])
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return None if doc is None else _aware(doc.get("next_at"))

    async def _set(self, delivery_id: str, fields: dict[str, Any]) -> None:
        try:
            await self.coll.update_one({"_id": delivery_id}, {"$set": fields})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def done(self, delivery_id: str, *, attempts: int, status: int) -> None:
        now = _now()
        await self._set(delivery_id, {"state": "done", "attempts": attempts, "last_status": status,
                                      "last_error": None, "delivered_at": now, "expires_at": now + self.keep})

    async def retry(self, delivery_id: str, *, attempts: int, at: datetime, status: int | None, error: str) -> None:
        await self._set(delivery_id, {"attempts": attempts, "next_at": at, "last_status": status,
                                      "last_error": error[:500]})

    async def fail(self, delivery_id: str, *, attempts: int, status: int | None, error: str) -> None:
        now = _now()
        await self._set(delivery_id, {"state": "failed", "attempts": attempts, "last_status": status,
                                      "last_error": error[:500], "failed_at": now, "expires_at": now + self.keep})

    async def release(self, delivery_id: str) -> None:
        """Give a claimed delivery back, due now (the sender is stopping)."""
        await self._set(delivery_id, {"next_at": _now()})

    async def get(self, delivery_id: str) -> dict[str, Any] | None:
        try:
            return await self.coll.find_one({"_id": delivery_id})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def counts(self) -> dict[str, int]:
        """Deliveries per state (for tests and `proctor` diagnostics)."""
        out = {"pending": 0, "done": 0, "failed": 0}
        try:
            async for doc in self.coll.find({}, {"state": 1}):
                out[doc.get("state", "pending")] = out.get(doc.get("state", "pending"), 0) + 1
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return out
