"""The one module that wires the app: store, mailer, reports, the bots and the server.

`proctor serve`, the tests and the benchmarks all build the app here, so they run the same thing:

    async with running(settings) as app:      # serves on settings.host:settings.port
        ... app.url, app.store, app.bots, app.reports ...

and the `proctor keys` commands (`create_key`, `list_keys`, `revoke_key`) open the same store.

Everything else depends only on `bot.ports`; this is the only module that names the concrete adapters.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from adapters.conferencing import open_media
from adapters.mail import Mailer
from adapters.models import model_paths
from adapters.outbox import MongoOutbox
from adapters.store import Store as MongoStore
from adapters.webhooks import WebhookSender
from bot.analysis.detectors import ModelPaths
from bot.callproc import make_worker
from bot.fleet import FleetSettings
from bot.fleet.bots import FleetBots
from bot.fleet.jobs import Dispatch, JobSource, RedisDispatch, RedisJobSource
from bot.fleet.worker import LocalJobs, Worker
from bot.live.registry import CallRegistry
from bot.ports import Bots, KeyExists, Store
from bot.report.service import Reports
from bot.settings import Settings
from signaling import operators
from signaling.server import check_pages, create_app

log = logging.getLogger(__name__)

FIRST_KEY_NAME = "first"


@dataclass
class App:
    """A running server and its parts."""

    settings: Settings
    store: Store
    reports: Reports | None
    bots: Bots | None  # FleetBots (calls in worker processes) or CallRegistry (in this process)
    webhooks: WebhookSender | None
    application: web.Application
    runner: web.AppRunner
    worker: Worker | None = None  # the local worker, when this process runs one
    first_key: str | None = None  # the operator key made at this start (`running(first_key=True)`)

    @property
    def url(self) -> str:
        return self.settings.base_url

    @property
    def start_link(self) -> str | None:
        """The start page's link with the first key in its fragment (the page keeps it, the server never sees
        it in a URL), or None."""
        return f"{self.url}/#key={self.first_key}" if self.first_key else None


def webhook_sender(settings: Settings, store: Store) -> WebhookSender | None:
    """The webhook sender on the store's database (`PROCTOR_WEBHOOK_URL`), or None when none is set."""
    if not settings.webhook_url:
        return None
    if not isinstance(store, MongoStore):
        raise TypeError("webhooks need the MongoDB store (their outbox is a collection in it)")
    if not settings.webhook_secret:
        raise ValueError("PROCTOR_WEBHOOK_URL needs PROCTOR_WEBHOOK_SECRET")
    return WebhookSender(MongoOutbox(store.db), settings.webhook_url, settings.webhook_secret,
                         max_age=settings.webhook_max_age, retry_min=settings.webhook_retry_min,
                         retry_max=settings.webhook_retry_max)


def check_models(settings: Settings) -> ModelPaths:
    """Every model, resolved and verified: fails at start, in one line (`ModelError`), rather than when the
    first bot is invited."""
    return model_paths(settings)


