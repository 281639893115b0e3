"""Clients for the tests and benchmarks: the real app on a free port (`served`), Socket.IO clients that queue
what they receive (`Peer`) or note when alerts arrive (`Listener`), HTTP, and readers for real reports."""
from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import socketio

from bot.app import App, running
from bot.fleet import FleetSettings
from bot.ports import Store
from bot.settings import Settings
from signaling import tokens
from tests.support.servers import free_port

TEST_API_KEY = "test-operator-key-0123456789"


class Served:
    """The running app (`bot.app.App`) with helpers to make interviews and tokens; `operator` is the header
    with the operator API key (``PROCTOR_API_KEY`` of the settings) that `POST /api/interviews` needs."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.url = app.url
        self.secret = app.settings.secret_key
        self.api_key = app.settings.api_key or ""
        self.operator = {"Authorization": f"Bearer {self.api_key}"}
        self.bots: Any = app.bots  # CallRegistry with bots=True (sessions to inspect), FleetBots with "fleet"
        self.worker = app.worker
        self.reports = app.reports

    def token(self, iid: str, role: str, ttl: float = 600, name: str | None = None) -> str:
        return tokens.issue(self.secret, iid, role, ttl, name=name)

    async def interview(self, name: str = "Cory Candidate") -> str:
        iv = await self.store.create_interview(
            candidate_name=name, interviewer_email="iris@example.com", policy=None)
        return str(iv["id"])


@asynccontextmanager
async def served(settings: Settings, store: Store | None = None, *, bots: bool | str = False,
                 reports: bool = False, worker: bool = True, fleet: FleetSettings | None = None,
                 ) -> AsyncIterator[Served]:
    """`bot.app.running` on 127.0.0.1 and a free port, with a fixed token secret. `bots`: True runs the real
    bot in this process (``"inprocess"``: its sessions can be inspected), ``"fleet"`` dispatches each call to
    a worker that runs it in a child process (`worker`: a local one in this process; `fleet`: its limits).
    With `reports`, reports mail through the real `Mailer` (``.eml`` files in ``settings.outbox`` unless the
    settings name an SMTP host). The operator key is ``settings.api_key``, by default `TEST_API_KEY`."""
    settings.secret_key = settings.secret_key or "test-secret"
    settings.api_key = settings.api_key or TEST_API_KEY
    settings.host = "127.0.0.1"
    settings.port = free_port()
    mode = "inprocess" if bots is True else (bots or None)
    async with running(settings, store=store, bots=mode, worker=worker, reports=reports, fleet=fleet) as app:
        yield Served(app)


def pdf_text(pdf: bytes, *args: str) -> str:
    """The text of a PDF, as poppler's ``pdftotext`` reads it (`args`: its options, e.g. ``-layout``)."""
    out = subprocess.run(["pdftotext", *args, "-", "-"], input=pdf, capture_output=True, timeout=30, check=True)
    return out.stdout.decode("utf-8", "replace")


def outbox_mails(settings: Any) -> list[email.message.EmailMessage]:
    """The ``.eml`` files the real `Mailer` wrote into ``settings.outbox``, oldest first."""
    paths = sorted(settings.outbox.glob("*.eml")) if settings.outbox.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]  # type: ignore[misc]


class Peer:
    """A real python-socketio client that queues every event it receives."""

    EVENTS = ("participants", "signal", "alert", "page_event", "chat", "error", "bot_status")

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

    async def connect(self, url: str, token: str | None, *, auth_extra: dict[str, str] | None = None,
                      **kw: Any) -> Peer:
        auth = {"token": token, **(auth_extra or {})} if token is not None else None
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
        except TimeoutError:
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
                data = json.loads(body)
            elif ctype.startswith("text/"):
                data = body.decode()
            return r.status, data, r.headers


class Listener:
    """A Socket.IO client that notes when each alert arrives (wall clock)."""

    def __init__(self) -> None:
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("alert", self._on_alert)

    async def _on_alert(self, data: dict[str, Any]) -> None:
        self.alerts.append((time.time(), data))

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(url, auth={"token": token}, wait_timeout=10)

    def opened(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, a) for t, a in self.alerts if a["change"] == "opened" and a["event"]["type"] == kind]

    def closed(self, kind: str) -> list[dict[str, Any]]:
        return [a["event"] for _, a in self.alerts if a["change"] == "closed" and a["event"]["type"] == kind]
