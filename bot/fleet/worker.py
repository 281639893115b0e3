"""A worker: takes jobs from a ``JobSource`` while it has room, runs each in the ``Supervisor``.

``Worker.run`` loops: heartbeat (every ``heartbeat_interval``: load, calls; stops the calls the server
asked to end or another worker took over) -> if it has room: ``takeover`` a dead worker's job, else
``claim`` a new one (at most one new call per heartbeat, so the measured load sees each call before the
next is admitted) -> wait for the next heartbeat. A call's end is acknowledged (or, when the worker
handed it off, released to another worker). While the source is unavailable (Redis restarting) the loop
backs off and retries; the calls go on. After Redis comes back, takeovers wait one ``worker_timeout`` so
the live workers refresh their own jobs first.

Drain (first SIGTERM/SIGINT in ``run_worker``): no new job; the running calls finish by themselves; after
``drain_timeout`` (None: no limit) or a second signal they are stopped and released to other workers.

``LocalJobs`` is the job source (and the server's ``Dispatch``) of ``proctor serve`` without Redis: one
process, an asyncio queue, the same worker loop and supervisor.

``python -m bot.fleet.worker --redis URL --target package.module:function`` runs a worker on Redis.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.fleet import FleetSettings, Job
from bot.fleet.jobs import Beat, JobSource, RedisJobSource, SourceUnavailable
from bot.fleet.supervisor import EndCallback, Supervisor, SupervisorFull

log = logging.getLogger("proctor.fleet")


class DispatchFull(Exception):
    """``LocalJobs.submit`` while ``max_queued`` jobs already wait."""


@dataclass
class _LocalJob:
    job: Job
    state: str  # queued, claimed
    deadline: float  # monotonic: a queued job not claimed by then is never started
    claimed: asyncio.Event
    end: bool = False


class LocalJobs:
    """``Dispatch`` and ``JobSource`` in one process: a bounded asyncio queue, one local worker.

    No takeover (there is no other worker); ``release`` forgets the job (the process is shutting down).
    """

    worker_id = "local"

    def __init__(self, max_queued: int = 16) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(max_queued)
        self._jobs: dict[str, _LocalJob] = {}  # queued or claimed, removed on cancel, ack, release
        self.last_load: Mapping[str, Any] = {}

    # server side (Dispatch)

    async def submit(self, job: Job, *, claim_timeout: float = 5.0) -> str:
        if job.id in self._jobs:
            return job.id
        try:
            self._queue.put_nowait(job.id)
        except asyncio.QueueFull:
            raise DispatchFull(f"{self._queue.maxsize} jobs are waiting already") from None
        self._jobs[job.id] = _LocalJob(job, "queued", time.monotonic() + claim_timeout, asyncio.Event())
        return job.id

    async def wait_claimed(self, job_id: str, timeout: float) -> str | None:
        held = self._jobs.get(job_id)
        if held is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(held.claimed.wait(), timeout)
        if held.state == "claimed":
            return self.worker_id
        self._jobs.pop(job_id, None)  # cancelled: its id left in the queue is skipped by claim
        return None

    async def request_end(self, job_id: str) -> str:
        held = self._jobs.get(job_id)
        if held is None:
            return "none"
        if held.state == "queued":
            del self._jobs[job_id]
            return "cancelled"
        held.end = True
        return "requested"

    async def worker_of(self, job_id: str) -> str | None:
        held = self._jobs.get(job_id)
        return self.worker_id if held and held.state == "claimed" else None

    # worker side (JobSource)

    async def claim(self, wait: float) -> Job | None:
        deadline = time.monotonic() + wait
        while True:
            try:
                job_id = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
            held = self._jobs.get(job_id)
            if held is None or held.state != "queued":
                continue  # cancelled, or a duplicate id of a job claimed already
            if time.monotonic() > held.deadline:
                del self._jobs[job_id]
                continue
            held.state = "claimed"
            held.claimed.set()
            return held.job

    async def takeover(self) -> Job | None:
        return None

    async def heartbeat(self, load: Mapping[str, Any]) -> Beat:
        self.last_load = dict(load)
        return Beat(end=frozenset(i for i, h in self._jobs.items() if h.state == "claimed" and h.end))

    async def ack(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def release(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def close(self) -> None:
        return None


class _Backoff:
    """Exponential delays with jitter, for retrying an unavailable source."""

    def __init__(self, first: float = 0.2, cap: float = 5.0) -> None:
        self.first, self.cap, self._next = first, cap, first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._next = self.first


class Worker:
    """Joins a ``JobSource`` to a ``Supervisor``. Create and ``run`` it on the event loop that lives as
    long as the process (see ``Supervisor``); ``drain`` and ``stop`` may be called from that loop."""

    def __init__(self, source: JobSource, target: str, settings: FleetSettings | None = None, *,
                 on_failed: EndCallback | None = None, drain_timeout: float | None = None,
                 context: dict[str, Any] | None = None) -> None:
        self.source = source
        self.settings = settings or FleetSettings.from_env()
        self.supervisor = Supervisor(target, self.settings, on_end=self._on_end, on_failed=on_failed,
                                     context=context)
        self.drain_timeout = drain_timeout
        self._draining = asyncio.Event()
        self._handoff = False  # calls stopped by the worker's own end: released, not acked
        self._wake = asyncio.Event()
        self._lost: set[str] = set()  # taken over by another worker: neither acked nor released
        self._ended: dict[str, str] = {}  # job id -> "ack" | "release": at most the calls that ran
        self._stops: dict[str, asyncio.Task[None]] = {}  # job id -> its stop under way (one per call)
        self._takeover_after = 0.0  # monotonic; after an outage, live workers first refresh their jobs
        self.task: asyncio.Task[None] | None = None  # set by ``start``

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a task beside other work (``proctor serve``'s local worker); ``stop`` it, then
        await ``task``."""
        if self.task is None:
            self.task = asyncio.create_task(self.run(), name=f"worker-{self.source.worker_id}")
        return self.task

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def drain(self) -> None:
        """Take no new job; the running calls finish by themselves (until ``drain_timeout``)."""
        if not self._draining.is_set():
            log.info("fleet: worker %s draining (%d calls)", self.source.worker_id, len(self.supervisor.calls()))
            self._draining.set()
            self._wake.set()

    def stop(self) -> None:
        """Drain, and stop the running calls now: they are released to other workers."""
        self.drain()
        if not self._handoff:
            self._handoff = True
            for job_id in self.supervisor.calls():
                self._stop_call(job_id)

    def _on_end(self, job: Job, outcome: str) -> None:
        if job.id in self._lost:
            self._lost.discard(job.id)
            return
        self._ended[job.id] = "release" if self._handoff and outcome == "stopped" else "ack"
        self._wake.set()

    def _stop_call(self, job_id: str) -> None:
        if job_id not in self._stops:  # an end is reported by every heartbeat until the ack
            self._stops[job_id] = task = asyncio.create_task(self.supervisor.stop_call(job_id))
            task.add_done_callback(lambda _: self._stops.pop(job_id, None))

    def _apply(self, beat: Beat) -> None:
        for job_id in beat.lost:
            log.warning("fleet: call %s was taken over by another worker: stopping it here", job_id)
            self._lost.add(job_id)
        for job_id in beat.end | beat.lost:
            if job_id in self.supervisor.calls():
                self._stop_call(job_id)

    async def _flush_ended(self) -> None:
        for job_id, how in list(self._ended.items()):
            await (self.source.release(job_id) if how == "release" else self.source.ack(job_id))
            del self._ended[job_id]

    async def _admit(self, wait: float) -> None:
        """Start at most one job: a takeover first, else a new claim (waiting up to ``wait`` s)."""
        job = await self.source.takeover() if time.monotonic() >= self._takeover_after else None
        job = job or await self.source.claim(wait)
        if job is None:
            return
        if self._draining.is_set():  # the claim was under way when the drain began
            await self.source.release(job.id)
            return
        try:
            self.supervisor.start_call(job)
        except (SupervisorFull, ValueError) as e:
            log.warning("fleet: cannot start call %s (%s): released", job.id, e)
            await self.source.release(job.id)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        self._wake.clear()

    async def run(self) -> None:
        """The worker's loop, until drained (no call left, every end acknowledged)."""
        interval = self.settings.heartbeat_interval
        backoff = _Backoff()
        outage = False
        next_beat = 0.0
        drain_deadline: float | None = None
        self.supervisor.start()
        try:
            while True:
                if self._draining.is_set():
                    if not self.supervisor.calls() and not self._ended and not self._stops:
                        break
                    if drain_deadline is None and self.drain_timeout is not None:
                        drain_deadline = time.monotonic() + self.drain_timeout
                    if drain_deadline is not None and time.monotonic() >= drain_deadline:
                        self.stop()
                try:
                    await self._flush_ended()
                    if time.monotonic() >= next_beat:
                        calls = {job_id: {"attempt": c.attempt, "pid": c.pid, "rss_mb": round(c.rss_mb, 1), **c.stats}
                                 for job_id, c in self.supervisor.calls().items()}
                        load = {**self.supervisor.load(), "draining": self._draining.is_set(), "per_call": calls}
                        self._apply(await self.source.heartbeat(load))
                        next_beat = time.monotonic() + interval
                    if outage:
                        log.warning("fleet: job source back; dispatch resumes")
                        outage = False
                        backoff.reset()
                        self._takeover_after = time.monotonic() + self.settings.worker_timeout
                    if not self._draining.is_set() and self.supervisor.can_take():
                        await self._admit(wait=next_beat - time.monotonic())
                    await self._sleep(next_beat - time.monotonic())
                except SourceUnavailable as e:
                    if not outage:
                        log.warning("fleet: job source unavailable (%s); the calls go on, retrying", e)
                        outage = True
                    await self._sleep(backoff.next())
                except Exception:  # a surprise in one round must not end the calls this worker runs
                    log.exception("fleet: worker loop error; the calls go on, retrying")
                    await self._sleep(backoff.next())
        finally:
            await self.supervisor.close()


