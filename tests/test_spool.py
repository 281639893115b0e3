"""The on-disk spool, alone and behind the Store during a real database outage."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.spool import Spool
from adapters.store import Store, StoreUnavailable
from bot.analysis.events import LOOKING_AWAY, Event
from bot.settings import Settings

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


def ev(start: float, iid: str = "iv1", **kw: Any) -> Event:
    return Event(type=LOOKING_AWAY, start=start, end=None, confidence=0.7, interview_id=iid, **kw)


def test_put_overwrites_by_id_and_survives_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_events=10)
    e = ev(1.0, snapshot=JPEG, detail={"yaw": 31.5})
    spool.put(e, rev=1)
    spool.put(e, rev=1)  # retried
    spool.put(replace(e, end=2.0), rev=2)  # updated
    files = list((tmp_path / "spool").glob("*.json"))
    assert len(files) == 1 and files[0].name == f"{e.id}.json" and len(spool) == 1
    rec = json.loads(files[0].read_bytes())
    assert rec["rev"] == 2 and rec["event"]["end"] == 2.0 and "snapshot" not in rec["event"]
    assert not list((tmp_path / "spool").glob("*.tmp"))

    again = Spool(tmp_path / "spool", max_events=10)  # a new process
    (item,) = again.items()
    assert item.rev == 2 and item.event.id == e.id and item.event.end == 2.0
    assert item.event.snapshot == JPEG and item.event.detail == {"yaw": 31.5}


def test_older_rev_never_replaces_newer(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=10)
    e = ev(1.0)
    spool.put(replace(e, end=5.0), rev=10)
    spool.put(e, rev=3)
    (item,) = spool.items()
    assert item.rev == 10 and item.event.end == 5.0
    assert spool.remove(e.id, 3) is False  # stale remove (an update came in meanwhile)
    assert len(spool) == 1
    assert spool.remove(e.id, 10) is True and len(spool) == 0
    assert not list(tmp_path.glob("*.json"))


def test_items_ordered_and_per_interview(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_events=10)
    a, b, c = ev(3.0), ev(1.0, "iv2"), ev(2.0)
    spool.put(a, 1)
    spool.put(b, 2)
    spool.put(c, 3)
    assert [i.event.id for i in spool.items()] == [a.id, b.id, c.id]  # by rev: write order
    assert [i.event.id for i in spool.items("iv1")] == [a.id, c.id]
    assert spool.drop_interview("iv1") == 2 and [i.event.id for i in spool.items()] == [b.id]


def test_over_limit_keeps_everything_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="adapters.spool")
    spool = Spool(tmp_path, max_events=3)
    events = [ev(float(i)) for i in range(8)]
    for i, e in enumerate(events):
        spool.put(e, i + 1)
    assert len(spool) == 8 and len(list(tmp_path.glob("*.json"))) == 8  # nothing dropped
    errors = [r for r in caplog.records if "over its limit" in r.getMessage()]
    assert errors and "none is dropped" in errors[0].getMessage()
    assert len(errors) < 8  # loud, but not one line per event


def test_unreadable_and_odd_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "x.json.123.tmp").write_text("half a write")
    caplog.set_level(logging.ERROR, logger="adapters.spool")
    spool = Spool(tmp_path, max_events=10)
    assert len(spool) == 0
    assert (tmp_path / "unwritable" / "broken.json").exists()  # set aside, not deleted
    assert not (tmp_path / "x.json.123.tmp").exists()
    odd = ev(1.0, id="../../etc/passwd")
    path = spool.put(odd, 1)
    assert path.parent == tmp_path and path.name.startswith("h-")
    assert spool.items()[0].event.id == "../../etc/passwd"


async def test_outage_spools_then_flushes_exactly_once(
    mongo_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, mongodb_uri=mongo_server.uri)
    store = await Store.open(settings, server_selection_timeout_ms=500, flush_min_delay=0.1, flush_max_delay=0.5)
    try:
        iv = await store.create_interview(candidate_name="Ada", interviewer_email="lead@example.org", policy=None)
        iid = iv["id"]
        before = [ev(float(i), iid, snapshot=JPEG if i == 0 else None) for i in range(5)]
        for e in before:
            await store.save_event(e)
        assert not store.outage

        caplog.set_level(logging.INFO, logger="adapters.store")
        await mongo_server.stop(kill=True)  # the database process dies mid-interview

        during = [ev(10.0 + i, iid, snapshot=JPEG if i % 3 == 0 else None) for i in range(15)]
        latencies = []
        for e in during:
            t0 = time.perf_counter()
            await store.save_event(e)
            latencies.append(time.perf_counter() - t0)
        closed = replace(before[1], end=7.5)  # an event closed while the database is away
        t0 = time.perf_counter()
        await store.save_event(closed)
        await store.save_event(closed)  # and retried
        latencies.append(time.perf_counter() - t0)
        print(f"\nsave_event during outage: first {latencies[0]*1000:.0f} ms, "
              f"then max {max(latencies[1:])*1000:.1f} ms")
        assert latencies[0] < 3.0  # the first write waits for server selection once
        assert max(latencies[1:]) < 0.5  # then straight to the spool
        assert store.outage and len(store.spool) == 16
        warnings = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
        assert len(warnings) == 1  # ONE line per outage, not one per event
        assert warnings[0].startswith(f"database unavailable, spooling events to {tmp_path / 'spool'}")
        with pytest.raises(StoreUnavailable):
            await store.list_events(iid)

        t_restart = time.perf_counter()
        await mongo_server.start()  # same port, same storage
        assert await store.drain(timeout=30)
        recovery = time.perf_counter() - t_restart
        print(f"outage recovery: spool written {recovery:.2f} s after the restart began")
        assert any(r.getMessage() == "database back: wrote 16 spooled events" for r in caplog.records)
        assert len(store.spool) == 0 and not list((tmp_path / "spool").glob("*.json"))

        # every event exactly once, the latest version of each
        counts = await store.events.aggregate(
            [{"$match": {"interview_id": iid}}, {"$group": {"_id": "$id", "n": {"$sum": 1}}}]).to_list(None)
        assert len(counts) == 20 and all(c["n"] == 1 for c in counts)
        assert await store.events.count_documents({}) == 20
        got = await store.list_events(iid, snapshots=True)
        assert [e.id for e in got] == [e.id for e in before + during]
        assert got[1].end == 7.5
        assert [e.snapshot is not None for e in got] == [e.snapshot is not None for e in before + during]
        assert await store.get_snapshot(iid, during[3].id) == JPEG

        await store.save_event(ev(99.0, iid))  # back to direct writes
        assert not store.outage and await store.events.count_documents({}) == 21
    finally:
        await store.close()


async def test_spooled_events_are_visible_and_deletable(mongo_server: Any, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mongodb_uri=mongo_server.uri)
    store = await Store.open(settings, server_selection_timeout_ms=300, flush_min_delay=0.1, flush_max_delay=0.3)
    try:
        iid = (await store.create_interview(candidate_name="B", interviewer_email="x@y", policy=None))["id"]
        stored = ev(1.0, iid)
        await store.save_event(stored)
        await store.review_event(iid, stored.id, state="confirmed", by="x@y")
        await mongo_server.stop(kill=True)
        await store.save_event(replace(stored, end=3.0))  # update of a stored, reviewed event
        snap = ev(2.0, iid, snapshot=JPEG)
        await store.save_event(snap)
        await mongo_server.start()
        # before the flusher catches up (or after), reads merge the spool: newest version, review kept
        evs = await store.list_events(iid, snapshots=True)
        assert [(e.id, e.end, e.review) for e in evs] == [(stored.id, 3.0, "confirmed"), (snap.id, None, None)]
        assert evs[1].snapshot == JPEG
        assert await store.drain(timeout=30)
        (got_stored, _) = await store.list_events(iid)
        assert got_stored.review == "confirmed" and got_stored.end == 3.0

        await mongo_server.stop(kill=True)
        await store.save_event(ev(5.0, iid))
        assert len(store.spool) == 1
        await mongo_server.start()
        assert await store.delete_interview(iid) is True
        assert len(store.spool) == 0  # a deleted interview's spooled events are not resurrected
        assert await store.drain(timeout=30)
        assert await store.events.count_documents({}) == 0
    finally:
        await store.close()


async def test_spool_left_by_previous_run_is_written_at_open(mongo_server: Any, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path, mongodb_uri=mongo_server.uri)
    leftover = [ev(float(i), "iv-old", snapshot=JPEG) for i in range(3)]
    spool = Spool.from_settings(settings)
    for i, e in enumerate(leftover):
        spool.put(e, rev=i + 1)
    caplog.set_level(logging.INFO)
    store = await Store.open(settings, flush_min_delay=0.05)
    try:
        assert await store.drain(timeout=30)
        assert [e.id for e in await store.list_events("iv-old")] == [e.id for e in leftover]
        assert any("database back: wrote 3 spooled events" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()
