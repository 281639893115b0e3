"""The embedded MongoDB-wire server (SecantusDB) used when ``MONGODB_URI`` is unset.

``EmbeddedMongo`` runs ``secantusd-py`` as a child process on a free 127.0.0.1 port with its storage in
``<data_dir>/db``; it waits until the server answers ``ping``. It is stopped by ``stop()``, by leaving
``async with``, at interpreter exit (``atexit``) and, on Linux, by the kernel when our process dies without
running ``atexit`` (``PR_SET_PDEATHSIG``, SIGKILL: safe with ``--sync-on-commit``; set only when started
from the main thread, since the kernel ties it to the forking thread), so no orphan servers are left.

A lock file (``<data_dir>/db.lock``, ``flock``) keeps a second ``proctor serve`` off the same data dir:
the second one gets ``DataDirLocked`` naming the holder's pid instead of a corrupted database.

The server runs with ``--sync-on-commit``: without it SecantusDB loses the last acknowledged writes when its
process dies (measured: 5 of 101 upserts lost on SIGKILL; its --help says ``j: true`` is best-effort
without the flag); with it every
acknowledged write survives a crash, for ~3.5 ms instead of ~1.2 ms per small write (ample for events).

The server's own config file is written by us (``<data_dir>/db.toml``) and passed with ``--config``, so a
stray ``./secantusd.toml`` in the working directory is never picked up.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pymongo
import pymongo.errors

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

EXECUTABLE = "secantusd-py"
_LOG_MAX_BYTES = 5 * 1024 * 1024


class EmbeddedMongoError(RuntimeError):
    """The embedded server could not be started."""


class DataDirLocked(EmbeddedMongoError):
    """Another process already runs the embedded database on this data dir."""


def find_executable() -> str:
    """``secantusd-py`` next to ``sys.executable`` (the venv's bin), else on PATH."""
    cand = Path(sys.executable).parent / EXECUTABLE
    if cand.exists():
        return str(cand)
    found = shutil.which(EXECUTABLE)
    if not found:
        raise EmbeddedMongoError(
            f"{EXECUTABLE} not found next to {sys.executable} nor on PATH; "
            "install SecantusDB or set MONGODB_URI"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pdeathsig(sig: int) -> Callable[[], None]:
    def set_it() -> None:  # runs in the child between fork and exec
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
        except Exception:
            pass

    return set_it


_live: weakref.WeakSet[EmbeddedMongo] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        try:
            server.stop_sync(timeout=5.0)
        except Exception:  # pragma: no cover - best effort at exit
            pass


class _Lock:
    """An exclusive, non-blocking ``flock`` on a file holding the owner's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "?"
                fh.close()
                raise DataDirLocked(
                    f"the database in {self.path.parent} is in use by another process (pid {holder}); "
                    "stop the other `proctor serve`, or use another PROCTOR_DATA_DIR, "
                    "or point both at one server with MONGODB_URI"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.seek(0)
                self._fh.truncate()
                if fcntl is not None:
                    fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None


class EmbeddedMongo:
    """A SecantusDB child process serving ``<data_dir>/db`` on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        cache_size: str = "256M",
        sync_on_commit: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.storage_path = self.data_dir / "db"
        self.log_path = self.data_dir / "db.log"
        self.config_path = self.data_dir / "db.toml"
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.cache_size = cache_size
        self.sync_on_commit = sync_on_commit
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = _Lock(self.data_dir / "db.lock")
        self._locked = False

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> EmbeddedMongo:
        return cls(settings.data_dir, **kw)

    # -- state ---------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        if self.port is None or not self.running:
            raise EmbeddedMongoError("the embedded database is not running")
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - n))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    # -- start ---------------------------------------------------------------------------------
    def _spawn(self, port: int) -> None:
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "# written by proctor-bot at each start; edits are overwritten\n"
            "[storage]\n"
            f'cache_size = "{self.cache_size}"\n'
        )
        if self.log_path.exists() and self.log_path.stat().st_size > _LOG_MAX_BYTES:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        kwargs: dict[str, Any] = {}
        if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
            # PDEATHSIG follows the *thread* that forked: only safe from the long-lived main thread.
            # SIGKILL when every commit is synced (nothing acknowledged is lost, and a hung shutdown cannot
            # leave an orphan); SIGTERM otherwise, for a clean shutdown.
            kwargs["preexec_fn"] = _pdeathsig(signal.SIGKILL if self.sync_on_commit else signal.SIGTERM)
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                [find_executable(), "--config", str(self.config_path), "--host", self.host,
                 "--port", str(port), "--storage-path", str(self.storage_path), "--log-level", "WARNING",
                 *(["--sync-on-commit"] if self.sync_on_commit else [])],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, **kwargs,
            )
        self.port = port
        _live.add(self)

    def _ping(self) -> bool:
        try:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                f"mongodb://{self.host}:{self.port}/", directConnection=True,
                serverSelectionTimeoutMS=250, connectTimeoutMS=250, socketTimeoutMS=1000,
            )
            with client:
                client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False

    def _failed(self, why: str) -> EmbeddedMongoError:
        return EmbeddedMongoError(f"embedded database {why}; server log {self.log_path}:\n{self.log_tail()}")

    def _acquire(self) -> None:
        if not self._locked:
            self._lock.acquire()
            self._locked = True

    async def start(self) -> EmbeddedMongo:
        """Start without blocking the event loop for the wait."""
        if self.running:
            return self
        self._acquire()
        try:
            for attempt in range(3):
                self._spawn(self.port or free_port(self.host))  # fork/exec on this thread (PDEATHSIG)
                if await asyncio.to_thread(self._wait_ready):
                    return self
                self._retry_after_exit(attempt)
            raise self._failed("could not bind a port")
        except BaseException:
            self._release()
            raise

    def _wait_ready(self) -> bool:
        """Block until the server answers ``ping`` (True) or its process exits (False); stop it on timeout."""
        deadline = time.monotonic() + self.startup_timeout
        while self._proc is not None and self._proc.poll() is None:
            if self._ping():
                log.info("embedded database on %s:%s (pid %s, storage %s)",
                         self.host, self.port, self.pid, self.storage_path)
                return True
            if time.monotonic() > deadline:
                self.stop_sync()
                raise self._failed(f"did not answer within {self.startup_timeout:.0f}s")
            time.sleep(0.05)
        return False

    def _retry_after_exit(self, attempt: int) -> None:
        """The server exited at start: pick another port if it lost a race for this one, else fail."""
        code = self._proc.returncode if self._proc else None
        self._proc = None
        if "in use" in self.log_tail(600).lower() and attempt < 2:
            self.port = None
            return
        raise self._failed(f"exited with code {code} at start")

    # -- stop ----------------------------------------------------------------------------------
    def _release(self) -> None:
        if self._locked:
            self._lock.release()
            self._locked = False

    def stop_sync(self, timeout: float | None = None, *, kill: bool = False) -> None:
        """Terminate (or `kill` at once: a crash, which ``--sync-on-commit`` survives); kill after ``timeout``
        seconds. Idempotent; a later `start()` reuses the same port and storage."""
        timeout = self.stop_timeout if timeout is None else timeout
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                if kill:
                    proc.kill()
                else:
                    proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("embedded database (pid %s) did not stop in %.0fs: killing it", proc.pid, timeout)
                    proc.kill()
                    proc.wait(5)
        finally:
            _live.discard(self)
            self._release()

    async def stop(self, timeout: float | None = None, *, kill: bool = False) -> None:
        """`stop_sync`, waiting without blocking the loop."""
        await asyncio.to_thread(self.stop_sync, timeout, kill=kill)

    async def __aenter__(self) -> EmbeddedMongo:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
