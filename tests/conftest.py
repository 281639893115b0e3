"""Fixtures on real parts (helpers live in `tests.support`; test modules never import this file):

- ``mongo_server``: `tests.support.servers.MongoServer`, the embedded SecantusDB on a free port in a tmp dir;
  ``stop(kill=True)`` / ``start()`` crash and restart it on the same port and storage.
- ``settings``: `bot.settings.Settings` with ``data_dir=tmp_path``, the shared models and ``mongo_server``.
- ``store``: `adapters.store.Store` opened on ``settings`` and closed after the test.
- ``smtp_server``: aiosmtpd on a free port (`tests.support.servers.SmtpServer`).
- ``redis_server``: Debian's redis-server on a free port (`tests.support.redis_server.RedisServer`), restartable.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import MODEL_CACHE, MODELS
from tests.support.redis_server import RedisServer
from tests.support.servers import MongoServer, SmtpServer, SmtpSink, free_port

if not os.environ.get("PROCTOR_MODELS_DIR"):
    os.environ["PROCTOR_MODELS_DIR"] = str(MODELS)
if not os.environ.get("PROCTOR_CACHE_DIR"):
    os.environ["PROCTOR_CACHE_DIR"] = str(MODEL_CACHE)  # not the user's cache


@pytest.fixture
async def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MongoServer]:
    server = MongoServer(tmp_path_factory.mktemp("mongo"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(kill=True)  # the data is thrown away: no need to wait for a clean shutdown


@pytest.fixture
def settings(tmp_path: Path, mongo_server: MongoServer) -> Any:
    from bot.settings import Settings

    return Settings(
        data_dir=tmp_path,
        cache_dir=MODEL_CACHE,  # models only: the YOLO model cut at its heads is derived once per session
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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
