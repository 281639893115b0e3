"""The embedded SecantusDB server: start, stop, lock, no orphans."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pymongo
import pytest

from adapters.embedded_db import DataDirLocked, EmbeddedMongo, EmbeddedMongoError, find_executable
from adapters.store import Store
from bot.analysis.events import FACE_MISSING, Event
from bot.settings import Settings
from tests.support.paths import REPO
from tests.support.servers import free_port
from tests.support.waiting import wait_for_sync


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not a running server
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    return wait_for_sync(lambda: not alive(pid), timeout)


def count(uri: str) -> int:
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000) as c:
        return c.t.docs.count_documents({})


def test_executable_is_the_venvs() -> None:
    assert Path(find_executable()).parent == Path(sys.executable).parent


async def test_start_stop_leaves_no_process_and_keeps_data(tmp_path: Path) -> None:
    db = EmbeddedMongo(tmp_path)
    t0 = time.perf_counter()
    async with db:
        startup = time.perf_counter() - t0
        print(f"\nembedded server answered ping after {startup:.2f} s")
        pid = db.pid
        assert pid is not None and alive(pid) and db.running
        assert db.uri.startswith("mongodb://127.0.0.1:")
        with pymongo.MongoClient(db.uri) as c:
            c.t.docs.insert_many([{"n": 1}, {"n": 2}])
        assert (tmp_path / "db" / "WiredTiger").exists()
        assert (tmp_path / "db.lock").read_text().strip() == str(os.getpid())
    assert not db.running and not alive(pid)
    with pytest.raises(EmbeddedMongoError):
        _ = db.uri
    async with EmbeddedMongo(tmp_path) as again:  # same data dir, new port
        assert again.pid != pid
        assert await asyncio.to_thread(count, again.uri) == 2


async def test_stop_is_idempotent(tmp_path: Path) -> None:
    db = await EmbeddedMongo(tmp_path).start()
    pid = db.pid
    assert pid is not None and await asyncio.to_thread(count, db.uri) == 0
    await db.stop()
    await db.stop()
    assert not alive(pid)


async def test_second_server_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    async with EmbeddedMongo(tmp_path) as first:
        second = EmbeddedMongo(tmp_path)
        with pytest.raises(DataDirLocked, match=rf"in use by another process \(pid {os.getpid()}\)"):
            await second.start()
        assert not second.running and first.running
        assert await asyncio.to_thread(count, first.uri) == 0  # the first is unharmed
    async with EmbeddedMongo(tmp_path) as third:  # released on stop
        assert third.running


async def test_server_failure_reports_its_log(tmp_path: Path) -> None:
    """A server already on the storage (started by hand, not through us) makes ours exit: say why."""
    (tmp_path / "db").mkdir()
    squatter = subprocess.Popen([find_executable(), "--host", "127.0.0.1", "--port", str(free_port()),
                                 "--storage-path", str(tmp_path / "db")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "db" / "WiredTiger.lock").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        db = EmbeddedMongo(tmp_path, startup_timeout=20)
        with pytest.raises(EmbeddedMongoError, match="exited with code") as err:
            await db.start()
        assert "WiredTiger" in str(err.value) and str(tmp_path / "db.log") in str(err.value)
        assert not db.running and not (tmp_path / "db.lock").read_text().strip()  # lock released
    finally:
        squatter.kill()
        squatter.wait()


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    sys.path.insert(0, {repo!r})
    from adapters.embedded_db import EmbeddedMongo
    db = asyncio.run(EmbeddedMongo({data!r}).start())  # spawned from the main thread: PDEATHSIG is set
    print(db.pid, db.port, flush=True)
    sys.stdin.readline()   # exit when told (atexit stops the server) or get killed
""")


def spawn_child(data: Path) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), data=str(data))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, "child did not start the server"
    return child, int(line.split()[0])


async def test_atexit_stops_server_and_lock_holds_across_processes(tmp_path: Path) -> None:
    child, server_pid = spawn_child(tmp_path)
    try:
        assert alive(server_pid)
        with pytest.raises(DataDirLocked, match=rf"pid {child.pid}\)"):
            await EmbeddedMongo(tmp_path).start()
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(20) == 0
        assert wait_gone(server_pid), "server left running after interpreter exit"
    finally:
        child.kill()
        child.wait()


async def test_killed_parent_takes_the_server_along(tmp_path: Path) -> None:
    child, server_pid = spawn_child(tmp_path)
    try:
        child.send_signal(signal.SIGKILL)  # no atexit: PR_SET_PDEATHSIG must do it
        child.wait(10)
        assert wait_gone(server_pid, 5), "orphan server left behind"
        db = await EmbeddedMongo(tmp_path).start()  # and the data dir is usable again
        await db.stop()
    finally:
        if alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


async def test_store_owns_embedded_server_without_uri(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mongodb_uri=None)
    store = await Store.open(settings)
    assert store.embedded is not None
    pid = store.embedded.pid
    assert pid is not None and alive(pid)
    iv = await store.create_interview(candidate_name="C", interviewer_email="x@y", policy=None)
    await store.save_event(Event(type=FACE_MISSING, start=1.0, end=2.0, confidence=0.9, interview_id=iv["id"]))
    await store.close()
    assert not alive(pid)
    store = await Store.open(replace(settings))  # reopened: the data is there
    try:
        assert [e.type for e in await store.list_events(iv["id"])] == [FACE_MISSING]
    finally:
        await store.close()


async def test_store_open_on_unreachable_uri_fails_fast(tmp_path: Path) -> None:
    from adapters.store import StoreUnavailable

    settings = Settings(data_dir=tmp_path, mongodb_uri=f"mongodb://user:pw@127.0.0.1:{free_port()}/")
    t0 = time.perf_counter()
    with pytest.raises(StoreUnavailable) as err:
        await Store.open(settings, server_selection_timeout_ms=300)
    assert time.perf_counter() - t0 < 5
    assert "pw" not in str(err.value).split("(")[0] and "127.0.0.1" in str(err.value)