async def run_worker(source: JobSource, target: str, settings: FleetSettings | None = None, *,
                     on_failed: EndCallback | None = None, drain_timeout: float | None = None,
                     context: dict[str, Any] | None = None) -> None:
    """The asyncio main of ``proctor worker``: a ``Worker`` with signal handling. The first SIGTERM or
    SIGINT drains, a second one hands the running calls off to other workers; returns when done."""
    await serve_worker(Worker(source, target, settings, on_failed=on_failed, drain_timeout=drain_timeout,
                              context=context))


async def serve_worker(worker: Worker) -> None:
    """Run ``worker`` until it is drained, with signal handling (see ``run_worker``); closes its source."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal() -> None:
        if worker.draining:
            worker.stop()
        else:
            worker.drain()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        await worker.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await worker.source.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m bot.fleet.worker``: a worker on Redis, settings from the environment."""
    parser = argparse.ArgumentParser(prog="python -m bot.fleet.worker")
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    parser.add_argument("--target", required=True, help="package.module:function run in each call's child")
    parser.add_argument("--worker-id")
    parser.add_argument("--drain-timeout", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = FleetSettings.from_env()
    source = RedisJobSource(args.redis, worker_id=args.worker_id, worker_timeout=settings.worker_timeout)
    asyncio.run(run_worker(source, args.target, settings, drain_timeout=args.drain_timeout))


if __name__ == "__main__":
    main()
