"""The one module that wires the app: store, mailer, reports, the bots and the server.

`proctor serve`, the tests and the benchmarks all build the app here, so they run the same thing:

    async with running(settings) as app:      # serves on settings.host:settings.port
        ... app.url, app.store, app.bots, app.reports ...

Everything else depends only on `bot.ports`; this is the only module that names the concrete adapters.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from adapters.mail import Mailer
from adapters.models import model_paths
from adapters.outbox import MongoOutbox
from adapters.store import Store as MongoStore
from adapters.webhooks import WebhookSender
from bot.analysis.detectors import ModelPaths
from bot.live.registry import CallRegistry
from bot.ports import Store
from bot.report.service import Reports
from bot.settings import Settings
from signaling.server import create_app

log = logging.getLogger(__name__)


@dataclass
class App:
    """A running server and its parts."""

    settings: Settings
    store: Store
    reports: Reports | None
    bots: CallRegistry | None
    webhooks: WebhookSender | None
    application: web.Application
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return self.settings.base_url


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
async def running(settings: Settings, *, store: Store | None = None, bots: bool = True,
                  reports: bool = True) -> AsyncIterator[App]:
    """Build the app and serve it on ``settings.host:settings.port`` for the duration of the block.

    `store`: use this one (its owner closes it); else open the configured database (or the embedded server)
    and close it at the end. `bots`: run the bot in this process (needs the models). `reports`: build and mail
    reports. With `settings.webhook_url`, a `WebhookSender` posts webhooks from the outbox. On exit the bots
    leave their calls (closing and sending their open events), the sockets close, the
    pending event writes finish, then the store closes.
    """
    async with AsyncExitStack() as stack:
        if store is None:
            opened = await MongoStore.open(settings)
            stack.push_async_callback(opened.close)
            store = opened
        registry = CallRegistry(check_models(settings), max_calls=settings.max_bots) if bots else None
        report_service = Reports(store, Mailer(settings)) if reports else None
        webhooks = webhook_sender(settings, store)
        if webhooks is not None:
            webhooks.start()  # delivers what an earlier run left in the outbox too
            stack.push_async_callback(webhooks.close)  # after the server has stopped, before the store closes
        app = create_app(settings, store, bots=registry, reports=report_service, webhooks=webhooks)
        if registry is not None:
            async def bots_leave(_: web.Application) -> None:
                await registry.close()

            app.on_shutdown.insert(0, bots_leave)  # before the server closes the sockets
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("serving on http://%s:%s (public %s)", settings.host, settings.port, settings.base_url)
        yield App(settings, store, report_service, registry, webhooks, app, runner)


def serve(settings: Settings) -> None:
    """`proctor serve`: run until SIGINT or SIGTERM, then shut down gracefully."""
    check_models(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running(settings):
            await stop.wait()
            log.info("shutting down")

    asyncio.run(main())
