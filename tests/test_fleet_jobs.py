"""Dispatch on a real redis-server, real workers (in-process and ``python -m bot.fleet.worker``), real
child processes running ``tests.support.fleet_jobs:run``."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.fleet import FleetSettings, Job
from bot.fleet.jobs import RedisDispatch, RedisJobSource
from bot.fleet.worker import LocalJobs, Worker
from tests.support.fleet_jobs import alive, read_log, starts, until
from tests.support.redis_server import RedisServer

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
TARGET = "tests.support.fleet_jobs:run"
FAST = FleetSettings(load_scope="worker", call_timeout=3, max_calls=4, worker_timeout=2, stop_timeout=3, heartbeat_interval=0.2,
                     restart_delay=0.05)
WORKER_TIMEOUT = 3  # s, for the worker processes (PROCTOR_WORKER_TIMEOUT)


@pytest.fixture
async def dispatch(redis_server: RedisServer) -> AsyncIterator[RedisDispatch]:
    d = RedisDispatch(redis_server.url)
    yield d
    await d.close()


@asynccontextmanager
async def worker(source: Any, settings: FleetSettings = FAST) -> AsyncIterator[Worker]:
    """An in-process worker running until the block ends (then drained and its calls stopped)."""
    w = Worker(source, TARGET, settings)
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        w.stop()
        await asyncio.wait_for(task, 10)
        await source.close()


@pytest.fixture
def worker_procs(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """``start(worker_id)`` starts a real worker process; all are killed after the test."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PROCTOR_WORKER_TIMEOUT": str(WORKER_TIMEOUT)}

    def start(worker_id: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{worker_id}.log", "ab") as err:
            procs[worker_id] = subprocess.Popen(
                [sys.executable, "-m", "bot.fleet.worker", "--redis", redis_server.url, "--target", TARGET,
                 "--worker-id", worker_id], cwd=REPO, env=env, stderr=err)
        return procs[worker_id]

    procs_start: Any = start
    yield procs_start
    for p in procs.values():
        p.kill()
        p.wait(5)


async def test_claim_heartbeat_end_ack(dispatch: RedisDispatch, redis_server: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with worker(RedisJobSource(redis_server.url, worker_id="w1", worker_timeout=2)):
        await dispatch.submit(Job("iv1", {"log": str(log)}), claim_timeout=3)
        assert await dispatch.wait_claimed("iv1", 3) == "w1"
        assert await dispatch.worker_of("iv1") == "w1"
        await until(lambda: starts(log), what="the call's start")
        beat = await eventually(lambda: dispatch.workers(), lambda w: w["w1"]["jobs"] == ["iv1"])
        assert {"cpu", "calls", "rss_mb"} <= set(beat["w1"])
        assert await dispatch.request_end("iv1") == "requested"
        await until(lambda: read_log(log)[-1]["event"] == "stopped", timeout=3, what="the call to stop")
        await eventually(lambda: dispatch.redis.exists(dispatch.job_key("iv1")), lambda n: n == 0)  # acked
        assert await dispatch.redis.xlen(dispatch.stream) == 0


async def eventually(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 3.0) -> T:
    """Poll ``read()`` until ``ok`` holds for its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            assert ok(value), value
            return value
        await asyncio.sleep(0.05)


async def test_unclaimed_job_is_cancelled_and_never_started(dispatch: RedisDispatch, redis_server: RedisServer,
                                                            tmp_path: Path) -> None:
    log = tmp_path / "log"
    await dispatch.submit(Job("late", {"log": str(log)}), claim_timeout=0.4)
    assert await dispatch.wait_claimed("late", 0.4) is None  # nobody claimed it: cancelled
    await dispatch.submit(Job("orphaned", {"log": str(log)}), claim_timeout=0.3)  # its server never waits
    await asyncio.sleep(0.5)
    source = RedisJobSource(redis_server.url, worker_id="w1", worker_timeout=0.1)
    assert await source.claim(0.2) is None  # the late reader starts neither
    await asyncio.sleep(0.7)
    assert await source.takeover() is None
    assert await dispatch.redis.xinfo_consumers(dispatch.stream, "workers") == []  # idle, empty: pruned
    async with worker(source):
        await asyncio.sleep(1.0)
    assert read_log(log) == []
    assert await dispatch.redis.xlen(dispatch.stream) == 0


async def test_stopped_worker_hands_its_call_off_at_once(dispatch: RedisDispatch, redis_server: RedisServer,
                                                         tmp_path: Path) -> None:
    log = tmp_path / "log"
    slow = FleetSettings(**{**FAST.__dict__, "worker_timeout": 10})  # a takeover by timeout would be too late
    async with worker(RedisJobSource(redis_server.url, worker_id="w1", worker_timeout=10), slow) as w1:
        await dispatch.submit(Job("iv5", {"log": str(log)}), claim_timeout=3)
        assert await dispatch.wait_claimed("iv5", 3) == "w1"
        await until(lambda: starts(log), what="the call's start")
        async with worker(RedisJobSource(redis_server.url, worker_id="w2", worker_timeout=10), slow):
            w1.stop()  # as after a second SIGTERM: the call is stopped and released, not acked
            again = (await until(lambda: starts(log)[1:], timeout=4, what="the takeover"))[0]
            assert again["delivery"] == 2 and again["previous_end"] == "worker lost"
            assert await dispatch.worker_of("iv5") == "w2"


@pytest.mark.slow
async def test_sigkilled_worker_is_taken_over(dispatch: RedisDispatch, worker_procs: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    a, b = worker_procs("wa"), worker_procs("wb")
    await dispatch.submit(Job("iv2", {"log": str(log)}), claim_timeout=10)
    first = await dispatch.wait_claimed("iv2", 10)
    assert first in ("wa", "wb")
    child = (await until(lambda: starts(log), what="the call's start"))[0]
    assert child["delivery"] == 1
    other = "wb" if first == "wa" else "wa"
    killed = a if first == "wa" else b
    t0 = asyncio.get_running_loop().time()
    os.kill(killed.pid, signal.SIGKILL)
    await until(lambda: not alive(child["pid"]), timeout=3, what="the call's child to die with its worker")
    again = (await until(lambda: starts(log)[1:], timeout=WORKER_TIMEOUT + 5, what="the takeover"))[0]
    took = asyncio.get_running_loop().time() - t0
    assert again["delivery"] == 2 and again["previous_end"] == "worker lost" and again["attempt"] == 1
    assert await dispatch.worker_of("iv2") == other
    print(f"takeover {took:.1f} s after SIGKILL (worker timeout {WORKER_TIMEOUT} s)")
    assert await dispatch.request_end("iv2") == "requested"
    await until(lambda: read_log(log)[-1]["event"] == "stopped", timeout=5, what="the call to stop")


@pytest.mark.slow
async def test_sigterm_drains(dispatch: RedisDispatch, worker_procs: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = worker_procs("wd")
    await dispatch.submit(Job("running", {"log": str(log), "stop_delay": 0.3}), claim_timeout=10)
    assert await dispatch.wait_claimed("running", 10) == "wd"
    child = (await until(lambda: starts(log), what="the call's start"))[0]
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    await dispatch.submit(Job("new", {"log": str(log)}), claim_timeout=1.5)
    assert await dispatch.wait_claimed("new", 1.5) is None  # a draining worker takes nothing new
    assert alive(child["pid"]) and proc.poll() is None  # and finishes its running call
    assert await dispatch.request_end("running") == "requested"
    assert await asyncio.to_thread(proc.wait, 10) == 0  # its last call over: the worker exits
    assert [e["event"] for e in read_log(log)] == ["start", "stopped"]
    assert await dispatch.redis.xlen(dispatch.stream) == 0


async def test_redis_restart_mid_call(dispatch: RedisDispatch, redis_server: RedisServer, tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with worker(RedisJobSource(redis_server.url, worker_id="w1", worker_timeout=2)):
        await dispatch.submit(Job("iv3", {"log": str(log)}), claim_timeout=3)
        assert await dispatch.wait_claimed("iv3", 3) == "w1"
        child = (await until(lambda: starts(log), what="the call's start"))[0]
        redis_server.stop()
        await asyncio.sleep(1.5)  # the worker's heartbeats fail meanwhile
        redis_server.start()  # same port, empty
        assert alive(child["pid"])
        await dispatch.submit(Job("iv4", {"log": str(log)}), claim_timeout=5)
        assert await dispatch.wait_claimed("iv4", 5) == "w1"  # dispatch resumed
        assert await dispatch.worker_of("iv3") == "w1"  # the running call was put back
        await until(lambda: len(starts(log)) == 2, what="the new call's start")
        assert starts(log)[0]["pid"] == child["pid"] and alive(child["pid"])  # never restarted
        assert await dispatch.request_end("iv3") == "requested"  # and it can still be ended
        await until(lambda: any(e["event"] == "stopped" for e in read_log(log)), timeout=3, what="the stop")


async def test_local_jobs_without_redis(tmp_path: Path) -> None:
    log = tmp_path / "log"
    local = LocalJobs(max_queued=4)
    async with worker(local, FleetSettings(**{**FAST.__dict__, "max_calls": 1})):
        await local.submit(Job("a", {"log": str(log)}), claim_timeout=2)
        assert await local.wait_claimed("a", 2) == "local"
        await local.submit(Job("b", {"log": str(log)}), claim_timeout=0.5)  # the worker is full
        assert await local.wait_claimed("b", 0.5) is None
        assert await local.request_end("a") == "requested"
        await until(lambda: read_log(log)[-1]["event"] == "stopped", timeout=3, what="the call to stop")
        await asyncio.sleep(0.6)  # room again: the cancelled job is still never started
        assert [e["event"] for e in read_log(log)] == ["start", "stopped"]
        assert local.last_load["calls"] == 0
