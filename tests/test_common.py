"""bot.common: one UTC reading of stored times, one JSON conversion, background task sets."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from bot.analysis.policy import Policy
from bot.common import TaskSet, as_unix, jsonable, parse_utc
from tests.support.paths import REPO

NEW_YEAR_UTC = 1767225600.0  # 2026-01-01T00:00:00Z


def test_every_form_of_a_timestamp_is_the_same_instant():
    forms = ["2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00",
             "2025-12-31T19:00:00-05:00", datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone.utc),
             NEW_YEAR_UTC]
    assert [as_unix(f) for f in forms] == [NEW_YEAR_UTC] * len(forms)
    assert parse_utc("2025-12-31T19:00:00-05:00") == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert [as_unix(v) for v in (None, True, "not a time", "", [])] == [None] * 5


def test_a_naive_started_at_is_utc_for_a_bot_in_new_york():
    """The live call's clock (seconds since the candidate joined) must not shift by the host's zone.

    Before, the bot read a naive ``started_at`` as local time: in New York its events were 5 hours off."""
    code = ("from bot.live.call import CallSession; "
            "s = CallSession({'id': 'iv1', 'started_at': '2026-01-01T00:00:00'}, 'token', 'http://127.0.0.1:9', None); "
            "print(s.origin)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TZ": "America/New_York"}, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) == NEW_YEAR_UTC


def test_jsonable_makes_anything_the_project_stores_json_ready():
    value = {"when": datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "day": date(2026, 1, 2),
             "n": np.float32(0.5), "count": np.int64(3), "box": np.array([1, 2]), "pair": (1, "a"),
             "jpeg": b"\xff\xd8", "policy": Policy(), 7: None}
    out = jsonable(value)
    json.dumps(out)  # would raise on anything left over
    assert out["when"] == "2026-01-01T00:00:00+00:00" and out["day"] == "2026-01-02"
    assert out["n"] == 0.5 and out["count"] == 3 and out["box"] == [1, 2] and out["pair"] == [1, "a"]
    assert out["jpeg"] is None and out["policy"]["sampling"]["face_fps"] == 5.0 and out["7"] is None


async def test_taskset_keeps_tasks_until_they_end_and_logs_failures(caplog):
    tasks = TaskSet("test")
    done: list[int] = []

    async def work(n: int) -> None:
        await asyncio.sleep(0.01 * n)
        done.append(n)

    async def fail() -> None:
        raise RuntimeError("boom")

    for n in (3, 1, 2):
        tasks.spawn(work(n))
    tasks.spawn(fail(), name="failing-task")
    assert len(tasks) == 4
    await tasks.wait()
    assert sorted(done) == [1, 2, 3] and len(tasks) == 0
    assert any("failing-task failed" in r.getMessage() for r in caplog.records)

    sleeper = tasks.spawn(asyncio.sleep(60))
    await tasks.cancel()
    assert sleeper.cancelled() and len(tasks) == 0


@pytest.mark.parametrize("value", ["2026-13-01T00:00:00", "yesterday"])
def test_unreadable_times_are_none(value):
    assert parse_utc(value) is None and as_unix(value) is None


def test_trim_heap_gives_freed_blocks_back():
    """In a fresh interpreter: 32 MiB of 1 MiB blocks freed between blocks that live on stay in the process
    (glibc keeps them in its heap) until ``trim_heap``, which a call's process runs once its models are loaded
    and then every few seconds."""
    code = """
from bot.common import trim_heap
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) // 1024
before = rss()
blob = b"\\1" * (4 * 1024 * 1024)  # freed: glibc's dynamic mmap threshold rises to 4 MiB
del blob
kept, parts = [], []
for _ in range(32):
    parts.append(b"\\1" * (1024 * 1024))  # 1 MiB blocks (a model file being parsed, say): from the heap
    kept.append(b"\\2" * 100_000)  # a block that lives on, after each
del parts
freed = rss() - before
print(freed, trim_heap(), rss() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    freed, trimmed, after = out.stdout.split()
    assert int(freed) >= 30 and trimmed == "True" and int(after) <= 6, out.stdout
