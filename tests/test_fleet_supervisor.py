"""The supervisor on real child processes (spawn) running ``tests.support.fleet_jobs:run``."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.fleet import FleetSettings, Job
from bot.fleet.supervisor import Supervisor, SupervisorFull
from tests.support.fleet_jobs import alive, read_log, starts, until

REPO = Path(__file__).resolve().parents[1]
TARGET = "tests.support.fleet_jobs:run"
FAST = FleetSettings(call_timeout=1.5, call_memory_mb=400, max_calls=4, max_restarts=3, stop_timeout=3,
                     heartbeat_interval=0.2, restart_delay=0.05)


class Ends:
    """Records on_end and on_failed callbacks."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []

    def on_end(self, job: Job, outcome: str) -> None:
        self.ended.append((job.id, outcome))

    async def on_failed(self, job: Job, reason: str) -> None:
        self.failed.append((job.id, reason))


def supervisor(ends: Ends, settings: FleetSettings = FAST) -> Supervisor:
    return Supervisor(TARGET, settings, on_end=ends.on_end, on_failed=ends.on_failed)


async def test_crash_restarts_then_graceful_stop(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    async with supervisor(ends) as sup:
        sup.start_call(Job("c1", {"log": str(log), "plan": ["crash", "run"], "stop_delay": 0.2}))
        second = (await until(lambda: starts(log)[1:], what="a restart"))[0]
        assert second["attempt"] == 2 and second["previous_end"] == "crash (exit 3)"
        await until(lambda: sup.calls()["c1"].stats.get("ticks"), what="stats in a heartbeat")
        info = sup.calls()["c1"]
        assert (info.attempt, info.previous_end, info.pid) == (2, "crash (exit 3)", second["pid"])
        os.kill(second["pid"], signal.SIGINT)  # a Ctrl-C reaches the whole process group: ignored
        await asyncio.sleep(0.3)
        assert alive(second["pid"]) and len(starts(log)) == 2
        await sup.stop_call("c1")
        assert read_log(log)[-1]["event"] == "stopped"  # the target finished its work
        assert ends.ended == [("c1", "stopped")] and ends.failed == []
        assert not alive(second["pid"])


async def test_hang_is_killed_and_restarted(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    async with supervisor(ends, FleetSettings(**{**FAST.__dict__, "call_timeout": 1.0})) as sup:
        sup.start_call(Job("h1", {"log": str(log), "plan": ["hang", "run"]}))
        first = (await until(lambda: starts(log), what="the start"))[0]
        second = (await until(lambda: starts(log)[1:], timeout=8, what="a restart"))[0]
        assert second["previous_end"].startswith("hang (no heartbeat")
        assert not alive(first["pid"])


async def test_memory_limit_restarts(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    async with supervisor(ends, FleetSettings(**{**FAST.__dict__, "call_memory_mb": 120})) as sup:
        sup.start_call(Job("m1", {"log": str(log), "plan": ["memory", "run"], "memory_mb": 200}))
        second = (await until(lambda: starts(log)[1:], what="a restart"))[0]
        assert second["previous_end"].startswith("memory (")
        assert sup.calls()["m1"].rss_mb < 120


async def test_three_restarts_then_failed(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    async with supervisor(ends) as sup:
        sup.start_call(Job("f1", {"log": str(log), "plan": ["crash"], "after": 0.0}))
        await until(lambda: ends.ended, what="the end of the call")
    assert [s["attempt"] for s in starts(log)] == [1, 2, 3, 4]
    assert ends.failed == [("f1", "crash (exit 3)")] and ends.ended == [("f1", "failed")]


async def test_done_and_stop_timeout_and_takeover_attempt(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    async with supervisor(ends) as sup:
        sup.start_call(Job("d1", {"log": str(log), "plan": ["done"]}, delivery=2))
        sup.start_call(Job("s1", {"log": str(log), "plan": ["ignore_stop"]}))
        await until(lambda: len(starts(log)) == 2, what="both starts")
        t0 = time.monotonic()
        await sup.stop_call("s1", timeout=0.5)  # ignores the stop: killed after 0.5 s
        assert time.monotonic() - t0 < 2
        await until(lambda: len(ends.ended) == 2, what="both ends")
    assert sorted(ends.ended) == [("d1", "done"), ("s1", "stopped")]
    d1 = next(s for s in starts(log) if s["delivery"] == 2)
    assert d1["previous_end"] == "worker lost"  # a job taken over from a dead worker says so


async def test_admission_by_count_and_measured_load(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    # the worker's own processes: the machine's other load (other tests) must not decide this test
    settings = FleetSettings(**{**FAST.__dict__, "max_calls": 2, "load_threshold": 0.15, "load_scope": "worker"})
    async with Supervisor(TARGET, settings, on_end=ends.on_end, tick=0.2, load_window=3) as sup:
        await asyncio.sleep(0.5)
        assert sup.can_take(), sup.load()
        sup.start_call(Job("b1", {"log": str(log), "plan": ["burn"]}))  # one core spinning
        load = await until(lambda: (not sup.can_take()) and sup.load(), what="the load to rise")
        assert load["cpu"] >= 0.15 and load["calls"] == 1 and load["rss_mb"] > 20
        assert load["machine_cpu"] >= load["cpu"] * sup.cores / os.cpu_count() * 0.5  # the machine sees it too
        sup.start_call(Job("r1", {"log": str(log)}))  # the caller may still force one in, up to max_calls
        with pytest.raises(SupervisorFull):
            sup.start_call(Job("r2", {"log": str(log)}))
        await sup.stop_call("b1", timeout=1)
        await until(sup.can_take, what="the load to fall")
    assert sorted(ends.ended) == [("b1", "stopped"), ("r1", "stopped")]


async def test_a_call_behind_its_pace_stops_admission(tmp_path: Path) -> None:
    log, ends = tmp_path / "log", Ends()
    settings = FleetSettings(**{**FAST.__dict__, "load_threshold": 5.0})  # only the pace decides here
    async with Supervisor(TARGET, settings, on_end=ends.on_end, tick=0.2) as sup:
        sup.start_call(Job("slow", {"log": str(log), "plan": ["behind"]}))
        load = await until(lambda: (not sup.can_take()) and sup.load(), what="the call to report it is behind")
        assert load["behind"] == 1 and sup.calls_behind() == ["slow"]
        await sup.stop_call("slow", timeout=1)
        assert sup.can_take()


WORKER = """
import asyncio, sys
from bot.fleet import FleetSettings, Job
from bot.fleet.supervisor import Supervisor

async def main():
    async with Supervisor("tests.support.fleet_jobs:run", FleetSettings(heartbeat_interval=0.2)) as sup:
        sup.start_call(Job("orphan", {"log": sys.argv[1], "plan": ["ignore_stop"]}))
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def descendants(root: int) -> set[int]:
    """Every process below ``root`` now."""
    parents = {}
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == parent]
        found.update(kids)
        todo.extend(kids)
    return found


async def test_sigkilled_worker_leaves_no_orphan(tmp_path: Path) -> None:
    log = tmp_path / "log"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(log)], cwd=REPO)
    try:
        child = (await until(lambda: starts(log), what="the child's start"))[0]["pid"]
        tree = descendants(worker.pid)  # the call's child, and multiprocessing's resource tracker
        assert child in tree and alive(child)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(5)
        await until(lambda: not any(alive(pid) for pid in tree), timeout=3, what="the worker's processes to die")
    finally:
        worker.kill()
        worker.wait(5)


def test_a_child_whose_parent_is_gone_exits_at_once() -> None:
    code = "from bot.fleet.supervisor import die_with_parent; die_with_parent(1); print('still here')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1 and "still here" not in done.stdout  # its parent is not pid 1: "gone"


def _call_process_imports() -> dict[str, object]:
    """In a fresh process, what a call's process does before it loads the bot (bot.callproc.run_call)."""
    import sys

    import bot.callproc

    bot.callproc.keep_out_unused()
    import socketio

    from bot.live.call import CallSession  # noqa: F401  (aiortc, python-socketio, the detectors)

    socketio.AsyncClient()  # the bot's signaling client still works
    return {"bot.fleet.jobs": "bot.fleet.jobs" in sys.modules, "redis": sys.modules.get("redis"),
            "redis_manager": socketio.redis_manager.redis}


def test_a_call_process_loads_no_redis_client():
    """A call's process is a Socket.IO client: python-socketio's package would import Redis' client for its
    servers' message queue, and bot.callproc the worker's Redis job source; neither is loaded (~6 MiB RSS)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seen = pool.apply(_call_process_imports)
    assert seen == {"bot.fleet.jobs": False, "redis": None, "redis_manager": None}
