"""Helpers for the signaling tests: a running server on a free port (optionally with the real bot
worker and reports), Socket.IO clients that queue what they receive, and readers for real reports."""
from __future__ import annotations

import asyncio
import email
import email.policy
import subprocess
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp
import socketio
from aiohttp import web

from signaling import tokens
from signaling.server import create_app
from tests.conftest import free_port


class Running:
    def __init__(self, app: web.Application, runner: web.AppRunner, url: str, settings: Any, store: Any):
        self.app = app
        self.runner = runner
        self.url = url
        self.settings = settings
        self.store = store
        self.secret = settings.secret_key
        self.worker: Any = None  # bot.worker.BotWorker, with `running_with_bot`
        self.reports: Any = None  # bot.reporting.Reports, with `running_with_bot`

    def token(self, iid: str, role: str, ttl: float = 600, name: str | None = None) -> str:
        return tokens.issue(self.secret, iid, role, ttl, name=name)

    async def interview(self, name: str = "Cory Candidate") -> str:
        iv = await self.store.create_interview(
            candidate_name=name, interviewer_email="iris@example.com", policy=None)
        return str(iv["id"])


@asynccontextmanager
async def running(settings: Any, store: Any, *, bots: Any = None, reports: Any = None) -> AsyncIterator[Running]:
    settings.secret_key = "signaling-test-secret"
    settings.host = "127.0.0.1"
    settings.port = free_port()
    app = create_app(settings, store, bots=bots, reports=reports)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    try:
        yield Running(app, runner, settings.base_url, settings, store)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_with_bot(settings: Any, store: Any) -> AsyncIterator[Running]:
    """`running` with the real collaborators: `BotWorker` (models, a real bot client) and `Reports`
    mailing through `Mailer` (no SMTP host in the test settings: ``.eml`` files in ``settings.outbox``).
    Every bot still in a call leaves before the server stops."""
    from adapters.mail import Mailer
    from bot.reporting import Reports
    from bot.worker import BotWorker

    worker = BotWorker(settings)
    reports = Reports(store, Mailer(settings))
    async with running(settings, store, bots=worker, reports=reports) as srv:
        srv.worker, srv.reports = worker, reports
        try:
            yield srv
        finally:
            await worker.close()


def pdf_text(pdf: bytes) -> str:
    """The text of a PDF, as poppler's ``pdftotext`` reads it."""
    out = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, timeout=30, check=True)
    return out.stdout.decode("utf-8", "replace")


def outbox_mails(settings: Any) -> list[email.message.EmailMessage]:
    """The ``.eml`` files the real `Mailer` wrote into ``settings.outbox``, oldest first."""
    paths = sorted(settings.outbox.glob("*.eml")) if settings.outbox.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]  # type: ignore[misc]


class Peer:
    """A real python-socketio client that queues every event it receives."""

    EVENTS = ("participants", "signal", "alert", "page_event", "chat", "error")

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.queues: dict[str, asyncio.Queue] = {name: asyncio.Queue() for name in self.EVENTS}
        self.disconnected = asyncio.Event()
        for name in self.EVENTS:
            self.sio.on(name, self._collector(name))
        self.sio.on("disconnect", self._on_disconnect)
        self.refusals: list[Any] = []
        self.sio.on("connect_error", self._on_refused)

    def _collector(self, name: str):
        async def collect(data: Any = None) -> None:
            self.queues[name].put_nowait(data)
        return collect

    async def _on_refused(self, data: Any = None) -> None:
        self.refusals.append(data)

    @property
    def refusal(self) -> str:
        """The server's reason for refusing the last connection attempt."""
        last = self.refusals[-1] if self.refusals else None
        return str(last.get("message") if isinstance(last, dict) else last)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()

    @property
    def sid(self) -> str:
        return self.sio.get_sid()

    async def connect(self, url: str, token: str | None, **kw: Any) -> "Peer":
        auth = {"token": token} if token is not None else None
        await self.sio.connect(url, auth=auth, transports=kw.pop("transports", ["websocket"]),
                               wait_timeout=5, **kw)
        return self

    async def next(self, event: str, timeout: float = 3.0) -> Any:
        return await asyncio.wait_for(self.queues[event].get(), timeout)

    async def until(self, event: str, pred, timeout: float = 3.0) -> Any:
        """The first ``event`` payload for which ``pred`` holds (earlier ones are dropped)."""
        async def wait() -> Any:
            while True:
                data = await self.queues[event].get()
                if pred(data):
                    return data
        return await asyncio.wait_for(wait(), timeout)

    async def nothing(self, event: str, within: float = 0.5) -> bool:
        """True if no ``event`` arrives within ``within`` seconds."""
        try:
            await asyncio.wait_for(self.queues[event].get(), within)
        except asyncio.TimeoutError:
            return True
        return False

    def drain(self, event: str) -> list[Any]:
        out = []
        while not self.queues[event].empty():
            out.append(self.queues[event].get_nowait())
        return out

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


@asynccontextmanager
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    try:
        yield made
    finally:
        await asyncio.gather(*(p.close() for p in made), return_exceptions=True)


async def http(method: str, url: str, **kw: Any) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, **kw) as r:
            body = await r.read()
            ctype = r.headers.get("Content-Type", "")
            data: Any = body
            if ctype.startswith("application/json"):
                import json
                data = json.loads(body)
            elif ctype.startswith("text/"):
                data = body.decode()
            return r.status, data, r.headers
