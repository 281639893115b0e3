"""A real call target for the fleet tests (a child process that behaves as its job tells it), and the
helpers the tests watch it with.

``job.data``:
- ``log``: a file where each start and end is appended as one JSON line
  (``{"event": "start"|"stopped"|"done", "pid", "attempt", "previous_end", "delivery"}``);
- ``plan``: what each attempt does, by attempt number (the last entry holds for later attempts):
  ``run`` (until stopped), ``done`` (returns after ``duration`` s), ``crash`` (exit code 3 after
  ``after`` s), ``hang`` (blocks its event loop after ``after`` s), ``memory`` (holds ``memory_mb`` MiB,
  then runs), ``burn`` (spins one core, then runs), ``behind`` (reports ``behind`` in its stats, then runs),
  ``ignore_stop`` (never ends);
- ``stop_delay``: seconds of "closing work" after a stop request.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.fleet import Job
from bot.fleet.supervisor import CallControl


def record(path: str, event: str, control: CallControl) -> None:
    line = {"event": event, "pid": os.getpid(), "attempt": control.attempt,
            "previous_end": control.previous_end, "delivery": control.job.delivery}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


# --- read by the tests ---


def read_log(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def starts(log: str | Path) -> list[dict[str, Any]]:
    return [e for e in read_log(log) if e["event"] == "start"]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond()`` until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --- the call target ---


def _burn() -> None:
    while True:
        sum(range(10_000))


async def run(job: Job, control: CallControl) -> None:
    d = job.data
    plan: list[str] = d.get("plan", ["run"])
    action = plan[min(control.attempt, len(plan)) - 1]
    record(d["log"], "start", control)
    control.stats["action"] = action
    if action == "crash":
        await asyncio.sleep(d.get("after", 0.2))
        os._exit(3)
    if action == "hang":
        await asyncio.sleep(d.get("after", 0.2))
        time.sleep(3600)  # blocks the loop: no more heartbeats
    if action == "memory":
        ballast = bytearray(int(d["memory_mb"] * 1024 * 1024))
        ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
        control.stats["ballast"] = len(ballast)
    if action == "burn":
        threading.Thread(target=_burn, daemon=True).start()
    if action == "behind":  # a call that says it cannot keep its pace
        control.stats["behind"] = True
    if action == "ignore_stop":
        await asyncio.Event().wait()
    if action == "done":
        await asyncio.sleep(d.get("duration", 0.2))
        record(d["log"], "done", control)
        return
    ticks = 0
    while not await control.wait_stop(0.1):
        ticks += 1
        control.stats["ticks"] = ticks
    await asyncio.sleep(d.get("stop_delay", 0.0))
    record(d["log"], "stopped", control)
