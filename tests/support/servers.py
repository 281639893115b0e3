"""Real servers for the tests: the embedded database and an SMTP server."""
from __future__ import annotations

import email
import email.message
import email.policy
from pathlib import Path
from typing import Any

from adapters.embedded_db import EmbeddedMongo, free_port

__all__ = ["MongoServer", "SmtpServer", "SmtpSink", "free_port"]


class MongoServer(EmbeddedMongo):
    """The project's own embedded SecantusDB as the tests' database: `stop(kill=True)` is a crash, and
    `start()` again serves the same storage on the same port."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, port=free_port())

    @property
    def uri(self) -> str:
        """Known while stopped too (the port stays), so a test can keep it across a restart."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"


class SmtpSink:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        self.messages.append(email.message_from_bytes(raw, policy=email.policy.default))  # type: ignore[arg-type]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class SmtpServer:
    """Where the aiosmtpd server listens and what it received."""

    def __init__(self, host: str, port: int, sink: SmtpSink) -> None:
        self.host = host
        self.port = port
        self._sink = sink

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return self._sink.messages

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        return self._sink.envelopes
