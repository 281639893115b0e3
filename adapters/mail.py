"""Mail the report: SMTP through aiosmtplib with retry and backoff, or ``.eml`` files in the outbox.

- No ``SMTP_HOST``: the message is written to ``settings.outbox`` as an ``.eml`` file (open it with any mail
  client) and the log says where.
- With ``SMTP_HOST``: sent over SMTP (``SMTP_TLS`` = ``starttls`` | ``tls`` | ``none``; login when
  ``SMTP_USER`` is set). A failed send (connection refused, timeout, 4xx) is retried with exponential backoff
  (``attempts``, ``base_delay``, ``max_delay``); a permanent refusal (5xx, e.g. bad login or recipient) is
  not retried. After the last failure the message is written to the outbox, so a report is never lost, and
  the result says so (``delivered=False``, ``path``, ``error``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

log = logging.getLogger(__name__)

Attachment = tuple[str, bytes, str]  # (filename, content, mimetype)


@dataclass(frozen=True, slots=True)
class MailResult:
    delivered: bool  # True: accepted by the SMTP server
    method: str  # "smtp" or "outbox"
    message_id: str
    attempts: int = 0  # SMTP attempts made
    path: Path | None = None  # the .eml file, when written to the outbox
    error: str | None = None  # the last SMTP error, when SMTP failed
    to: tuple[str, ...] = ()  # the recipients

    def public(self) -> dict[str, Any]:
        """What an API answer (and the stored interview) may say: how and to whom, never the outbox's path
        nor the SMTP server's error text."""
        out: dict[str, Any] = {"delivered": self.method, "to": list(self.to)}
        if self.error:
            out["smtp_failed"] = True
        return out

    def describe(self) -> str:
        """For the server's log: names the ``.eml`` file and the SMTP error."""
        if self.delivered:
            return f"delivered by SMTP ({self.attempts} attempt{'s' if self.attempts != 1 else ''})"
        if self.error:
            return f"SMTP failed after {self.attempts} attempts ({self.error}); written to {self.path}"
        return f"written to {self.path}"


def _permanent(exc: BaseException) -> bool:
    """5xx replies will not get better by retrying."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in exc.recipients)
    code = getattr(exc, "code", None)
    return isinstance(exc, aiosmtplib.SMTPResponseException) and isinstance(code, int) and 500 <= code < 600


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40].lower() or "message"


class Mailer:
    def __init__(
        self,
        settings: Any,
        *,
        attempts: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout

    @property
    def outbox(self) -> Path:
        return Path(self.settings.outbox)

    def build(
        self, to: str | Sequence[str], subject: str, body_text: str, attachments: Sequence[Attachment] = ()
    ) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.smtp_from
        msg["To"] = to if isinstance(to, str) else ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        domain = self.settings.smtp_from.rpartition("@")[2] or "localhost"
        msg["Message-ID"] = make_msgid("proctor", domain=domain)
        msg.set_content(body_text)
        for filename, content, mimetype in attachments:
            maintype, _, subtype = (mimetype or "application/octet-stream").partition("/")
            msg.add_attachment(bytes(content), maintype=maintype, subtype=subtype or "octet-stream",
                               filename=filename)
        return msg

    async def send_report(
        self,
        to: str | Sequence[str],
        subject: str,
        body_text: str,
        attachments: Sequence[Attachment] = (),
    ) -> MailResult:
        msg = self.build(to, subject, body_text, attachments)
        mid = str(msg["Message-ID"])
        rcpt = (to,) if isinstance(to, str) else tuple(to)
        if not self.settings.smtp_host:
            path = await self._to_outbox(msg)
            log.info("no SMTP_HOST: report %r for %s written to %s", subject, msg["To"], path)
            return MailResult(False, "outbox", mid, 0, path, to=rcpt)
        error = ""
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                await self._smtp(msg)
                log.info("report %r sent to %s by SMTP (%s:%s)", subject, msg["To"],
                         self.settings.smtp_host, self.settings.smtp_port)
                return MailResult(True, "smtp", mid, attempt, to=rcpt)
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}".strip()
                if _permanent(exc) or attempt == self.attempts:
                    break
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                log.warning("SMTP send to %s failed (attempt %d/%d: %s); retrying in %.1fs",
                            msg["To"], attempt, self.attempts, error, delay)
                await asyncio.sleep(delay)
        path = await self._to_outbox(msg)
        log.error("SMTP send to %s failed after %d attempts (%s); the report is kept in %s",
                  msg["To"], attempt, error, path)
        return MailResult(False, "outbox", mid, attempt, path, error, to=rcpt)

    async def _smtp(self, msg: EmailMessage) -> None:
        s = self.settings
        await aiosmtplib.send(
            msg,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_user or None,
            password=s.smtp_password if s.smtp_user else None,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            timeout=self.timeout,
        )

    async def _to_outbox(self, msg: EmailMessage) -> Path:
        return await asyncio.to_thread(self._write_eml, msg)

    def _write_eml(self, msg: EmailMessage) -> Path:
        """Write ``msg`` atomically (temp file, fsync, rename) into the outbox."""
        self.outbox.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.outbox / f"{stamp}-{_slug(str(msg['Subject'] or ''))}.eml"
        tmp = path.with_suffix(".eml.tmp")
        with open(tmp, "wb") as fh:
            fh.write(msg.as_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path
