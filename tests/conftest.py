"""Shared test fixtures: a real SecantusDB server, settings, a store, a real SMTP server.

Other test modules import the path constants (``from tests.conftest import MEDIA`` or via
``conftest``) and use the fixtures by name:

- ``mongo_server``: a real ``secantusd-py`` on a free port in a tmp dir; ``.uri``, ``.stop()``,
  ``.start()`` (restarts on the SAME port and storage dir), ``.pid``, ``.running``.
- ``settings``: ``bot.settings.Settings`` with ``data_dir=tmp_path``, the shared models dir and
  ``mongodb_uri`` of ``mongo_server``.
- ``store``: ``adapters.store.Store`` opened on ``settings`` and closed after the test.
- ``smtp_server``: aiosmtpd ``Controller`` on a free port; ``.host``, ``.port``, ``.messages``
  (``email.message.EmailMessage`` list), ``.envelopes`` (``(mail_from, rcpt_tos)`` list).
"""
from __future__ import annotations

import email
import email.policy
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"
MODELS = SHARED / "models"

os.environ.setdefault("PROCTOR_MODELS_DIR", str(MODELS))
if not os.environ["PROCTOR_MODELS_DIR"]:
    os.environ["PROCTOR_MODELS_DIR"] = str(MODELS)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secantusd_executable() -> str:
    """``secantusd-py`` next to this interpreter (the venv), else on PATH."""
    cand = Path(sys.executable).parent / "secantusd-py"
    if cand.exists():
        return str(cand)
    found = shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("secantusd-py not found next to the interpreter nor on PATH")
    return found


class MongoServer:
    """A real SecantusDB process for tests, restartable on the same port and storage dir."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.storage = root / "db"
        self.log_path = root / "secantusd.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        self.storage.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "secantusd.toml"  # an explicit empty config: no auto-discovery
        cfg.touch()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [secantusd_executable(), "--config", str(cfg), "--host", self.host,
                 "--port", str(self.port), "--storage-path", str(self.storage),
                 "--log-level", "WARNING", "--sync-on-commit"],  # as EmbeddedMongo: survives a kill
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"secantusd-py exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=200,
                                         connectTimeoutMS=200, directConnection=True) as c:
                    c.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"secantusd-py did not answer within {timeout}s: {self.log_tail()}")
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """Terminate (SecantusDB takes ~2 s when idle), or ``kill`` at once (a crash; WiredTiger recovers)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    async def astart(self) -> None:
        import asyncio
        await asyncio.to_thread(self.start)

    async def astop(self, *, kill: bool = False) -> None:
        import asyncio
        await asyncio.to_thread(self.stop, kill=kill)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


@pytest.fixture
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    server = MongoServer(tmp_path_factory.mktemp("mongo"))
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)  # the data is thrown away: no need to wait for a clean shutdown


@pytest.fixture
def settings(tmp_path: Path, mongo_server: MongoServer) -> Any:
    from bot.settings import Settings

    return Settings(
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        models_dir=MODELS,
        mongodb_uri=mongo_server.uri,
    )


@pytest.fixture
async def store(settings: Any) -> AsyncIterator[Any]:
    from adapters.store import Store

    st = await Store.open(settings)
    try:
        yield st
    finally:
        await st.close()


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


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, sink)
    finally:
        controller.stop()
