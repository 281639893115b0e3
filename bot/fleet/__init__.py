"""The bot fleet's library: a job is one call, run in a supervised child process of a worker.

- ``supervisor``: ``Supervisor`` runs each job in its own child process (spawn), with heartbeats,
  restarts, memory/hang limits and admission by measured load.
- ``jobs``: dispatch of jobs to workers on Redis Streams (``RedisDispatch`` for the server,
  ``RedisJobSource`` for a worker) and the two small interfaces they implement.
- ``worker``: ``run_worker``, the worker's loop that joins a job source to a supervisor, and
  ``LocalJobs``, the in-process job source of ``proctor serve`` (no Redis).

This module holds only what every part (and every child process) needs, with no import beyond the
standard library, so a child process starts light: the ``Job`` and the ``FleetSettings``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FleetSettings", "Job"]


@dataclass(frozen=True)
class Job:
    """One call to run: ``id`` is the interview id (one job per interview); ``data`` is what the child
    target needs (plain JSON values: interview, bot token, server URL); ``delivery`` counts how many
    times dispatch handed this job to a worker (2 and more: a worker died and another took it over)."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)
    delivery: int = 1


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def _scope(value: str) -> str:
    if value not in ("machine", "worker"):
        raise ValueError(f"PROCTOR_LOAD_SCOPE must be machine or worker, got {value!r}")
    return value


@dataclass(frozen=True)
class FleetSettings:
    """Limits of a worker and of its calls. Tests pass short values; ``from_env`` reads production's."""

    call_timeout: float = 10.0  # s without a heartbeat from a call's child: hung, killed and restarted
    call_memory_mb: float = 2048.0  # RSS of a call's child (and its children) above which it is restarted
    load_threshold: float = 0.7  # share of the machine's cores; no new call at or above it
    load_scope: str = "worker"  # what the threshold measures: "worker" (the worker's own processes: a dedicated
    # worker host) or "machine" (the busier of the whole machine and the worker: a host shared with other work)
    max_calls: int = 4  # calls of one worker at once
    overcommit: bool = False  # take calls even while running ones fall behind their rates (benchmarks)
    worker_timeout: float = 10.0  # s without a worker heartbeat before another worker takes its jobs
    max_restarts: int = 3  # restarts of one call's child before the call is given up (on_failed)
    stop_timeout: float = 10.0  # s a call's child has to finish after "stop" before it is killed
    heartbeat_interval: float = 1.0  # s between heartbeats (child -> supervisor, worker -> Redis)
    restart_delay: float = 0.5  # s before a crashed/killed child is started again

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FleetSettings:
        """``PROCTOR_CALL_TIMEOUT``, ``PROCTOR_CALL_MEMORY_MB``, ``PROCTOR_LOAD_THRESHOLD``, ``PROCTOR_LOAD_SCOPE``,
        ``PROCTOR_MAX_BOTS``, ``PROCTOR_WORKER_TIMEOUT``; an unset or empty variable keeps the default.
        Raises ``ValueError`` naming the variable when one is not a valid number."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            call_timeout=_number(env, "PROCTOR_CALL_TIMEOUT", d.call_timeout, minimum=0.1),
            call_memory_mb=_number(env, "PROCTOR_CALL_MEMORY_MB", d.call_memory_mb, minimum=1),
            load_threshold=_number(env, "PROCTOR_LOAD_THRESHOLD", d.load_threshold, minimum=0.01),
            load_scope=_scope(env.get("PROCTOR_LOAD_SCOPE", "") or d.load_scope),
            max_calls=int(_number(env, "PROCTOR_MAX_BOTS", d.max_calls, minimum=1)),
            overcommit=env.get("PROCTOR_OVERCOMMIT", "").strip().lower() in ("1", "true", "yes", "on"),
            worker_timeout=_number(env, "PROCTOR_WORKER_TIMEOUT", d.worker_timeout, minimum=0.5),
        )
