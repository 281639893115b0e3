"""Store on a real SecantusDB server."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.embedded_db import EmbeddedMongo
from adapters.store import Store
from bot.analysis.events import FACE_MISSING, LOOKING_AWAY, MULTIPLE_FACES, Event

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"


async def new_interview(store: Store) -> str:
    iv = await store.create_interview(candidate_name="Ada", interviewer_email="lead@example.org", policy=None)
    return str(iv["id"])


def parse_utc(s: str) -> datetime:
    d = datetime.fromisoformat(s)
    assert d.tzinfo is not None and d.utcoffset() == timedelta(0)
    return d


async def test_interview_lifecycle(store: Store) -> None:
    iv = await store.create_interview(candidate_name="Ada", interviewer_email="lead@example.org",
                                      policy={"rules": {"face_missing": {"dwell": 2.0}}})
    assert len(iv["id"]) == 32 and iv["status"] == "created"
    assert abs((parse_utc(iv["created_at"]) - datetime.now(timezone.utc)).total_seconds()) < 5
    assert iv["started_at"] is None and iv["ended_at"] is None and iv["report_sent_at"] is None
    got = await store.get_interview(iv["id"])
    assert got == iv
    assert got is not None and got["policy"] == {"rules": {"face_missing": {"dwell": 2.0}}}

    started = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    await store.update_interview(iv["id"], status="live", started_at=started)
    got = await store.get_interview(iv["id"])
    assert got is not None and got["status"] == "live"
    assert parse_utc(got["started_at"]) == started
    await store.update_interview(iv["id"], status="ended", ended_at=datetime.now(timezone.utc).isoformat(),
                                 report_delivery="written to x.eml")
    got = await store.get_interview(iv["id"])
    assert got is not None and got["status"] == "ended" and got["report_delivery"] == "written to x.eml"
    parse_utc(got["ended_at"])

    with pytest.raises(ValueError):
        await store.update_interview(iv["id"], status="paused")
    with pytest.raises(ValueError):
        await store.update_interview(iv["id"], id="other")
    assert await store.get_interview("nope") is None


async def test_save_event_is_idempotent_upsert(store: Store) -> None:
    iid = await new_interview(store)
    ev = Event(type=FACE_MISSING, start=1.5, end=None, confidence=0.8, interview_id=iid, detail={"faces": 0})
    await store.save_event(ev)
    await store.save_event(ev)  # a retried write
    assert await store.events.count_documents({"interview_id": iid}) == 1
    await store.save_event(replace(ev, end=4.0, confidence=0.9))  # the same event, closed
    await store.save_event(replace(ev, end=4.0, confidence=0.9))
    assert await store.events.count_documents({}) == 1
    (got,) = await store.list_events(iid)
    assert (got.id, got.end, got.confidence, got.detail, got.open) == (ev.id, 4.0, 0.9, {"faces": 0}, False)


async def test_stale_version_never_overwrites_newer(store: Store) -> None:
    """The flusher may write an old spooled version after a newer one: the newer one stays."""
    iid = await new_interview(store)
    ev = Event(type=FACE_MISSING, start=1.0, end=None, confidence=0.5, interview_id=iid)
    old_rev = store._next_rev()
    await store.save_event(replace(ev, end=9.0))
    await store._write_event(ev, old_rev)  # late, older write
    (got,) = await store.list_events(iid)
    assert got.end == 9.0
    assert await store.events.count_documents({}) == 1


async def test_list_events_ordered_by_start_and_scoped(store: Store) -> None:
    iid, other = await new_interview(store), await new_interview(store)
    starts = [5.0, 1.0, 3.0, 2.5, 0.0]
    for s in starts:
        await store.save_event(Event(type=LOOKING_AWAY, start=s, end=s + 1, confidence=0.7, interview_id=iid))
    await store.save_event(Event(type=LOOKING_AWAY, start=0.5, end=1, confidence=0.7, interview_id=other))
    got = await store.list_events(iid)
    assert [e.start for e in got] == sorted(starts)
    assert all(e.interview_id == iid and e.snapshot is None for e in got)
    assert len(await store.list_events(other)) == 1
    assert await store.list_events("unknown") == []


async def test_snapshot_round_trip(store: Store) -> None:
    iid = await new_interview(store)
    ev = Event(type=MULTIPLE_FACES, start=2.0, end=None, confidence=0.9, interview_id=iid, snapshot=JPEG)
    plain = Event(type=FACE_MISSING, start=3.0, end=4.0, confidence=0.9, interview_id=iid)
    await store.save_event(ev)
    await store.save_event(plain)
    assert await store.get_snapshot(iid, ev.id) == JPEG
    assert await store.get_snapshot(iid, plain.id) is None
    assert await store.get_snapshot("other-interview", ev.id) is None
    with_snaps = await store.list_events(iid, snapshots=True)
    assert [e.snapshot for e in with_snaps] == [JPEG, None]
    assert [e.snapshot for e in await store.list_events(iid)] == [None, None]
    # a later update without a snapshot (the bot closing the event) keeps the stored one
    await store.save_event(replace(ev, end=5.0, snapshot=None))
    assert await store.get_snapshot(iid, ev.id) == JPEG
    doc = await store.events.find_one({"_id": ev.id})
    assert doc is not None and doc["has_snapshot"] is True and "snapshot" not in doc
    assert await store.snapshots.count_documents({}) == 1


async def test_numpy_values_in_detail_are_stored(store: Store) -> None:
    np = pytest.importorskip("numpy")
    iid = await new_interview(store)
    ev = Event(type=FACE_MISSING, start=np.float32(1.25), end=None, confidence=np.float64(0.5), interview_id=iid,
               detail={"count": np.int64(2), "box": (np.float32(1.5), 2)})
    await store.save_event(ev)
    (got,) = await store.list_events(iid)
    assert got.start == 1.25 and got.detail == {"count": 2, "box": [1.5, 2]}


async def test_review_and_audit(store: Store) -> None:
    iid = await new_interview(store)
    ev = Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.6, interview_id=iid)
    await store.save_event(ev)
    got = await store.review_event(iid, ev.id, state="dismissed", by="lead@example.org", note="lighting")
    assert got is not None and got.id == ev.id and got.review == "dismissed"
    got = await store.review_event(iid, ev.id, state="confirmed", by="hr@example.org")
    assert got is not None and got.review == "confirmed"
    log = await store.audit_log(iid)
    assert [(a["by"], a["event_id"], a["action"], a["note"]) for a in log] == [
        ("lead@example.org", ev.id, "dismissed", "lighting"),
        ("hr@example.org", ev.id, "confirmed", ""),
    ]
    assert parse_utc(log[0]["at"]) <= parse_utc(log[1]["at"])
    # the bot updating the event afterwards does not wipe the reviewer's decision
    await store.save_event(replace(ev, end=3.0, review=None))
    (stored,) = await store.list_events(iid)
    assert stored.review == "confirmed" and stored.end == 3.0

    assert await store.review_event(iid, "no-such-event", state="confirmed", by="x") is None
    assert await store.review_event("other", ev.id, state="confirmed", by="x") is None
    with pytest.raises(ValueError):
        await store.review_event(iid, ev.id, state="maybe", by="x")
    assert len(await store.audit_log(iid)) == 2


async def test_delete_interview_removes_everything(store: Store) -> None:
    iid, keep = await new_interview(store), await new_interview(store)
    for i in (iid, keep):
        ev = Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.6, interview_id=i, snapshot=JPEG)
        await store.save_event(ev)
        await store.review_event(i, ev.id, state="confirmed", by="lead@example.org")
    assert await store.delete_interview(iid) is True
    assert await store.get_interview(iid) is None
    for coll in (store.events, store.snapshots, store.audit):
        assert await coll.count_documents({"interview_id": iid}) == 0
        assert await coll.count_documents({"interview_id": keep}) == 1
    assert await store.list_events(iid) == [] and await store.audit_log(iid) == []
    assert await store.get_interview(keep) is not None
    assert await store.delete_interview(iid) is False


async def test_retention_fields_and_ttl_indexes(store: Store, settings: Any) -> None:
    iid = await new_interview(store)
    ev = Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.6, interview_id=iid, snapshot=JPEG)
    await store.save_event(ev)
    await store.review_event(iid, ev.id, state="confirmed", by="x")
    want = datetime.now(timezone.utc) + timedelta(days=settings.retention_days)
    for coll in (store.interviews, store.events, store.snapshots, store.audit):
        doc = await coll.find_one({})
        assert doc is not None
        assert abs((doc["expires_at"] - want).total_seconds()) < 60, coll.name
        info = await coll.index_information()
        ttl = [v for v in info.values() if v.get("expireAfterSeconds") is not None]
        assert ttl and ttl[0]["key"] == [("expires_at", 1)] and ttl[0]["expireAfterSeconds"] == 0, coll.name
    ev_info = await store.events.index_information()
    assert any(v["key"] == [("interview_id", 1), ("start", 1)] for v in ev_info.values())
    assert any(v["key"] == [("id", 1)] and v.get("unique") for v in ev_info.values())
    audit_info = await store.audit.index_information()
    assert any(v["key"] == [("interview_id", 1), ("at", 1)] for v in audit_info.values())
    got = await store.get_interview(iid)
    assert got is not None and abs((parse_utc(got["expires_at"]) - want).total_seconds()) < 60


async def test_retention_zero_keeps_forever(settings: Any) -> None:
    store = await Store.open(replace(settings, retention_days=0))
    try:
        iid = await new_interview(store)
        await store.save_event(Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.6, interview_id=iid))
        assert await store.interviews.count_documents({"expires_at": {"$exists": True}}) == 0
        assert await store.events.count_documents({"expires_at": {"$exists": True}}) == 0
    finally:
        await store.close()


@pytest.mark.slow
async def test_secantusdb_ttl_sweeper_deletes_expired(tmp_path: Any, settings: Any) -> None:
    """SecantusDB expires documents by itself: its sweeper runs every 60 s (not configurable in 0.7.0b3)."""
    async with EmbeddedMongo(tmp_path / "ttl") as db:
        store = await Store.open(replace(settings, mongodb_uri=db.uri, data_dir=tmp_path / "ttl"))
        try:
            iid = await new_interview(store)
            ev = Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.6, interview_id=iid, snapshot=JPEG)
            await store.save_event(ev)
            past = datetime.now(timezone.utc) - timedelta(seconds=1)
            for coll in (store.events, store.snapshots, store.interviews):
                await coll.update_many({}, {"$set": {"expires_at": past}})
            keep = await new_interview(store)
            deadline = time.monotonic() + 90
            while await store.events.count_documents({}) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await store.events.count_documents({}) == 0
            assert await store.snapshots.count_documents({}) == 0
            assert await store.get_interview(iid) is None
            assert await store.get_interview(keep) is not None
        finally:
            await store.close()


async def test_purge_expired(store: Store) -> None:
    iid = await new_interview(store)
    await store.save_event(Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.6, interview_id=iid))
    assert await store.purge_expired() == 0
    n = await store.purge_expired(datetime.now(timezone.utc) + timedelta(days=365))
    assert n == 2 and await store.get_interview(iid) is None


async def test_event_write_latency(store: Store) -> None:
    iid = await new_interview(store)
    n = 100
    t0 = time.perf_counter()
    for i in range(n):
        await store.save_event(Event(type=FACE_MISSING, start=float(i), end=None, confidence=0.5,
                                     interview_id=iid, snapshot=JPEG if i % 10 == 0 else None))
    per_event = (time.perf_counter() - t0) / n
    print(f"\nevent write latency: {per_event * 1000:.1f} ms/event over {n} events")
    assert per_event < 0.25
    assert await store.events.count_documents({"interview_id": iid}) == n
