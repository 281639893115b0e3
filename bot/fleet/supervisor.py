"""Every call in a child process of its own, supervised: heartbeats, restarts, limits, admission by load.

``Supervisor`` is asyncio-native: create it, ``start_call``, ``stop_call`` and ``close`` it from one event
loop, in the thread that keeps running for the worker's whole life (the main thread). That matters:
``PR_SET_PDEATHSIG`` fires when the *thread* that started the child ends, so children are never started
from an executor thread.

A child runs ``target``, an import string ``"package.module:function"`` naming an ``async def
function(job: Job, control: CallControl) -> None``. The child is started with the ``spawn`` context:
it imports the target (and so the models) itself; the worker process imports nothing heavy for it.

Child and supervisor talk over a ``multiprocessing`` pipe:
- child -> supervisor, every ``heartbeat_interval``: ``{"t": "hb", "rss": bytes, "stats": {...}}``,
  sent from the child's event loop, so a blocked loop is a missing heartbeat (a hang);
- supervisor -> child: ``{"t": "stop"}``, the graceful end of the call (``CallControl.wait_stop``).

A child's end is one of ``done`` (its target returned), ``stopped`` (after ``stop_call``), or a failure:
``crash (exit N)``, ``crash (signal N)``, ``hang (...)``, ``memory (...)``. A failure restarts the child
(attempt + 1, the failure given to the new child as ``previous_end``) up to ``max_restarts`` times; then
``on_failed(job, reason)``. ``on_end(job, outcome)`` is called once per call with ``done``, ``stopped``
or ``failed``.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bot.fleet import FleetSettings, Job

log = logging.getLogger("proctor.fleet")

EndCallback = Callable[[Job, str], Awaitable[None] | None]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MAX_STATS = 32  # keys of a target's stats dict sent with a heartbeat
WORKER_LOST = "worker lost"  # previous_end of a call taken over from a dead worker
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
_MIB = 1024 * 1024


class SupervisorFull(Exception):
    """``start_call`` while the supervisor is closing or runs ``max_calls`` calls already."""


# --- the child's side ---------------------------------------------------------------------------------


class CallControl:
    """What a call's target gets beside its job, in the child: which attempt this is, why the previous one
    ended, a small ``stats`` dict it may update (sent with each heartbeat), and the stop request."""

    def __init__(self, job: Job, attempt: int, previous_end: str | None,
                 context: dict[str, Any] | None = None) -> None:
        self.job = job
        self.context = context or {}  # the worker's own settings for its calls (plain values)
        self.attempt = attempt  # 1 for the first child of this call on this worker
        self.previous_end = previous_end  # None, a failure reason, or WORKER_LOST after a takeover
        self.stats: dict[str, Any] = {}
        self._stop = asyncio.Event()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    async def wait_stop(self, timeout: float | None = None) -> bool:
        """Wait until the supervisor asks this call to stop (or ``timeout`` s); True if it did."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout)
        except TimeoutError:
            return False
        return True


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before prctl: nobody would kill us
        os._exit(1)


