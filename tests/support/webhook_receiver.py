"""A real webhook receiver for the tests: an aiohttp app on a free port that checks each delivery's signature
the way README's "Webhooks" tells a receiver to (its own code, not the sender's), records what arrives and
answers with scripted statuses. `stop()` and `start()` again serve on the same port."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.servers import free_port


def signature_ok(secret: str, headers: Any, body: bytes, tolerance: float = 300) -> bool:
    """README's receiver check: HMAC-SHA256 over ``timestamp + "." + body``, a fresh timestamp."""
    timestamp = headers.get("X-Proctor-Timestamp", "")
    signature = headers.get("X-Proctor-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class Arrival:
    delivery: str  # X-Proctor-Delivery
    event: str  # X-Proctor-Event
    body: dict[str, Any]
    headers: dict[str, str]
    status: int  # what the receiver answered


class WebhookReceiver:
    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.arrivals: list[Arrival] = []  # every request with a valid signature, whatever it answered
        self.forged = 0  # requests whose signature did not check
        self.statuses: list[int] = []  # answers to give, in order, before the default 200
        self.delay = 0.0  # seconds before answering
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/proctor"

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks/proctor", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signature_ok(self.secret, request.headers, body):
            self.forged += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 200
        self.arrivals.append(Arrival(request.headers.get("X-Proctor-Delivery", ""),
                                     request.headers.get("X-Proctor-Event", ""), json.loads(body),
                                     dict(request.headers), status))
        return web.json_response({"ok": status < 300}, status=status)

    def delivered(self, event: str | None = None) -> list[Arrival]:
        """The arrivals answered 2xx (of `event`)."""
        return [a for a in self.arrivals if a.status < 300 and (event is None or a.event == event)]
