"""A bounded on-disk spool of events written while the database is away.

One JSON file per event, named by the event id, written to a temp file, fsync'd and renamed over the old
one (then the directory is fsync'd): a retried or updated event overwrites its file, never duplicates it,
and a crash leaves either the old or the new version, never half a file. The snapshot travels inside as
base64. Each entry carries ``rev``, the time the caller saved the event (``time.time_ns()``): the store's
flusher writes entries oldest first and removes an entry only if its ``rev`` did not change meanwhile, so
an update spooled during a flush is never lost.

Full-spool policy: ``max_events`` is a *soft* limit. Losing evidence is worse than using disk, so past the
limit events are still written, and the spool logs an ERROR when it crosses the limit and again every
``max(1, max_events // 10)`` events after. Nothing is ever dropped silently: if a file cannot be written
(disk full, permissions) ``put`` raises ``SpoolError`` to the caller.

All methods are synchronous, thread-safe and do blocking file I/O: call them from a worker thread
(``asyncio.to_thread``) on an event loop, as ``adapters.store.Store`` does.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bot.analysis.events import Event

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FORMAT = 1


class SpoolError(RuntimeError):
    """An event could be written neither to the database nor to the spool."""


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    event: Event  # with its snapshot bytes, if any
    rev: int


@dataclass(slots=True)
class _Entry:
    rev: int
    interview_id: str | None
    path: Path


def _filename(event_id: str) -> str:
    if _SAFE_ID.match(event_id):
        return f"{event_id}.json"
    return "h-" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest() + ".json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class Spool:
    """Events waiting for the database, one fsync'd JSON file each, keyed by event id."""

    def __init__(self, directory: Path | str, max_events: int = 10000) -> None:
        self.directory = Path(directory)
        self.max_events = max(1, int(max_events))
        self._lock = threading.Lock()
        self._index: dict[str, _Entry] = {}
        self._over_logged_at = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load()

    @classmethod
    def from_settings(cls, settings: Any) -> Spool:
        return cls(Path(settings.data_dir) / "spool", settings.spool_max_events)

    # -- reading -------------------------------------------------------------------------------
    def _load(self) -> None:
        """Index what a previous run left behind (a crash or a stop during an outage)."""
        for path in self.directory.iterdir():
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)  # a write interrupted before its rename
                continue
            if path.suffix != ".json":
                continue
            try:
                rec = self._read(path)
                ev_id = str(rec["event"]["id"])
                self._index[ev_id] = _Entry(int(rec["rev"]), rec["event"].get("interview_id"), path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(path, f"unreadable: {exc}")
        if self._index:
            log.warning("spool: %d events from an earlier run wait in %s", len(self._index), self.directory)

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        with open(path, "rb") as fh:
            rec = json.loads(fh.read())
        if not isinstance(rec, dict) or "event" not in rec or "rev" not in rec:
            raise ValueError("not a spool record")
        return rec

    @staticmethod
    def _decode(rec: dict[str, Any]) -> SpooledEvent:
        ev = Event.from_dict(rec["event"])
        snap = rec.get("snapshot_b64")
        ev.snapshot = base64.b64decode(snap) if snap else None
        return SpooledEvent(ev, int(rec["rev"]))

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def items(self, interview_id: str | None = None) -> list[SpooledEvent]:
        """Spooled events, oldest ``rev`` first: all of them, or one interview's."""
        with self._lock:
            entries = [e for e in self._index.values() if interview_id is None or e.interview_id == interview_id]
        out: list[SpooledEvent] = []
        for entry in sorted(entries, key=lambda e: e.rev):
            try:
                out.append(self._decode(self._read(entry.path)))
            except FileNotFoundError:
                with self._lock:  # removed meanwhile, or deleted by hand: forget it if still indexed
                    for k, e in list(self._index.items()):
                        if e.path == entry.path and not e.path.exists():
                            del self._index[k]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(entry.path, f"unreadable: {exc}")
        return out

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move a file out of the queue into ``unwritable/`` (kept on disk, never deleted) and log it."""
        bad = self.directory / "unwritable"
        bad.mkdir(exist_ok=True)
        with self._lock:
            for k, e in list(self._index.items()):
                if e.path == path:
                    del self._index[k]
            try:
                path.replace(bad / path.name)
            except FileNotFoundError:
                return
        log.error("spool: %s set aside in %s: %s", path.name, bad, reason)

    def quarantine(self, event_id: str, rev: int, reason: str) -> bool:
        """The database refused this entry (not an outage): keep it in ``unwritable/``, out of the queue."""
        with self._lock:
            entry = self._index.get(event_id)
            if entry is None or entry.rev != rev:
                return False
        self._set_aside(entry.path, reason)
        return True

    # -- writing -------------------------------------------------------------------------------
    def put(self, event: Event, rev: int) -> Path:
        """Write (or overwrite) the event's file, fsync'd. Raises ``SpoolError`` if that fails."""
        rec = {
            "format": FORMAT,
            "rev": int(rev),
            "spooled_at": datetime.now(timezone.utc).isoformat(),
            "event": event.to_dict(snapshot=False),
            "snapshot_b64": base64.b64encode(event.snapshot).decode("ascii") if event.snapshot else None,
        }
        data = json.dumps(rec, separators=(",", ":")).encode("utf-8")
        path = self.directory / _filename(event.id)
        with self._lock:
            current = self._index.get(event.id)
            if current is not None and current.rev > rev:
                return path  # a newer version is already spooled
            tmp = path.with_name(path.name + f".{threading.get_ident()}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                _fsync_dir(self.directory)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise SpoolError(f"cannot spool event {event.id} to {self.directory}: {exc}") from exc
            self._index[event.id] = _Entry(int(rev), event.interview_id, path)
            n = len(self._index)
        self._check_limit(n)
        return path

    def _check_limit(self, n: int) -> None:
        if n <= self.max_events:
            self._over_logged_at = 0
            return
        step = max(1, self.max_events // 10)
        if self._over_logged_at == 0 or n >= self._over_logged_at + step:
            self._over_logged_at = n
            log.error(
                "spool over its limit: %d events in %s (PROCTOR_SPOOL_MAX_EVENTS=%d); still keeping every "
                "event on disk, none is dropped - bring the database back",
                n, self.directory, self.max_events,
            )

    def remove(self, event_id: str, rev: int) -> bool:
        """Remove the event's file if it still holds ``rev`` (i.e. nothing newer was spooled)."""
        with self._lock:
            entry = self._index.get(event_id)
            if entry is None or entry.rev != rev:
                return False
            entry.path.unlink(missing_ok=True)
            del self._index[event_id]
            return True

    def holds(self, event_id: str) -> bool:
        """Whether some version of the event is spooled."""
        with self._lock:
            return event_id in self._index

    def drop_interview(self, interview_id: str) -> int:
        """Forget an interview's spooled events (the interview was deleted)."""
        with self._lock:
            doomed = [k for k, e in self._index.items() if e.interview_id == interview_id]
            for k in doomed:
                self._index.pop(k).path.unlink(missing_ok=True)
        if doomed:
            _fsync_dir(self.directory)
        return len(doomed)