def _child_main(target: str, job: Job, conn: Connection, attempt: int, previous_end: str | None,
                interval: float, parent_pid: int, context: dict[str, Any] | None = None) -> None:
    """Entry point of a call's child process (spawn). An exception from the target exits with code 1.

    SIGINT and SIGTERM are ignored: a Ctrl-C or a service manager signalling the whole process group
    must not end the calls; the worker (drain) and its supervisor (stop, kill) decide their end."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(_child_run(target, CallControl(job, attempt, previous_end, context), conn, interval))


def _import_target(spec: str) -> Callable[[Job, CallControl], Awaitable[None]]:
    module_name, _, attr = spec.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{spec} must be an async function (job, control)")
    return fn


async def _child_run(target: str, control: CallControl, conn: Connection, interval: float) -> None:
    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), _read_control, conn, control, loop)
    beats = asyncio.create_task(_send_heartbeats(conn, control, interval))
    try:
        fn = await asyncio.to_thread(_import_target, target)  # heavy imports; the loop keeps beating
        await fn(control.job, control)
    finally:
        beats.cancel()
        loop.remove_reader(conn.fileno())


def _read_control(conn: Connection, control: CallControl, loop: asyncio.AbstractEventLoop) -> None:
    try:
        while conn.poll():
            if conn.recv().get("t") == "stop":
                control._stop.set()
    except (EOFError, OSError):  # the supervisor closed its end: nobody will read our results
        loop.remove_reader(conn.fileno())
        control._stop.set()


async def _send_heartbeats(conn: Connection, control: CallControl, interval: float) -> None:
    pid = os.getpid()
    while True:
        beat = {"t": "hb", "rss": _rss_pages(pid) * _PAGE, "stats": dict(list(control.stats.items())[:MAX_STATS])}
        try:
            data = pickle.dumps(beat)
        except Exception as e:  # a stats value that cannot be sent must not stop the heartbeats
            data = pickle.dumps({**beat, "stats": {"error": f"stats not picklable: {e}"}})
        try:
            conn.send_bytes(data)
        except OSError:
            control._stop.set()
            return
        await asyncio.sleep(interval)


# --- measuring processes from /proc -------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    ppid: int
    cpu_ticks: int  # utime + stime
    rss_pages: int


def _rss_pages(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _read_procs() -> dict[int, _Proc]:
    """Every process of the machine (procfs: no disk I/O, a few ms for hundreds of processes)."""
    procs: dict[int, _Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2:].split()  # after "pid (comm) ": field 3 (state) is rest[0]
        procs[int(name)] = _Proc(int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21]))
    return procs


def _tree(root: int, procs: dict[int, _Proc]) -> list[int]:
    """``root`` and all its descendants among ``procs``."""
    children: dict[int, list[int]] = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


class _TreeCpu:
    """CPU share of the machine's cores used by a process tree, averaged over the last few samples."""

    def __init__(self, cores: int, window: int) -> None:
        self._cores = cores
        self._last: dict[int, int] = {}
        self._last_t: float | None = None
        self._shares: deque[float] = deque(maxlen=window)

    def add(self, ticks: dict[int, int], t: float) -> None:
        if self._last_t is not None and t > self._last_t:
            used = 0
            for pid, v in ticks.items():
                before = self._last.get(pid, 0)
                used += v - before if v >= before else v  # a lower count is a reused pid: a new process
            self._shares.append(used / _TICKS / (t - self._last_t) / self._cores)
        self._last, self._last_t = ticks, t

    @property
    def share(self) -> float:
        return sum(self._shares) / len(self._shares) if self._shares else 0.0


class _MachineCpu:
    """Busy share of all the machine's CPUs (``/proc/stat``), averaged over the last few samples: what the
    calls of this worker would have to share with everything else running there."""

    def __init__(self, window: int) -> None:
        self._last: tuple[int, int] | None = None
        self._shares: deque[float] = deque(maxlen=window)

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", "rb") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
        return total - fields[3] - (fields[4] if len(fields) > 4 else 0), total

    def sample(self) -> None:
        now = self._read()
        if now is not None and self._last is not None and now[1] > self._last[1]:
            self._shares.append((now[0] - self._last[0]) / (now[1] - self._last[1]))
        self._last = now or self._last

    @property
    def share(self) -> float:
        return sum(self._shares) / len(self._shares) if self._shares else 0.0


# --- the supervisor's side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallInfo:
    """A running call as the worker reports it."""

    job: Job
    attempt: int
    previous_end: str | None
    pid: int | None
    rss_mb: float
    stats: dict[str, Any]


