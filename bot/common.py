"""Small helpers every layer uses: UTC time, JSON-ready values, background task sets.

The lowest layer of the project: it imports only the standard library.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import tempfile
from collections.abc import Coroutine
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def parse_utc(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime; None if it is not one.

    Accepts datetimes, ISO 8601 text (``Z`` or an offset) and unix seconds. A timestamp without a zone is
    read as UTC, never as the machine's local time: the store writes UTC, and a bot on a host in another
    zone must get the same instant.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), timezone.utc)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return None


def as_unix(value: Any) -> float | None:
    """A stored timestamp (see `parse_utc`) as unix seconds; None if it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    dt = parse_utc(value)
    return None if dt is None else dt.timestamp()


def utc_iso(value: datetime) -> str:
    """ISO 8601 in UTC with the offset written out (a naive datetime is taken as UTC)."""
    return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)).isoformat()


def jsonable(value: Any) -> Any:
    """A copy that JSON (and BSON) can carry: datetimes as UTC ISO text, numpy scalars and arrays as Python
    numbers and lists, tuples as lists, objects with ``to_dict()`` as their dict, bytes as None (binary
    data never goes into a document by accident), anything else as its ``str``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    for attr in ("to_dict", "tolist"):  # project values (Policy, Event); numpy scalars and arrays
        fn = getattr(value, attr, None)
        if callable(fn):
            return jsonable(fn())
    return str(value)


class TaskSet:
    """Background tasks of one owner, kept referenced until they end (asyncio holds only weak references).

    A task that fails is logged, never lost silently.
    """

    def __init__(self, name: str = "task") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name or self.name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every task (including ones spawned meanwhile) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file beside it and a rename: a reader sees the old file or the
    whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def trim_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; False where there is none).

    Loading a call's detectors frees large blocks (the model files read and parsed) that glibc keeps in the
    process: 309 MiB RSS after loading, 262 after a trim (a call's process trims after loading, then every few
    seconds). glibc's mmap threshold is left dynamic: fixed at 128 KiB, frames and model inputs would be mapped
    and faulted in afresh each time (440,000 page faults and +30% CPU per minute of a call, measured)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` from the symbols the process already has, looked up once (None without it)."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None
