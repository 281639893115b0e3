"""Mailer against a real aiosmtpd server, a dead port, and no SMTP at all."""
from __future__ import annotations

import email
import email.policy
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fpdf import FPDF

from adapters.mail import Mailer
from bot.settings import Settings
from tests.support.servers import free_port


def small_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=14)
    pdf.cell(0, 10, "Proctoring report - test")
    return bytes(pdf.output())


@pytest.fixture
def mail_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, smtp_tls="none", smtp_from="bot@proctor.test")


def read_eml(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


async def test_delivers_pdf_to_smtp_server(mail_settings: Settings, smtp_server: Any) -> None:
    s = replace(mail_settings, smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    pdf = small_pdf()
    result = await Mailer(s).send_report("lead@example.org", "Proctoring report: Ada", "See attached.",
                                         [("report.pdf", pdf, "application/pdf")])
    assert result.delivered and result.method == "smtp" and result.attempts == 1
    assert result.path is None and "delivered" in result.describe()
    assert result.public() == {"delivered": "smtp", "to": ["lead@example.org"]}
    assert len(smtp_server.messages) == 1
    msg = smtp_server.messages[0]
    assert msg["Subject"] == "Proctoring report: Ada"
    assert msg["To"] == "lead@example.org" and msg["From"] == "bot@proctor.test"
    assert smtp_server.envelopes[0] == ("bot@proctor.test", ["lead@example.org"])
    assert msg.get_body(("plain",)).get_content().strip() == "See attached."
    atts = list(msg.iter_attachments())
    assert [(a.get_filename(), a.get_content_type()) for a in atts] == [("report.pdf", "application/pdf")]
    got = atts[0].get_content()
    assert got == pdf and got.startswith(b"%PDF-")
    assert not s.outbox.exists() or not list(s.outbox.iterdir())


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_login_when_user_set(mail_settings: Settings) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.support.servers import SmtpSink

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append((data.login, data.password))
        return AuthResult(success=data.login == b"bot" and data.password == b"s3cret")

    sink = SmtpSink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port, authenticator=authenticator,
                     auth_require_tls=False, auth_required=True)
    ctl.start()
    try:
        s = replace(mail_settings, smtp_host="127.0.0.1", smtp_port=port, smtp_user="bot", smtp_password="s3cret")
        result = await Mailer(s).send_report("lead@example.org", "with login", "body", [])
        assert result.delivered
        assert logins == [(b"bot", b"s3cret")] and len(sink.messages) == 1
    finally:
        ctl.stop()


async def test_smtp_down_retries_then_outbox(mail_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    s = replace(mail_settings, smtp_host="127.0.0.1", smtp_port=free_port())  # nobody listens there
    caplog.set_level(logging.WARNING, logger="adapters.mail")
    pdf = small_pdf()
    t0 = time.perf_counter()
    result = await Mailer(s, attempts=3, base_delay=0.05, timeout=2).send_report(
        ["lead@example.org", "hr@example.org"], "Report: Bob", "body text",
        [("report.pdf", pdf, "application/pdf")])
    elapsed = time.perf_counter() - t0
    assert not result.delivered and result.method == "outbox" and result.attempts == 3
    assert result.error and "SMTP failed after 3 attempts" in result.describe()
    assert result.public()["delivered"] == "outbox" and result.public()["smtp_failed"] is True
    assert str(result.path) not in str(result.public()) and result.error not in str(result.public())
    assert elapsed >= 0.05 + 0.1  # backoff: 0.05 then 0.1
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2
    assert result.path is not None and result.path.parent == s.outbox and result.path.suffix == ".eml"
    msg = read_eml(result.path)
    assert msg["Subject"] == "Report: Bob" and msg["To"] == "lead@example.org, hr@example.org"
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "report.pdf" and att.get_content() == pdf
    assert not list(s.outbox.glob("*.tmp"))


async def test_smtp_back_on_second_attempt(mail_settings: Settings) -> None:
    """A 4xx reply is transient: retried, then delivered."""
    from tests.support.servers import SmtpSink

    class FlakySink(SmtpSink):
        calls = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            FlakySink.calls += 1
            if FlakySink.calls == 1:
                return "451 Try again later"
            return await super().handle_DATA(server, session, envelope)

    from aiosmtpd.controller import Controller

    sink = FlakySink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        s = replace(mail_settings, smtp_host="127.0.0.1", smtp_port=port)
        result = await Mailer(s, attempts=3, base_delay=0.01).send_report("x@example.org", "flaky", "b", [])
        assert result.delivered and result.attempts == 2 and len(sink.messages) == 1
    finally:
        ctl.stop()


async def test_permanent_refusal_not_retried(mail_settings: Settings) -> None:
    """A 5xx reply (recipient refused) goes to the outbox at once."""
    from aiosmtpd.controller import Controller

    from tests.support.servers import SmtpSink

    class Refusing(SmtpSink):
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, opts: Any) -> str:
            return "550 5.1.1 No such user"

    port = free_port()
    ctl = Controller(Refusing(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        s = replace(mail_settings, smtp_host="127.0.0.1", smtp_port=port)
        result = await Mailer(s, attempts=4, base_delay=0.5).send_report("nobody@example.org", "refused", "b", [])
        assert not result.delivered and result.attempts == 1
        assert result.path is not None and read_eml(result.path)["Subject"] == "refused"
    finally:
        ctl.stop()


async def test_no_smtp_writes_eml(mail_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    assert mail_settings.smtp_host is None
    caplog.set_level(logging.INFO, logger="adapters.mail")
    pdf = small_pdf()
    result = await Mailer(mail_settings).send_report("lead@example.org", "Offline report", "hello",
                                                     [("r.pdf", pdf, "application/pdf")])
    assert result.method == "outbox" and not result.delivered and result.error is None
    assert result.path is not None and result.path.exists()
    assert result.path.parent == mail_settings.data_dir / "outbox"
    assert str(result.path) in caplog.text
    msg = read_eml(result.path)
    assert msg["Message-ID"] == result.message_id
    assert msg.get_body(("plain",)).get_content().strip() == "hello"
    assert [a.get_content() for a in msg.iter_attachments()] == [pdf]