class _Child:
    """One child process of a call, watched from the event loop: its heartbeats and its exit."""

    def __init__(self, ctx: Any, target: str, job: Job, attempt: int, previous_end: str | None,
                 interval: float, context: dict[str, Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_child_main, name=f"proctor-call-{job.id}",
            args=(target, job, child_conn, attempt, previous_end, interval, os.getpid(), context))
        try:
            self.process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # the child has its copy: its death is an EOF here
        self.conn: Connection = parent_conn
        self.pid: int = self.process.pid
        self.last_beat = time.monotonic()  # the start counts as a beat: the child has call_timeout to send one
        self.rss_mb = 0.0
        self.stats: dict[str, Any] = {}
        self.kill_reason: str | None = None
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._loop.add_reader(self.conn.fileno(), self._on_message)
        self._loop.add_reader(self.process.sentinel, self._on_exit)

    def _on_message(self) -> None:
        try:
            while self.conn.poll():
                msg = self.conn.recv()
                if msg.get("t") == "hb":
                    self.last_beat = time.monotonic()
                    self.stats = msg.get("stats", {})
                    self.rss_mb = max(self.rss_mb, msg.get("rss", 0) / _MIB)
        except (EOFError, OSError):
            self._loop.remove_reader(self.conn.fileno())

    def _on_exit(self) -> None:
        self._loop.remove_reader(self.process.sentinel)
        self._loop.remove_reader(self.conn.fileno())
        self.process.join(timeout=1.0)  # the sentinel closes as the process exits: at most a moment
        if self.process.exitcode is None:  # never seen; make sure close() below finds it reaped
            self.kill("exit not reaped")
            self.process.join()
        code = self.process.exitcode
        self.process.close()
        self.conn.close()
        self.exited.set_result(-signal.SIGKILL if code is None else code)  # None: for the type checker

    def send_stop(self) -> None:
        if not self.exited.done():
            with contextlib.suppress(OSError):  # already exiting: its exit ends the call
                self.conn.send({"t": "stop"})

    def kill(self, reason: str) -> None:
        """SIGKILL the child; ``reason`` becomes its end reason (the first one given wins)."""
        if self.exited.done():
            return
        self.kill_reason = self.kill_reason or reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def end_reason(self, code: int, stopping: bool) -> str:
        if stopping:
            return "stopped"
        if self.kill_reason:
            return self.kill_reason
        if code == 0:
            return "done"
        return f"crash (signal {-code})" if code < 0 else f"crash (exit {code})"


async def _callback(fn: EndCallback | None, job: Job, arg: str) -> None:
    if fn is None:
        return
    try:
        result = fn(job, arg)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("fleet: callback %r failed for call %s", fn, job.id)


class _Call:
    """One job across its child processes: restarts a failed child up to ``max_restarts`` times."""

    def __init__(self, sup: Supervisor, job: Job) -> None:
        self.sup = sup
        self.job = job
        self.attempt = 0
        self.previous_end: str | None = WORKER_LOST if job.delivery > 1 else None
        self.child: _Child | None = None
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"call-{job.id}")

    async def _run(self) -> None:
        s = self.sup.settings
        outcome = "failed"
        try:
            while not self.stopping.is_set():
                self.attempt += 1
                try:
                    self.child = _Child(self.sup.mp_context, self.sup.target, self.job, self.attempt,
                                        self.previous_end, s.heartbeat_interval, self.sup.call_context)
                except OSError as e:  # no process could be made (fork or pipe limits): a failure too
                    self.child = None
                    reason = f"start failed ({e})"
                else:
                    log.info("fleet: call %s attempt %d started (pid %d, previous end: %s)",
                             self.job.id, self.attempt, self.child.pid, self.previous_end)
                    reason = self.child.end_reason(await self.child.exited, self.stopping.is_set())
                if reason in ("done", "stopped"):
                    outcome = reason
                    break
                log.warning("fleet: call %s attempt %d ended: %s", self.job.id, self.attempt, reason)
                if self.attempt > s.max_restarts:
                    await _callback(self.sup.on_failed, self.job, reason)
                    break
                self.previous_end = reason
                with contextlib.suppress(TimeoutError):  # wait before the restart, unless a stop comes first
                    await asyncio.wait_for(self.stopping.wait(), s.restart_delay)
            else:
                outcome = "stopped"
        finally:
            self.child = None
            self.sup._calls.pop(self.job.id, None)
            log.info("fleet: call %s ended: %s", self.job.id, outcome)
            await _callback(self.sup.on_end, self.job, outcome)

    def info(self) -> CallInfo:
        c = self.child
        return CallInfo(self.job, self.attempt, self.previous_end, c.pid if c else None,
                        c.rss_mb if c else 0.0, dict(c.stats) if c else {})