@asynccontextmanager
async def running(settings: Settings, *, store: Store | None = None, bots: str | None = "fleet",
                  worker: bool = True, reports: bool = True,
                  fleet: FleetSettings | None = None, first_key: bool = False) -> AsyncIterator[App]:
    """Build the app and serve it on ``settings.host:settings.port`` for the duration of the block.

    `store`: use this one (its owner closes it); else open the configured database (or the embedded server)
    and close it at the end. `bots`: ``"fleet"`` dispatches each call as a job (on Redis with
    ``settings.redis_url``, else in this process) to a worker that runs it in a child process of its own;
    `worker` runs such a worker here too (``proctor serve``; without it, ``--no-worker``).
    ``"inprocess"`` runs every call in this process (tests, debugging); None: no bot. `reports`: build and
    mail reports. With `settings.webhook_url`, a `WebhookSender` posts webhooks from the outbox. `first_key`:
    with no operator key at all (none stored, no ``PROCTOR_API_KEY``), make one once the server listens
    (`App.first_key`, named "first"), as `proctor serve` does. On exit the bots leave their calls (closing and
    sending their open events), the sockets close, the pending event writes finish, then the store closes.
    """
    if bots not in ("fleet", "inprocess", None):
        raise ValueError(f"bots must be 'fleet', 'inprocess' or None, got {bots!r}")
    check_pages()  # a page that cannot load its script fails here, in one line (`PagesMissing`)
    async with AsyncExitStack() as stack:
        if store is None:
            opened = await MongoStore.open(settings)
            stack.push_async_callback(opened.close)
            store = opened
        models = check_models(settings) if bots == "inprocess" or (bots == "fleet" and worker) else None
        bot_port: Bots | None = None
        local: Worker | None = None
        if bots == "inprocess":
            assert models is not None
            bot_port = CallRegistry(models, max_calls=settings.max_bots, open_media=open_media)
        elif bots == "fleet":
            bot_port, local = await _fleet(settings, stack, models, fleet)
        report_service = Reports(store, Mailer(settings)) if reports else None
        webhooks = webhook_sender(settings, store)
        if webhooks is not None:
            webhooks.start()  # delivers what an earlier run left in the outbox too
            stack.push_async_callback(webhooks.close)  # after the server has stopped, before the store closes
        app = create_app(settings, store, bots=bot_port, reports=report_service, webhooks=webhooks)
        if bot_port is not None or local is not None:
            async def bots_leave(_: web.Application) -> None:
                if local is not None:
                    await _stop_worker(local)
                if bot_port is not None:
                    await bot_port.close()

            app.on_shutdown.insert(0, bots_leave)  # before the server closes the sockets
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("serving on http://%s:%s (public %s)", settings.host, settings.port, settings.base_url)
        made_key = None  # made only now: a start that failed earlier must not leave a key nobody saw
        if first_key and not settings.api_key and not await store.has_operator_keys():
            try:
                made_key = await operators.create_key(store, FIRST_KEY_NAME)
                log.info("no operator key yet: made one named %r", FIRST_KEY_NAME)
            except KeyExists:  # another node on the same database made it meanwhile: its log shows the link
                log.info("the first operator key was made by another server on this database")
        yield App(settings, store, report_service, bot_port, webhooks, app, runner, worker=local,
                  first_key=made_key)


async def _fleet(settings: Settings, stack: AsyncExitStack, models: ModelPaths | None,
                 fleet: FleetSettings | None) -> tuple[Bots, Worker | None]:
    """The fleet's dispatch for this server, and the local worker when ``models`` are given."""
    fleet = fleet or FleetSettings.from_env()
    source: JobSource | None = None  # the local worker's
    if settings.redis_url:
        redis_dispatch = RedisDispatch(settings.redis_url)
        stack.push_async_callback(redis_dispatch.close)
        dispatch: Dispatch = redis_dispatch
        if models is not None:
            source = RedisJobSource(settings.redis_url, worker_timeout=fleet.worker_timeout)
    else:
        local_jobs = LocalJobs()
        dispatch, source = local_jobs, local_jobs
        if models is None:
            log.warning("no local worker and no REDIS_URL: no bot can join a call; invitations answer 503")
    worker = None
    if models is not None and source is not None:
        worker = make_worker(source, models, fleet)
        worker.start()
        log.info("local worker %s: up to %d calls, each in its own process", source.worker_id, fleet.max_calls)
    return FleetBots(dispatch, claim_timeout=settings.claim_timeout), worker


async def _stop_worker(worker: Worker) -> None:
    """Stop the local worker's calls now (each leaves its call, closing its events) and wait for it."""
    worker.stop()
    try:
        await asyncio.wait_for(worker.start(), worker.settings.stop_timeout + 5)
    except Exception:
        log.exception("the local worker did not stop cleanly")
    await worker.source.close()


def serve(settings: Settings, *, worker: bool = True) -> None:
    """`proctor serve`: run until SIGINT or SIGTERM, then shut down gracefully."""
    check_pages()
    if worker:
        check_models(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running(settings, worker=worker, first_key=True) as app:
            if app.start_link:
                print(f"\nNo operator key was set up, so one was made (shown only now; `proctor keys` manages "
                      f"keys). Open the start page with it:\n\n    {app.start_link}\n", file=sys.stdout, flush=True)
            await stop.wait()
            log.info("shutting down")

    asyncio.run(main())


# --- `proctor keys` ------------------------------------------------------------------------------

async def create_key(settings: Settings, name: str) -> str:
    """A new operator key named `name` (its hash stored); `ValueError` for a bad name, `KeyExists`."""
    async with await MongoStore.open(settings) as store:
        return await operators.create_key(store, name)


async def list_keys(settings: Settings) -> list[dict]:
    async with await MongoStore.open(settings) as store:
        return await store.list_operator_keys()


async def revoke_key(settings: Settings, name: str) -> bool:
    async with await MongoStore.open(settings) as store:
        return await store.revoke_operator_key(name)
