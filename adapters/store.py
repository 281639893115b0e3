"""The store: interviews, events, snapshots and the audit log in MongoDB (motor), with retention.

Collections (database ``settings.mongodb_db``):

- ``interviews``: ``_id`` = ``id`` (uuid4 hex); API fields plus ``expires_at``.
- ``events``: ``_id`` = event id; the ``Event`` fields without the snapshot, ``has_snapshot``, ``rev``
  (save time in ns), ``expires_at``. Indexes: ``(interview_id, start)``, unique ``id``.
- ``snapshots``: ``_id`` = event id; ``interview_id``, ``data`` (BSON binary JPEG), ``expires_at``.
  A plain collection rather than GridFS because a JPEG snapshot is tens of KiB (far below the 16 MiB
  document limit; larger ones are refused with ``ValueError``), one document per event makes the write an
  idempotent upsert by event id like the event itself, and a TTL index can expire it: GridFS chunk
  documents are written by the driver and cannot carry ``expires_at``.
- ``audit``: ``{interview_id, at, by, event_id, action, note, expires_at}``; index ``(interview_id, at)``.
- ``operator_keys``: ``_id`` = ``id`` (the key's public id); ``name`` (unique), ``hash`` (sha256 of the key:
  the key itself is never stored), ``created_at``, ``last_used_at``, ``revoked_at``. Never expires.

Retention: every document gets ``expires_at`` = write time + ``settings.retention_days`` (0 or less: keep
forever, no ``expires_at``), and each collection has a TTL index on it (``expireAfterSeconds=0``). SecantusDB
honours TTL indexes: its sweeper deletes expired documents by itself every 60 s like mongod's ttlMonitor
(checked in tests/test_store.py), so no purge task runs; ``purge_expired()`` is there for a manual sweep.
(SecantusDB 0.7.0b3's ``secantusd-py`` accepts ``[storage] ttl_sweep_seconds`` in its config but does not
pass it on: the period is fixed at 60 s.)

Outages: event writes use short server-selection timeouts. When one fails with a connection error the event
goes to the on-disk spool (``adapters.spool``), one warning is logged, and from then on events go straight
to the spool (no waiting on a dead server) until a background flusher, retrying with exponential backoff,
has written them all; it logs ``database back: wrote N spooled events``. Each save carries ``rev`` and the
upsert only replaces an older ``rev``, so a late flush never overwrites a newer version of an event.
``list_events`` and ``get_snapshot`` also show events still in the spool. Other operations raise
``StoreUnavailable`` while the database is away.

Timestamps in the API dicts are timezone-aware UTC ISO strings.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pymongo
import pymongo.errors
from bson.binary import Binary
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase

from adapters.embedded_db import EmbeddedMongo
from adapters.spool import Spool, SpoolError
from bot.analysis.events import REVIEW_STATES, Event
from bot.common import jsonable, utc_iso
from bot.ports import KeyExists, StoreUnavailable

log = logging.getLogger(__name__)

INTERVIEW_STATUSES = ("created", "live", "ended")
MAX_SNAPSHOT_BYTES = 15 * 1024 * 1024
# Connection-level failures: the database is away, the event goes to the spool.
DB_DOWN: tuple[type[BaseException], ...] = (pymongo.errors.ConnectionFailure,)
_READONLY_FIELDS = {"_id", "id", "created_at", "expires_at"}


def utcnow() -> datetime:
    """Now in UTC, to the millisecond (what a BSON date keeps), so stored and returned values agree."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _api(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: (utc_iso(v) if isinstance(v, datetime) else v) for k, v in doc.items() if k != "_id"}
    return out