class Supervisor:
    """Runs each job in a child process of its own and keeps it alive; measures the load of the worker.

    ``target``: ``"package.module:function"``, the child's async entry point (see ``CallControl``).
    ``context``: plain values every child gets as ``CallControl.context`` (the worker's settings for its
    calls, e.g. where its models are).
    ``on_end(job, outcome)`` once per call (``done``, ``stopped``, ``failed``); ``on_failed(job, reason)``
    before it when the call was given up after ``max_restarts`` restarts. Either may be a coroutine.
    """

    def __init__(self, target: str, settings: FleetSettings | None = None, *,
                 on_end: EndCallback | None = None, on_failed: EndCallback | None = None,
                 tick: float = 0.5, load_window: int = 6, context: dict[str, Any] | None = None) -> None:
        if ":" not in target:
            raise ValueError(f"target must be 'package.module:function', got {target!r}")
        self.target = target
        self.settings = settings or FleetSettings.from_env()
        self.on_end = on_end
        self.on_failed = on_failed
        self.mp_context = multiprocessing.get_context("spawn")
        self.call_context = context  # given to every child as ``CallControl.context`` (picklable values)
        self.cores = len(os.sched_getaffinity(0))
        self._tick = tick
        self._calls: dict[str, _Call] = {}
        self._cpu = _TreeCpu(self.cores, load_window)
        self._machine = _MachineCpu(load_window)
        self._rss_mb = 0.0
        self._closing = False
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Supervisor:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start watching (heartbeats, memory, load); needs the running event loop."""
        if self._watch is None:
            self._check()
            self._watch = asyncio.create_task(self._watch_loop(), name="fleet-supervisor-watch")

    # admission and reporting

    def can_take(self) -> bool:
        """True while not closing, under ``max_calls``, under ``load_threshold`` of the cores, and no running
        call is behind its pace."""
        return (not self._closing and len(self._calls) < self.settings.max_calls
                and self.cpu_share < self.settings.load_threshold
                and (self.settings.overcommit or not self.calls_behind()))

    def calls_behind(self) -> list[str]:
        """Running calls whose target says, with its last heartbeat, that it cannot keep its pace (``"behind"``
        in its stats): a worker takes no new call before its running ones are served."""
        return [job_id for job_id, call in self._calls.items() if call.child and call.child.stats.get("behind")]

    @property
    def cpu_share(self) -> float:
        """The load admission compares with ``load_threshold``: the worker's own process tree, or with
        ``load_scope="machine"`` the busier of it and the whole machine."""
        if self.settings.load_scope == "machine":
            return max(self._cpu.share, self._machine.share)
        return self._cpu.share

    def load(self) -> dict[str, float | int]:
        """For the worker's heartbeat: CPU share of the cores used by the worker's whole process tree
        (0..1, averaged over the last few seconds), number of calls, RSS of the tree in MiB."""
        return {"cpu": round(self._cpu.share, 3), "machine_cpu": round(self._machine.share, 3),
                "calls": len(self._calls), "behind": len(self.calls_behind()), "rss_mb": round(self._rss_mb, 1)}

    def calls(self) -> dict[str, CallInfo]:
        return {job_id: call.info() for job_id, call in self._calls.items()}

    # calls

    def start_call(self, job: Job) -> None:
        """Start ``job`` in a new child process now. Admission is the caller's (``can_take``); this only
        refuses while closing, at ``max_calls`` (``SupervisorFull``) or for a job already running."""
        if self._closing or len(self._calls) >= self.settings.max_calls:
            raise SupervisorFull(f"{len(self._calls)} calls running, closing={self._closing}")
        if job.id in self._calls:
            raise ValueError(f"call {job.id} is already running")
        self.start()
        self._calls[job.id] = _Call(self, job)

    async def stop_call(self, job_id: str, timeout: float | None = None) -> None:
        """Ask the call's child to finish (``CallControl.wait_stop``), kill it after ``timeout`` s
        (default ``stop_timeout``), and return once the call has ended (``on_end`` called)."""
        call = self._calls.get(job_id)
        if call is None:
            return
        call.stopping.set()
        if call.child:
            call.child.send_stop()
        _, pending = await asyncio.wait({call.task}, timeout=self.settings.stop_timeout if timeout is None else timeout)
        if pending:
            if call.child:
                log.warning("fleet: call %s did not stop in time: killed", job_id)
                call.child.kill("stop timeout")
            await call.task

    async def drain(self, timeout: float | None = None) -> bool:
        """Refuse new calls and wait up to ``timeout`` s (None: forever) for the running ones to end by
        themselves. True when none is left."""
        self._closing = True
        tasks = {c.task for c in self._calls.values()}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return not self._calls

    async def close(self, timeout: float | None = None) -> None:
        """Stop every call (graceful, then killed after ``timeout``) and the watching."""
        self._closing = True
        await asyncio.gather(*(self.stop_call(job_id, timeout) for job_id in list(self._calls)))
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    # watching

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                self._check()
            except Exception:  # a parsing surprise in /proc must not stop the supervision
                log.exception("fleet: supervisor check failed")

    def _check(self) -> None:
        """Kill hung and oversized children; sample the tree's CPU and RSS."""
        now = time.monotonic()
        procs = _read_procs()
        tree = _tree(os.getpid(), procs)
        self._cpu.add({pid: procs[pid].cpu_ticks for pid in tree}, now)
        self._machine.sample()
        self._rss_mb = sum(procs[pid].rss_pages for pid in tree) * _PAGE / _MIB
        s = self.settings
        for call in list(self._calls.values()):
            child = call.child
            if child is None or child.exited.done():
                continue
            # /proc sees the child's whole tree, and a child whose loop is stuck; its heartbeat, only itself
            child.rss_mb = sum(procs[pid].rss_pages for pid in _tree(child.pid, procs)) * _PAGE / _MIB
            silent = now - child.last_beat
            if silent > s.call_timeout:
                child.kill(f"hang (no heartbeat for {silent:.1f} s)")
            elif child.rss_mb > s.call_memory_mb:
                child.kill(f"memory ({child.rss_mb:.0f} MiB > {s.call_memory_mb:.0f} MiB)")
