"""The wiring of a call's child process, and of the worker that starts those processes.

``bot.app`` wires the server; this module wires the other program of the fleet, the worker, whose
supervisor runs each call in a child process (``bot.fleet.supervisor``). The child's entry point is
``run_call``, named to the supervisor as ``CALL_TARGET``; it imports only the live bot and the analysis
(no server, no reports, no database driver), so a call's process stays small.

A call's process:
1. builds a ``CallSession`` for the job's interview with the worker's models (``CallControl.context``);
2. joins the call as the bot (a restarted or taken-over call says so: ``previous_end``, so the server
   closes the events the previous bot left open and records the gap);
3. reports its counters with every heartbeat; ends when the supervisor asks (the interview ended,
   or the worker drains), or raises when its analysis loop died, so the supervisor restarts it.

``work`` is ``proctor worker``: a worker on Redis whose process imports no server, reports or database
driver (an idle worker stays small). ``notify_failed`` is the worker's ``on_failed``: after the last
restart it tells the server (with the job's bot token) that the bot gave up, and the server tells the
interviewer.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bot.analysis.detectors import ModelPaths
from bot.common import trim_heap
from bot.fleet import FleetSettings, Job
from bot.fleet.supervisor import CallControl

if TYPE_CHECKING:  # the worker's side only: a call's process never loads Redis' client (~8 MiB RSS)
    from bot.fleet.jobs import JobSource
    from bot.fleet.worker import Worker
    from bot.settings import Settings

log = logging.getLogger("proctor.call")

CALL_TARGET = "bot.callproc:run_call"
STATS_EVERY = 1.0  # s between refreshes of the stats a heartbeat carries
# s between two trims of the heap. The frames, audio and model inputs a call allocates and frees on its threads
# stay with glibc's per-thread arenas; a trim every few seconds keeps a call's process ~16 MiB smaller at
# no measurable CPU (benchmarks/bench_calls.py).
TRIM_EVERY = 5.0
# Optional backends that python-socketio's package imports when they are installed (its message-queue managers
# for servers: Redis, Valkey, Kafka, AMQP, ZeroMQ). A call's process is a Socket.IO client and uses none of
# them; kept out of it (each import of them is guarded by socketio), Redis' client alone is ~6 MiB RSS.
UNUSED_IN_CALL = ("redis", "aioredis", "valkey", "kafka", "aio_pika", "zmq")


def keep_out_unused() -> None:
    """Make ``UNUSED_IN_CALL`` unimportable in this process (a module already loaded stays)."""
    for name in UNUSED_IN_CALL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import name" raises ImportError


def call_context(models: ModelPaths) -> dict[str, Any]:
    """What the worker gives every call's process."""
    return {"models": models}


def make_worker(source: JobSource, models: ModelPaths, fleet: FleetSettings | None = None, *,
                drain_timeout: float | None = None) -> Worker:
    """A worker whose calls each run in a child process (``run_call``) with these models: ``proctor worker``'s,
    and ``proctor serve``'s local one."""
    from bot.fleet.worker import Worker

    return Worker(source, CALL_TARGET, fleet or FleetSettings.from_env(), on_failed=notify_failed,
                  drain_timeout=drain_timeout, context=call_context(models))


async def run_call(job: Job, control: CallControl) -> None:
    """A call's process: run the bot for ``job`` until the supervisor stops it."""
    if multiprocessing.parent_process() is not None:  # a call's own process (never the worker's or a test's)
        keep_out_unused()
    from adapters.conferencing import open_media  # a call held on Janus or WHEP (the interview's room)
    from bot.live.call import CallSession  # heavy (aiortc, the detectors): loaded in the child only

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = control.context.get("models")
    if not isinstance(models, ModelPaths):
        raise RuntimeError("the worker gave no models to the call's process")
    data = job.data
    import cv2

    cv2.setNumThreads(1)  # one call per process: the calls fill the cores; more threads per call only contend
    session = CallSession(data["interview"], data["bot_token"], data["server_url"], models,
                          resumed=control.previous_end, threads=1, open_media=open_media,
                          arena=False)  # onnxruntime's arenas off: the heap is trimmed every TRIM_EVERY s instead
    log.info("call %s: attempt %d (previous end: %s), call clock from %s", job.id, control.attempt,
             control.previous_end, data["interview"].get("started_at"))
    if control.stop_requested:  # stopped while this process was starting: nothing to leave
        return
    try:
        await session.start()
    except Exception as e:
        if control.stop_requested:
            log.info("call %s: stopped while joining (%s)", job.id, e)
            return
        if "has ended" in str(e):  # the server refuses the bot: the interview is over
            log.info("call %s: the interview has ended; nothing to do", job.id)
            return
        raise
    trim_heap()  # what loading the models freed goes back to the system (~45 MiB RSS; a few ms)
    try:
        trimmed = time.monotonic()
        while not await control.wait_stop(STATS_EVERY):
            control.stats.update(session.figures())
            if time.monotonic() - trimmed >= TRIM_EVERY:
                trimmed = time.monotonic()
                trim_heap()
            if not session.running:
                raise RuntimeError(f"the analysis loop of call {job.id} ended by itself")
    finally:
        await session.stop()


async def notify_failed(job: Job, reason: str) -> None:
    """The worker's ``on_failed``: the call was given up after its restarts; tell the server."""
    data = job.data
    url = f"{str(data.get('server_url', '')).rstrip('/')}/api/interviews/{job.id}/bot/failed"
    headers = {"Authorization": f"Bearer {data.get('bot_token', '')}"}
    for attempt in range(3):
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                    http.post(url, json={"reason": reason[:500]}, headers=headers) as resp:
                if resp.status < 500:
                    log.warning("call %s given up (%s); server told: HTTP %d", job.id, reason, resp.status)
                    return
        except (TimeoutError, aiohttp.ClientError) as e:
            log.warning("call %s given up (%s); cannot tell the server yet: %s", job.id, reason, e)
        await asyncio.sleep(1.0 + attempt)
    log.error("call %s given up (%s); the server could not be told", job.id, reason)


def work(settings: Settings, *, drain_timeout: float | None = None, worker_id: str | None = None) -> None:
    """`proctor worker`: take calls from Redis and run each in a child process until SIGTERM (drain)."""
    if not settings.redis_url:
        raise ValueError("proctor worker needs REDIS_URL (the fleet's dispatch); "
                         "on one machine `proctor serve` runs a worker itself")
    from adapters.models import model_paths
    from bot.fleet.jobs import RedisJobSource
    from bot.fleet.worker import serve_worker

    models = model_paths(settings)
    fleet = FleetSettings.from_env()

    async def main() -> None:
        assert settings.redis_url
        source = RedisJobSource(settings.redis_url, worker_id=worker_id, worker_timeout=fleet.worker_timeout)
        log.info("worker %s: up to %d calls below %.0f%% CPU, on %s", source.worker_id, fleet.max_calls,
                 fleet.load_threshold * 100, _redacted(settings.redis_url))
        await serve_worker(make_worker(source, models, fleet, drain_timeout=drain_timeout))

    asyncio.run(main())


def _redacted(url: str) -> str:
    """The URL without its password, for the log."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:****@{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url