class Store:
    """Interviews, events, snapshots, audit log; see the module docstring."""

    def __init__(
        self,
        client: AsyncIOMotorClient,
        *,
        db_name: str,
        spool: Spool,
        retention_days: int,
        embedded: EmbeddedMongo | None = None,
        flush_min_delay: float = 0.25,
        flush_max_delay: float = 5.0,
    ) -> None:
        self.client = client
        self.db: AsyncIOMotorDatabase = client[db_name]
        self.interviews = self.db["interviews"]
        self.events = self.db["events"]
        self.snapshots = self.db["snapshots"]
        self.audit = self.db["audit"]
        self.operator_keys = self.db["operator_keys"]
        self.spool = spool
        self.retention = timedelta(days=retention_days) if retention_days > 0 else None
        self.embedded = embedded
        self.flush_min_delay = flush_min_delay
        self.flush_max_delay = flush_max_delay
        self._outage = False
        self._last_rev = 0
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        settings: Any,
        *,
        server_selection_timeout_ms: int = 1000,
        flush_min_delay: float = 0.25,
        flush_max_delay: float = 5.0,
    ) -> Store:
        """Connect to ``MONGODB_URI``, or start (and own) the embedded server; create the indexes."""
        embedded: EmbeddedMongo | None = None
        uri = settings.mongodb_uri
        if not uri:
            embedded = EmbeddedMongo.from_settings(settings)
            await embedded.start()
            uri = embedded.uri
        client: AsyncIOMotorClient = AsyncIOMotorClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=server_selection_timeout_ms,
            connectTimeoutMS=max(server_selection_timeout_ms, 1000),
            socketTimeoutMS=10_000,
            journal=True,  # evidence: acknowledged once journaled (the embedded server syncs every commit)
            appname="proctor-bot",
        )
        try:
            spool = await asyncio.to_thread(Spool.from_settings, settings)
            store = cls(
                client, db_name=settings.mongodb_db, spool=spool, retention_days=settings.retention_days,
                embedded=embedded, flush_min_delay=flush_min_delay, flush_max_delay=flush_max_delay,
            )
            await store._ensure_indexes()
        except DB_DOWN as exc:
            client.close()
            if embedded is not None:
                await embedded.stop()
            raise StoreUnavailable(f"cannot reach the database at {_hosts(uri)}: {exc}") from exc
        except BaseException:
            client.close()
            if embedded is not None:
                await embedded.stop()
            raise
        if len(spool):
            store._outage = True
            store._ensure_flusher()
        return store

    async def _ensure_indexes(self) -> None:
        ttl: dict[str, Any] = {"expireAfterSeconds": 0, "name": "expires_at_ttl"}
        await self.events.create_index([("interview_id", 1), ("start", 1)], name="interview_start")
        await self.events.create_index([("id", 1)], unique=True, name="id_unique")
        await self.audit.create_index([("interview_id", 1), ("at", 1)], name="interview_at")
        await self.snapshots.create_index([("interview_id", 1)], name="interview")
        await self.operator_keys.create_index([("name", 1)], unique=True, name="name_unique")
        for coll in (self.interviews, self.events, self.snapshots, self.audit):
            await coll.create_index([("expires_at", 1)], **ttl)

    async def close(self) -> None:
        """Stop the flusher (spooled events stay on disk for the next start), close, stop the embedded DB."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            try:
                await self._flusher
            except (asyncio.CancelledError, Exception):
                pass
        pending = len(self.spool)
        if pending:
            log.warning("%d events remain spooled in %s; they are written at the next start",
                        pending, self.spool.directory)
        self.client.close()
        if self.embedded is not None:
            await self.embedded.stop()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def outage(self) -> bool:
        """True while events go to the spool."""
        return self._outage or len(self.spool) > 0

    def _expires(self, now: datetime) -> dict[str, datetime]:
        return {"expires_at": now + self.retention} if self.retention else {}

    # -- interviews ----------------------------------------------------------------------------
    async def create_interview(
        self, *, candidate_name: str, interviewer_email: str, policy: dict[str, Any] | None,
        room: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        iid = uuid.uuid4().hex
        doc: dict[str, Any] = {
            "_id": iid,
            "id": iid,
            "candidate_name": candidate_name,
            "interviewer_email": interviewer_email,
            "policy": jsonable(policy) if policy is not None else None,
            "room": room,  # `bot.rooms` stored form, secrets included (the bot needs them); None: the built-in call
            "status": "created",
            "created_at": utc_iso(now),
            "started_at": None,
            "ended_at": None,
            "report_sent_at": None,
            **self._expires(now),
        }
        try:
            await self.interviews.insert_one(doc)
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return _api(doc)

    async def get_interview(self, interview_id: str) -> dict[str, Any] | None:
        try:
            doc = await self.interviews.find_one({"_id": interview_id})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return None if doc is None else _api(doc)

    async def update_interview(self, interview_id: str, **fields: Any) -> None:
        """Set fields (datetimes become UTC ISO strings); refreshes the retention deadline."""
        bad = _READONLY_FIELDS.intersection(fields)
        if bad:
            raise ValueError(f"cannot update {', '.join(sorted(bad))}")
        if "status" in fields and fields["status"] not in INTERVIEW_STATUSES:
            raise ValueError(f"status must be one of {INTERVIEW_STATUSES}, got {fields['status']!r}")
        if not fields:
            return
        update = {k: jsonable(v) for k, v in fields.items()}
        update.update(self._expires(utcnow()))
        try:
            await self.interviews.update_one({"_id": interview_id}, {"$set": update})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    # -- events --------------------------------------------------------------------------------
    def _next_rev(self) -> int:
        self._last_rev = max(time.time_ns(), self._last_rev + 1)
        return self._last_rev

    async def save_event(self, event: Event) -> None:
        """Upsert by ``event.id`` (a retry never duplicates); spools if the database is away."""
        if event.snapshot is not None and len(event.snapshot) > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"snapshot of event {event.id} is {len(event.snapshot)} bytes (max {MAX_SNAPSHOT_BYTES})")
        event = replace(
            event, detail=jsonable(event.detail), start=float(event.start),
            end=None if event.end is None else float(event.end), confidence=float(event.confidence),
            snapshot=None if event.snapshot is None else bytes(event.snapshot),
        )
        rev = self._next_rev()
        if self.outage:
            await self._spool(event, rev, None)
            return
        try:
            await self._write_event(event, rev)
        except DB_DOWN as exc:
            await self._spool(event, rev, exc)

    async def _spool(self, event: Event, rev: int, exc: BaseException | None) -> None:
        try:
            await asyncio.to_thread(self.spool.put, event, rev)
        except SpoolError:
            log.error("event %s of interview %s is NOT stored: database and spool both failed",
                      event.id, event.interview_id)
            raise
        if not self._outage:
            self._outage = True
            log.warning("database unavailable, spooling events to %s (%s)", self.spool.directory,
                        type(exc).__name__ if exc else "pending spool")
        self._ensure_flusher()

    async def _write_event(self, event: Event, rev: int) -> None:
        now = utcnow()
        exp = self._expires(now)
        if event.snapshot is not None:
            try:
                await self.snapshots.update_one(
                    {"_id": event.id, "rev": {"$lte": rev}},
                    {"$set": {"interview_id": event.interview_id, "event_id": event.id,
                              "data": Binary(event.snapshot), "size": len(event.snapshot),
                              "content_type": "image/jpeg", "rev": rev, "updated_at": utc_iso(now), **exp}},
                    upsert=True,
                )
            except pymongo.errors.DuplicateKeyError:
                pass  # a newer snapshot of this event is stored
        fields: dict[str, Any] = {
            "id": event.id, "interview_id": event.interview_id, "type": event.type, "start": event.start,
            "end": event.end, "confidence": event.confidence, "detail": event.detail, "rev": rev,
            "updated_at": utc_iso(now), **exp,
        }
        on_insert: dict[str, Any] = {"created_at": utc_iso(now)}
        # Never clear a stored snapshot flag or a reviewer's decision with a bot-side update.
        (fields if event.snapshot is not None else on_insert)["has_snapshot"] = event.snapshot is not None
        (fields if event.review is not None else on_insert)["review"] = event.review
        try:
            await self.events.update_one(
                {"_id": event.id, "rev": {"$lte": rev}}, {"$set": fields, "$setOnInsert": on_insert}, upsert=True
            )
        except pymongo.errors.DuplicateKeyError:
            pass  # the stored version is newer (higher rev): this one is stale

    def _ensure_flusher(self) -> None:
        if self._closed:
            return
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="store-spool-flusher")

    async def _flush_loop(self) -> None:
        delay = self.flush_min_delay
        written = 0
        while True:
            items = await asyncio.to_thread(self.spool.items)
            if not items:
                if len(self.spool):
                    await asyncio.sleep(0.01)
                    continue  # a put finished meanwhile
                if written:
                    log.warning("database back: wrote %d spooled events", written)
                self._outage = False
                return
            try:
                await self.db.command("ping")
                for item in items:
                    try:
                        await self._write_event(item.event, item.rev)
                    except DB_DOWN:
                        raise
                    except pymongo.errors.PyMongoError as exc:
                        await asyncio.to_thread(self.spool.quarantine, item.event.id, item.rev, str(exc))
                        continue
                    if await asyncio.to_thread(self.spool.remove, item.event.id, item.rev):
                        written += 1
                    elif not await asyncio.to_thread(self.spool.holds, item.event.id):
                        # dropped while it was written: its interview was deleted, perhaps before this write
                        # landed; what was just written must not outlive the interview
                        await self.events.delete_one({"_id": item.event.id})
                        await self.snapshots.delete_one({"_id": item.event.id})
                delay = self.flush_min_delay
            except DB_DOWN:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.flush_max_delay)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the spool is written (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self.outage:
            if time.monotonic() > deadline:
                return False
            if self._flusher is None or self._flusher.done():
                self._ensure_flusher()
            await asyncio.sleep(0.05)
        return True

    @staticmethod
    def _event(doc: dict[str, Any], snapshot: bytes | None = None) -> Event:
        ev = Event.from_dict(doc)
        ev.snapshot = snapshot
        return ev

    async def list_events(self, interview_id: str, *, snapshots: bool = False) -> list[Event]:
        """The interview's events ordered by start (including ones still in the spool).

        The spool is read before the database: the flusher writes an entry to the database before it removes
        it from the spool, so a flush between the two reads leaves the newer version in one of them; the
        newer of the two (by ``rev``) wins."""
        spooled = await asyncio.to_thread(self.spool.items, interview_id) if len(self.spool) else []
        try:
            docs = await self.events.find({"interview_id": interview_id}).sort(
                [("start", 1), ("_id", 1)]).to_list(None)
            snaps: dict[str, bytes] = {}
            if snapshots:
                async for s in self.snapshots.find({"interview_id": interview_id}, {"data": 1}):
                    snaps[s["_id"]] = bytes(s["data"])
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        by_id = {d["_id"]: self._event(d, snaps.get(d["_id"])) for d in docs}
        revs = {d["_id"]: int(d.get("rev") or 0) for d in docs}
        if spooled:
            for item in spooled:
                ev, old = item.event, by_id.get(item.event.id)
                if old is not None and revs.get(ev.id, 0) >= item.rev:
                    continue  # flushed meanwhile: the database has this version or a newer one
                if old is not None:
                    ev.review = ev.review or old.review
                    ev.snapshot = ev.snapshot or old.snapshot
                if not snapshots:
                    ev.snapshot = None
                by_id[ev.id] = ev
        return sorted(by_id.values(), key=lambda e: (e.start, e.id))

    async def get_snapshot(self, interview_id: str, event_id: str) -> bytes | None:
        try:
            doc = await self.snapshots.find_one({"_id": event_id, "interview_id": interview_id}, {"data": 1})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        if doc is not None:
            return bytes(doc["data"])
        if len(self.spool):
            for item in await asyncio.to_thread(self.spool.items, interview_id):
                if item.event.id == event_id:
                    return item.event.snapshot
        return None

    # -- review and audit ----------------------------------------------------------------------
    async def review_event(
        self, interview_id: str, event_id: str, *, state: str, by: str, note: str = ""
    ) -> Event | None:
        """Set the event's review and append ``{at, by, event_id, action, note}`` to the audit log."""
        if state not in REVIEW_STATES:
            raise ValueError(f"review must be one of {REVIEW_STATES}, got {state!r}")
        now = utcnow()
        try:
            doc = await self.events.find_one_and_update(
                {"_id": event_id, "interview_id": interview_id},
                {"$set": {"review": state, "reviewed_by": by, "reviewed_at": utc_iso(now), "review_note": note}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
            if doc is None:
                return None
            await self.audit.insert_one({
                "interview_id": interview_id, "at": utc_iso(now), "by": by, "event_id": event_id,
                "action": state, "note": note, **self._expires(now),
            })
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return self._event(doc)

    async def audit_log(self, interview_id: str) -> list[dict[str, Any]]:
        try:
            docs = await self.audit.find({"interview_id": interview_id}).sort(
                [("at", 1), ("_id", 1)]).to_list(None)
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return [{k: d.get(k) for k in ("at", "by", "event_id", "action", "note")} for d in docs]

    # -- operator keys (hashes only) -----------------------------------------------------------
    async def add_operator_key(self, *, key_id: str, name: str, key_hash: str) -> dict[str, Any]:
        """Store a key's hash under its name; `KeyExists` if an unrevoked key has the name (the record of a
        revoked one is replaced)."""
        doc: dict[str, Any] = {"_id": key_id, "id": key_id, "name": name, "hash": key_hash,
                               "created_at": utc_iso(utcnow()), "last_used_at": None, "revoked_at": None}
        try:
            old = await self.operator_keys.find_one({"name": name})
            if old is not None:
                if old.get("revoked_at") is None:
                    raise KeyExists(f"an operator key named {name!r} exists")
                await self.operator_keys.delete_one({"_id": old["_id"], "revoked_at": {"$ne": None}})
            await self.operator_keys.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            raise KeyExists(f"an operator key named {name!r} exists") from None
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return _api(doc)

    async def get_operator_key(self, key_id: str) -> dict[str, Any] | None:
        try:
            doc = await self.operator_keys.find_one({"_id": key_id})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return None if doc is None else _api(doc)

    async def operator_key_used(self, key_id: str) -> None:
        try:
            await self.operator_keys.update_one({"_id": key_id}, {"$set": {"last_used_at": utc_iso(utcnow())}})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def list_operator_keys(self) -> list[dict[str, Any]]:
        try:
            docs = await self.operator_keys.find({}, {"hash": 0}).sort([("created_at", 1), ("_id", 1)]).to_list(None)
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return [_api(d) for d in docs]

    async def revoke_operator_key(self, name: str) -> bool:
        try:
            r = await self.operator_keys.update_one({"name": name, "revoked_at": None},
                                                    {"$set": {"revoked_at": utc_iso(utcnow())}})
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return r.modified_count > 0

    async def has_operator_keys(self) -> bool:
        try:
            return await self.operator_keys.find_one({"revoked_at": None}, {"_id": 1}) is not None
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    # -- deletion and retention ----------------------------------------------------------------
    async def delete_interview(self, interview_id: str) -> bool:
        """Remove the interview, its events, snapshots, audit log and spooled events. True if any existed."""
        dropped = await asyncio.to_thread(self.spool.drop_interview, interview_id)
        try:
            r = await self.interviews.delete_one({"_id": interview_id})
            n = r.deleted_count
            for coll in (self.events, self.snapshots, self.audit):
                n += (await coll.delete_many({"interview_id": interview_id})).deleted_count
        except DB_DOWN as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        return bool(n or dropped)

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete documents past ``expires_at`` now (the TTL sweeper does this on its own every 60 s)."""
        cutoff = now or utcnow()
        n = 0
        for coll in (self.interviews, self.events, self.snapshots, self.audit):
            n += (await coll.delete_many({"expires_at": {"$lt": cutoff}})).deleted_count
        return n


def _hosts(uri: str) -> str:
    """The host part of a MongoDB URI, without credentials or options."""
    rest = uri.split("://", 1)[-1]
    rest = rest.rsplit("@", 1)[-1]
    return rest.split("/", 1)[0].split("?", 1)[0]
