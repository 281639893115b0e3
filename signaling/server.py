"""The signaling server: aiohttp app + python-socketio AsyncServer + the web pages.

`create_app(settings, store, bots=..., reports=...)` builds it; `bot.app` wires it with the store, the bots
and the reports and serves it.
"""
from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import re
import time
import types
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import engineio.async_socket
import engineio.packet
import engineio.payload
import socketio
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.analysis.events import Event
from bot.common import TaskSet, as_unix
from bot.ports import Bots, Reports, Store, Webhooks
from bot.settings import Settings
from signaling import api, protocol, tokens
from signaling.operators import Operators
from signaling.protocol import ProtocolError, RateLimiter
from signaling.rooms import Participant, Rooms
from signaling.roster import LocalRoster, RedisRoster, Roster
from signaling.tokens import TokenError

log = logging.getLogger("signaling.server")

WEB_DIR = Path(__file__).resolve().parent / "web"
# committed with its license and sha256 (web/vendor/README.md), so every install of the package serves it
SOCKET_IO_JS = WEB_DIR / "vendor" / "socket.io.min.js"
PAGES = {"interviewer": "interviewer.html", "candidate": "candidate.html"}
START_PAGE = "index.html"
_STATIC_REF = re.compile(r"""(?:src|href)\s*=\s*["']/static/([^"'?#]+)""")
MAX_TRANSPORT = 1024 * 1024  # Engine.IO packet / HTTP body ceiling (bot_event snapshots)
SIO = web.AppKey("sio", socketio.AsyncServer)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the URL carries the token
    "X-Content-Type-Options": "nosniff",
}


class PagesMissing(RuntimeError):
    """A web page, or a file one of them loads, is not installed (`proctor serve` stops with this line)."""


def missing_page_files(web_dir: Path = WEB_DIR) -> list[str]:
    """The pages, and every ``/static/`` file their ``src``/``href`` name, that are not in `web_dir`."""
    missing: list[str] = []
    for page in (START_PAGE, *PAGES.values()):
        path = web_dir / page
        if not path.is_file():
            missing.append(page)
            continue
        for rel in _STATIC_REF.findall(path.read_text(encoding="utf-8")):
            if not (web_dir / rel).is_file() and rel not in missing:
                missing.append(rel)
    return missing


def check_pages(web_dir: Path = WEB_DIR) -> None:
    """`PagesMissing` naming what is missing, if a page could not load; else nothing."""
    missing = missing_page_files(web_dir)
    if missing:
        raise PagesMissing(f"the web pages are incomplete, missing in {web_dir}: {', '.join(missing)} "
                           "(reinstall proctor-bot)")


def room(interview_id: str) -> str:
    return f"iv:{interview_id}"


def interviewer_room(interview_id: str) -> str:
    return f"iv:{interview_id}:interviewer"


_INSTANCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a bot instance id: also a key in the interview's document
COVERAGE_SAVE_EVERY = 10.0  # s between two writes of a bot's coverage counters


def bot_room(interview_id: str) -> str:
    return f"iv:{interview_id}:bot"


class EventWriter:
    """Saves bot events in arrival order per interview, off the path of the alert; then queues the event's
    ``alert`` webhook, if any (after the save, so the snapshot link in it already works)."""

    def __init__(self, store: Store, webhooks: Webhooks | None = None) -> None:
        self.store = store
        self.webhooks = webhooks
        self._queues: dict[str, deque[tuple[Event, dict[str, Any] | None]]] = {}
        self._tasks = TaskSet("event-writer")

    def put(self, event: Event, webhook: dict[str, Any] | None = None) -> None:
        iid = event.interview_id or ""
        q = self._queues.get(iid)
        if q is not None:
            q.append((event, webhook))
            return
        self._queues[iid] = deque([(event, webhook)])
        self._tasks.spawn(self._drain(iid), name=f"store-events-{iid[:8]}")

    async def _drain(self, iid: str) -> None:
        q = self._queues[iid]
        try:
            while q:
                event, webhook = q[0]
                try:
                    await self.store.save_event(event)
                except Exception:
                    log.exception("could not store event %s of interview %s", event.id, iid)
                if webhook is not None and self.webhooks is not None:
                    try:
                        await self.webhooks.send("alert", webhook, key=f"alert:{event.id}")
                    except Exception:
                        log.exception("could not queue the alert webhook of event %s", event.id)
                q.popleft()
        finally:
            self._queues.pop(iid, None)

    async def flush(self) -> None:
        await self._tasks.wait()


class Hub:
    """Socket.IO handlers: auth on connect, rooms, relay, alerts."""

    def __init__(self, sio: socketio.AsyncServer, store: Store, secret: str, *, settings: Settings | None = None,
                 webhooks: Webhooks | None = None, redis_url: str | None = None) -> None:
        self.sio = sio
        self.store = store
        self.secret = secret
        self.settings = settings or Settings()
        self.webhooks = webhooks
        self.rooms = Rooms()  # this node's own sockets
        self.roster: Roster = RedisRoster(self.rooms, redis_url) if redis_url else LocalRoster(self.rooms)
        self.limits: dict[str, RateLimiter] = {}
        self.started: dict[str, float] = {}  # interview id -> unix seconds the candidate first joined
        self.writer = EventWriter(store, webhooks)
        self.bot_instance: dict[str, str] = {}  # bot sid -> its instance id (this node's bots)
        self.coverage: dict[str, tuple[str, dict[str, Any], float]] = {}  # interview -> (instance, counters, saved)
        self._tasks = TaskSet("hub")
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("signal", self.on_signal)
        sio.on("bot_event", self.on_bot_event)
        sio.on("page_event", self.on_page_event)
        sio.on("chat", self.on_chat)
        sio.on("bot_state", self.on_bot_state)
        sio.on("*", self.on_other)

    # --- lifecycle ---

    async def connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("missing token")
        try:
            claims = tokens.verify(self.secret, token)
        except TokenError as e:
            raise socketio.exceptions.ConnectionRefusedError(f"invalid token: {e.reason}") from None
        iid = claims.interview_id
        if claims.role not in tokens.CALL_ROLES:
            raise socketio.exceptions.ConnectionRefusedError("this token cannot join a call")
        try:
            interview = await self.store.get_interview(iid)
        except Exception:
            log.exception("could not look up interview %s", iid)
            raise socketio.exceptions.ConnectionRefusedError("server error, try again") from None
        if interview is None:
            raise socketio.exceptions.ConnectionRefusedError("unknown interview")
        if interview.get("status") == "ended" and claims.role != "interviewer":
            raise socketio.exceptions.ConnectionRefusedError("the interview has ended")
        if not self._still_there(sid):
            # gone while we looked the interview up: do not join a socket whose disconnect
            # may already have been handled (python-socketio skips it for pending connects)
            raise socketio.exceptions.ConnectionRefusedError("disconnected while connecting")
        started = as_unix(interview.get("started_at"))
        if started is not None:
            self.started.setdefault(iid, started)

        name = claims.name or (claims.role == "candidate" and interview.get("candidate_name")) \
            or api.DEFAULT_NAMES[claims.role]
        if claims.role == "bot" and isinstance(auth, dict):
            await self._bot_arrives(iid, interview, auth)
            instance = auth.get("instance")
            if isinstance(instance, str) and _INSTANCE.match(instance):
                self.bot_instance[sid] = instance
        try:
            replaced = await self.roster.join(iid, sid, claims.role, name)
        except Exception:
            log.exception("could not add %s to interview %s", sid, iid)
            self.rooms.leave(sid)
            raise socketio.exceptions.ConnectionRefusedError("server busy, try again") from None
        self.limits[sid] = RateLimiter()
        await self.sio.enter_room(sid, room(iid))
        if claims.role == "interviewer":
            await self.sio.enter_room(sid, interviewer_room(iid))
        elif claims.role == "bot":
            await self.sio.enter_room(sid, bot_room(iid))
        log.info("%s %s joined interview %s", claims.role, sid, iid)
        if replaced is not None:
            log.info("%s %s replaces %s in interview %s", claims.role, sid, replaced, iid)
            self.limits.pop(replaced, None)
            self._tasks.spawn(self.sio.disconnect(replaced))
        if claims.role == "candidate" and iid not in self.started:
            self.started[iid] = time.time()
            # stored before the candidate's connect is acknowledged: a bot invited right after reads the call's
            # clock from it, and so does a restarted bot (one clock for the call, across its bots)
            await self._mark_started(iid, self.started[iid])
        # after the CONNECT packet has gone out, so the newcomer gets the list too
        self._tasks.spawn(self.announce(iid))

    def _still_there(self, sid: str) -> bool:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        sock = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        return sock is not None and not sock.closed and not getattr(sock, "closing", False)

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        self.limits.pop(sid, None)
        p = await self.roster.leave(sid)
        if p is not None:
            log.info("%s %s left interview %s (%s)", p.role, sid, p.interview_id, reason)
            if p.role == "bot":
                self.bot_instance.pop(sid, None)
                self._tasks.spawn(self._bot_left(p.interview_id))
            await self.announce(p.interview_id)

    # --- the bot's arrivals and departures (a restart, a takeover by another worker) ---

    def _call_time(self, interview_id: str, at: float) -> float:
        started = self.started.get(interview_id)
        return 0.0 if started is None else max(0.0, round(at - started, 3))

    async def _bot_left(self, interview_id: str) -> None:
        try:
            await self._save_coverage(interview_id)
            self.coverage.pop(interview_id, None)
            await self.store.update_interview(interview_id, bot_left_at=datetime.now(timezone.utc).isoformat())
        except Exception:
            log.exception("could not record the bot leaving interview %s", interview_id)

    async def _bot_arrives(self, interview_id: str, interview: dict[str, Any], auth: dict[str, Any]) -> None:
        """A bot connects. A new bot (not a reconnect of the same one) means its predecessor is gone: the
        events it left open are closed where it was last seen, marked ``detail.interrupted``, and the gap
        between the two is recorded with its reason. Runs before the bot joins, so before its first event."""
        instance = auth.get("instance")
        if not isinstance(instance, str) or not instance or len(instance) > 64:
            return
        previous = interview.get("bot_instance")
        if previous == instance:
            return  # the same bot reconnecting: its own events are still open in its analysis
        now = time.time()
        left = as_unix(interview.get("bot_left_at"))
        resumed = auth.get("resumed")
        fields: dict[str, Any] = {"bot_instance": instance}
        if interview.get("bot_first_at") is None:  # the call went unwatched until now: a coverage gap
            fields["bot_first_at"] = self._call_time(interview_id, now)
        try:
            if previous is not None:
                at = self._call_time(interview_id, left if left is not None else now)
                reason = ("bot moved to another worker" if resumed == "worker lost"
                          else "bot restarting" if isinstance(resumed, str) and resumed else "bot invited again")
                gaps = list(interview.get("bot_gaps") or [])[-99:]
                gaps.append({"from": at, "to": self._call_time(interview_id, now), "reason": reason,
                             "cause": str(resumed)[:200] if isinstance(resumed, str) else None})
                fields["bot_gaps"] = gaps
                for event in await self.store.list_events(interview_id):
                    if not event.open:
                        continue
                    event.end = max(event.start, at)
                    event.detail = {**event.detail, "interrupted": True}
                    event.interview_id = interview_id
                    self.writer.put(event)
                    await self.sio.emit("alert", {"change": "closed", "event": event.to_dict(), "has_snapshot": False},
                                        room=interviewer_room(interview_id))
                    log.info("interview %s: event %s (%s) left open by the previous bot closed at %.1f s",
                             interview_id, event.id, event.type, event.end)
            await self.store.update_interview(interview_id, **fields)
        except Exception:  # bookkeeping must not keep the bot out of the call
            log.exception("could not record the bot's arrival in interview %s", interview_id)

    async def on_bot_state(self, sid: str, *args: Any) -> None:
        """The bot's heartbeat: shown on the interviewer's page, and what it analysed kept for the coverage."""
        got = await self._accept("bot_state", sid, args, roles=("bot",))
        if got is None:
            return
        p, msg = got
        assert isinstance(msg, protocol.BotState)
        now = time.time()
        await self.sio.emit("bot_status", {"state": msg.state, "face_fps": round(msg.face_fps, 2),
                                           "at": round(now, 3)}, room=interviewer_room(p.interview_id))
        instance = self.bot_instance.get(sid)
        if instance is None:
            return
        counters = {"samples": msg.samples, "audio_seconds": msg.audio_seconds, "since": msg.since}
        _, _, saved = self.coverage.get(p.interview_id, ("", {}, 0.0))
        self.coverage[p.interview_id] = (instance, counters, saved)
        if now - saved >= COVERAGE_SAVE_EVERY:
            self._tasks.spawn(self._save_coverage(p.interview_id))

    async def _save_coverage(self, interview_id: str) -> None:
        """What the interview's bot has analysed, per bot instance (a restarted bot counts from zero)."""
        held = self.coverage.get(interview_id)
        if held is None:
            return
        instance, counters, _ = held
        self.coverage[interview_id] = (instance, counters, time.time())
        try:
            await self.store.update_interview(interview_id, **{f"bot_coverage.{instance}": counters})
        except Exception:
            log.exception("could not store the coverage of interview %s", interview_id)

    async def flush_events(self) -> None:
        await self.writer.flush()

    async def bot_failed(self, interview_id: str, reason: str) -> None:
        """The fleet gave up the interview's bot after its restarts: tell the interviewer."""
        await self.sio.emit("bot_status", {"state": "failed", "reason": reason, "at": round(time.time(), 3)},
                            room=interviewer_room(interview_id))

    async def announce(self, interview_id: str) -> None:
        people = [p.public() for p in await self.roster.participants(interview_id)]
        await self.sio.emit("participants", {"participants": people}, room=room(interview_id))

    async def close_interview(self, interview_id: str) -> None:
        """Disconnect every socket of the interview, on every node (its data is being deleted)."""
        for p in await self.roster.participants(interview_id):
            await self.sio.disconnect(p.sid)
        self.started.pop(interview_id, None)
        self.coverage.pop(interview_id, None)

    async def close(self) -> None:
        for iid in self.rooms.interviews():
            for p in self.rooms.participants(iid):
                await self.sio.disconnect(p.sid)
        await self.writer.flush()
        await self.roster.close()

    async def _mark_started(self, interview_id: str, at: float) -> None:
        try:
            await self.store.update_interview(
                interview_id, started_at=datetime.fromtimestamp(at, timezone.utc).isoformat(), status="live")
        except Exception:
            log.exception("could not mark interview %s started", interview_id)

    # --- messages ---

    async def reply_error(self, sid: str, event: str, message: str) -> None:
        limiter = self.limits.get(sid)
        if limiter is not None and not limiter.allow("error", time.monotonic()):
            return  # a flood: stop answering, keep serving
        await self.sio.emit("error", {"error": message, "for": event[:64]}, to=sid)

    async def _accept(
        self, event: str, sid: str, args: tuple, roles: tuple[str, ...] | None = None
    ) -> tuple[Participant, protocol.Message] | None:
        """The sender and the parsed message, or None after replying with an error."""
        p = self.rooms.get(sid)
        limiter = self.limits.get(sid)
        if p is None or limiter is None:
            await self.reply_error(sid, event, "not joined to an interview")
            return None
        err = limiter.check(event, time.monotonic())
        if err is None and roles is not None and p.role not in roles:
            err = f"only the {' or '.join(roles)} may send {event}"
        if err is None and len(args) != 1:
            err = f"{event} takes exactly one JSON object"
        if err is None:
            try:
                return p, protocol.parse(event, args[0])
            except ProtocolError as e:
                err = str(e)
        await self.reply_error(sid, event, err)
        return None

    async def on_signal(self, sid: str, *args: Any) -> None:
        got = await self._accept("signal", sid, args)
        if got is None:
            return
        p, msg = got
        assert isinstance(msg, protocol.Signal)
        if msg.to == sid or not await self.roster.contains(p.interview_id, msg.to):
            await self.reply_error(sid, "signal", "unknown recipient: not a participant of this interview")
            return
        await self.sio.emit(
            "signal", {"from": sid, "role": p.role, "kind": msg.kind, "data": msg.data}, to=msg.to)

    async def on_bot_event(self, sid: str, *args: Any) -> None:
        got = await self._accept("bot_event", sid, args, roles=("bot",))
        if got is None:
            return
        p, msg = got
        assert isinstance(msg, protocol.BotEvent)
        event = msg.event
        event.interview_id = p.interview_id
        alert: dict[str, Any] = {"change": msg.change, "event": event.to_dict(),
                                 "has_snapshot": event.snapshot is not None}
        if msg.taken_at is not None:
            alert["taken_at"] = msg.taken_at  # the page (and the benchmarks) can tell how fresh the alert is
        self.writer.put(event, self._alert_webhook(p.interview_id, alert))  # ordered, in the background
        await self.sio.emit("alert", alert, room=interviewer_room(p.interview_id))

    def _alert_webhook(self, interview_id: str, alert: dict[str, Any]) -> dict[str, Any] | None:
        """The ``alert`` webhook's data for an opened event (the alert plus links), else None."""
        if self.webhooks is None or alert["change"] != "opened":
            return None
        base, query = api.reader_links(self.settings, self.secret, interview_id)
        eid = quote(alert["event"]["id"], safe="")
        return {"interview_id": interview_id, **alert,
                "snapshot_url": f"{base}/events/{eid}/snapshot{query}" if alert["has_snapshot"] else None,
                "events_url": f"{base}/events{query}"}

    async def on_page_event(self, sid: str, *args: Any) -> None:
        got = await self._accept("page_event", sid, args, roles=("candidate",))
        if got is None:
            return
        p, msg = got
        assert isinstance(msg, protocol.PageEvent)
        t = self._call_time(p.interview_id, time.time())
        await self.sio.emit("page_event", {"kind": msg.kind, "active": msg.active, "t": t},
                            room=bot_room(p.interview_id))  # wherever the bot's node is

    async def on_chat(self, sid: str, *args: Any) -> None:
        got = await self._accept("chat", sid, args)
        if got is None:
            return
        p, msg = got
        assert isinstance(msg, protocol.Chat)
        await self.sio.emit(
            "chat",
            {"from_role": p.role, "name": p.name, "text": msg.text, "at": round(time.time(), 3)},
            room=room(p.interview_id),
        )

    async def on_other(self, event: str, sid: str, *args: Any) -> None:
        if self.rooms.get(sid) is None:
            return
        await self.reply_error(sid, str(event), f"unknown event {str(event)[:64]!r}")


# --- pages and static files ---------------------------------------------------------------

def _text_error(status: int, message: str) -> web.HTTPException:
    exc = web.HTTPException(text=message, headers=PAGE_HEADERS)
    exc.set_status(status)
    return exc


async def interview_page(request: web.Request) -> web.StreamResponse:
    """The page for the token's role. ``/interview/{id}/monitor`` is the interviewer's page without the call
    (alerts, review, report), for a call held on another platform; an interviewer opening ``/interview/{id}`` of
    such an interview is sent there."""
    token = api.request_token(request)
    if token is None:
        raise _text_error(401, "This link has no access token.")
    try:
        claims = tokens.verify(request.app[api.SECRET], token)
    except TokenError as e:
        msg = "This link has expired." if e.reason == "expired" else "This link is not valid."
        raise _text_error(401, msg) from None
    monitor = request.path.endswith("/monitor")
    if claims.role not in PAGES or (monitor and claims.role != "interviewer"):
        raise _text_error(403, "This token cannot open a page." if not monitor
                          else "Only the interviewer can open the monitor.")
    iid = request.match_info["id"]
    if claims.interview_id != iid:
        raise _text_error(403, "This link is for another interview.")
    interview = await request.app[api.STORE].get_interview(iid)
    if interview is None:
        raise _text_error(404, "This interview does not exist (any more).")
    if claims.role == "interviewer" and not monitor and interview.get("room"):
        raise web.HTTPFound(request.rel_url.with_path(f"{request.path}/monitor").with_query(request.query),
                            headers=PAGE_HEADERS)
    path = WEB_DIR / PAGES[claims.role]
    if not path.is_file():
        raise _text_error(503, "The web pages are not installed on this server.")
    return web.FileResponse(path, headers=PAGE_HEADERS)


async def start_page(request: web.Request) -> web.StreamResponse:
    """Create an interview and get the two links."""
    return web.FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)


async def socket_io_js(request: web.Request) -> web.StreamResponse:
    if not SOCKET_IO_JS.is_file():
        raise _text_error(404, "Not found.")
    return web.FileResponse(SOCKET_IO_JS, headers={"Cache-Control": "public, max-age=86400"})


async def static_file(request: web.Request) -> web.StreamResponse:
    rel = request.match_info["path"]
    parts = rel.split("/")
    if any(not part or part.startswith(".") or part == "node_modules" or "\\" in part for part in parts):
        raise _text_error(404, "Not found.")
    try:
        path = (WEB_DIR / rel).resolve()
        found = path.is_relative_to(WEB_DIR) and path.is_file() and not path.name.startswith("package")
    except (OSError, ValueError):  # a name too long for the file system, a NUL (found by tests/test_fuzz.py)
        found = False
    if not found:
        raise _text_error(404, "Not found.")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


# --- the app -------------------------------------------------------------------------------

class _EioPacket(engineio.packet.Packet):
    """Engine.IO's packet, decoded without raising: a frame that does not decode (empty, a non-digit or unknown
    type, bad base64) becomes a NOOP, which the socket ignores. python-engineio 4.x decoded it outside its
    error handling (an exception out of the websocket handler) or logged "Unknown receive error" at ERROR for
    types past 6 (found by tests/test_fuzz.py)."""

    def decode(self, encoded_packet: Any) -> None:
        try:
            super().decode(encoded_packet)
        except (ValueError, TypeError, IndexError, binascii.Error, RecursionError):
            self.packet_type, self.data = engineio.packet.NOOP, None
            return
        if not isinstance(self.packet_type, int) or not 0 <= self.packet_type < len(engineio.packet.packet_names):
            self.packet_type, self.data = engineio.packet.NOOP, None


def _harden_engineio() -> None:
    """Make the server's Engine.IO sockets (and payloads) decode with `_EioPacket`. The modules keep their
    `packet` module as a global: each gets a copy with `Packet` replaced (the real module is left alone)."""
    for module in (engineio.async_socket, engineio.payload):
        if getattr(module.packet, "Packet", None) is not _EioPacket:
            module.packet = types.SimpleNamespace(**{**vars(engineio.packet), "Packet": _EioPacket})


_harden_engineio()


class _ClientFaults(logging.LoggerAdapter):
    """engineio's logger, with what it logs by ``error()`` as a warning: those are a client's bad requests (an
    unsupported protocol version, an unknown session id, quoted from the request) and not the server's faults
    (found by tests/test_fuzz.py). Exceptions (``exception()``) stay at ERROR."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.warning(msg, *args, **kwargs)


class _ClientHttpErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a header line past 8 KiB, a malformed request line) with a
    traceback at ERROR, and answers 400: the client's fault, so a one-line warning (found by tests/test_fuzz.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            record.msg, record.args = f"{record.getMessage()}: {str(exc)[:200]}", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_client_http_errors() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientHttpErrors) for f in logger.filters):
        logger.addFilter(_ClientHttpErrors())


class MalformedPacket(ValueError):
    """A Socket.IO packet from a client that does not decode or has the wrong shape."""


class _Json:
    """The JSON module of `_Packet`: an integer of more than 100 digits reads as an infinite float, which the
    protocol refuses naming the field (engineio's own parser raised, a traceback at ERROR)."""

    @staticmethod
    def _int(text: str) -> float | int:
        if len(text) > 100:
            return -math.inf if text.startswith("-") else math.inf
        return int(text)

    @staticmethod
    def dumps(*args: Any, **kwargs: Any) -> str:
        return json.dumps(*args, **kwargs)

    @classmethod
    def loads(cls, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_int", cls._int)
        return json.loads(*args, **kwargs)


class _Packet(socketio.packet.Packet):
    """python-socketio's packet, checked on the way in: JSON that does not parse (or an integer past engineio's
    limit), an unknown or server-only packet type, an event without a name, an ACK that is not a list or a binary
    attachment that does not fit raise `MalformedPacket` (found by tests/test_fuzz.py: each was a traceback at
    ERROR, or an exception in a task, in python-socketio 5.18)."""

    json = _Json

    FROM_CLIENT = (socketio.packet.CONNECT, socketio.packet.DISCONNECT, socketio.packet.EVENT, socketio.packet.ACK,
                   socketio.packet.BINARY_EVENT, socketio.packet.BINARY_ACK)

    def __init__(self, *args: Any, encoded_packet: Any = None, **kwargs: Any) -> None:
        if encoded_packet is not None and not encoded_packet:
            raise MalformedPacket("empty packet")  # the base class would take it for an event without data
        super().__init__(*args, encoded_packet=encoded_packet, **kwargs)

    def decode(self, encoded_packet: Any) -> int:
        try:
            count = super().decode(encoded_packet)
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            raise MalformedPacket(f"undecodable packet ({exc})"[:200]) from None
        if self.packet_type not in self.FROM_CLIENT:
            raise MalformedPacket(f"packet type {str(self.packet_type)[:20]!r} is not one a client sends")
        self._check_shape()
        return int(count)

    def add_attachment(self, attachment: Any) -> bool:
        try:
            complete = bool(super().add_attachment(attachment))
        except (ValueError, TypeError, IndexError, KeyError, RecursionError) as exc:
            raise MalformedPacket(f"bad binary attachment ({exc})"[:200]) from None
        if complete:
            self._check_shape()
        return complete

    def _check_shape(self) -> None:
        t, data = self.packet_type, self.data
        if t in (socketio.packet.EVENT, socketio.packet.BINARY_EVENT):
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                raise MalformedPacket("an event packet must be a list starting with the event's name")
        elif t in (socketio.packet.ACK, socketio.packet.BINARY_ACK):
            if not isinstance(data, list):
                raise MalformedPacket("an ack packet must be a list")
        # a CONNECT's auth of any shape goes to Hub.connect, which refuses it with "missing token"


class _Server(socketio.AsyncServer):
    """A client that sends a malformed packet gets a warning in the log and is disconnected (like a WebSocket
    protocol error), instead of a traceback at ERROR from engineio's handler."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self.environ:
            return  # a packet that was on its way when the connection was closed (e.g. for a malformed one)
        if not isinstance(data, (str, bytes)):
            # Engine.IO reads a message that does not start with a digit as JSON, so "4null" arrives as None,
            # which python-socketio took for an event without data (a traceback at ERROR; found by
            # tests/test_fuzz.py). A Socket.IO packet is text starting with its type's digit, or binary.
            log.warning("malformed Socket.IO packet from %s: JSON %s, not a packet; disconnecting it",
                        eio_sid, type(data).__name__)
            self._binary_packet.pop(eio_sid, None)
            await self.eio.disconnect(eio_sid)
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except KeyError:
            if eio_sid in self.environ:
                raise
            # closed while this packet was being handled: nothing to answer
        except MalformedPacket as exc:
            self._binary_packet.pop(eio_sid, None)
            log.warning("malformed Socket.IO packet from %s: %s; disconnecting it", eio_sid, exc)
            await self.eio.disconnect(eio_sid)
        except ValueError as exc:
            if str(exc) != "Unexpected binary packet":  # python-socketio's own check: a binary packet before CONNECT
                raise
            log.warning("binary packet before connecting from %s; disconnecting it", eio_sid)
            await self.eio.disconnect(eio_sid)


class _WholeBody:
    """``request.content`` for Engine.IO whose ``read(n)`` returns all ``n`` bytes.

    python-engineio 4.15 reads a long-polling POST with a single ``read(CONTENT_LENGTH)``,
    which aiohttp may answer with fewer bytes: packets past ~200 KiB (a bot_event with a
    snapshot) were cut and failed to decode.
    """

    def __init__(self, content: Any) -> None:
        self._content = content

    async def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return await self._content.read()
        try:
            return await self._content.readexactly(n)
        except asyncio.IncompleteReadError as e:
            return e.partial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._content, name)


def _read_polling_bodies_whole(sio: socketio.AsyncServer) -> None:
    eio = sio.eio
    original = eio._async["translate_request"]

    def translate_request(request: web.Request) -> dict:
        environ = original(request)
        environ["wsgi.input"] = _WholeBody(environ["wsgi.input"])
        return environ

    eio._async = {**eio._async, "translate_request": translate_request}  # a copy: the driver's dict is shared


def _cors_origins(settings: Settings) -> list[str] | None:
    """None: Engine.IO's same-origin check; with a public URL, that origin and the local one."""
    if not settings.public_url:
        return None
    u = urlsplit(settings.public_url)
    return [f"{u.scheme}://{u.netloc}", f"http://{settings.host}:{settings.port}"]


def create_app(settings: Settings, store: Store, *, bots: Bots | None = None,
               reports: Reports | None = None, webhooks: Webhooks | None = None) -> web.Application:
    """The aiohttp app with the API, the pages and the Socket.IO server mounted on it.

    Without `bots` or `reports` their routes answer 503. `bot.app` builds it with the real ones.
    """
    secret = settings.ensure_secret()
    _quiet_client_http_errors()
    app = web.Application(client_max_size=MAX_TRANSPORT, middlewares=[api.error_middleware])
    manager = socketio.AsyncRedisManager(settings.redis_url, channel="proctor:socketio") \
        if settings.redis_url else None  # emits reach the sockets of every signaling node
    sio = _Server(
        client_manager=manager,
        async_mode="aiohttp",
        serializer=_Packet,
        max_http_buffer_size=MAX_TRANSPORT,
        cors_allowed_origins=_cors_origins(settings),
        logger=False,
        engineio_logger=_ClientFaults(logging.getLogger("engineio.server")),
    )
    _read_polling_bodies_whole(sio)
    hub = Hub(sio, store, secret, settings=settings, webhooks=webhooks, redis_url=settings.redis_url)
    app[api.SETTINGS] = settings
    app[api.STORE] = store
    app[api.SECRET] = secret
    app[api.OPERATORS] = Operators(store, env_key=settings.api_key, per_minute=settings.create_rate)
    if bots is not None:
        app[api.BOTS] = bots
    if reports is not None:
        app[api.REPORTS] = reports
    if webhooks is not None:
        app[api.WEBHOOKS] = webhooks
    app[api.HUB] = hub
    app[api.ENDING] = set()
    app[SIO] = sio
    sio.attach(app)
    api.add_routes(app)
    app.router.add_get("/", start_page)
    app.router.add_get("/interview/{id}", interview_page)
    app.router.add_get("/interview/{id}/monitor", interview_page)
    app.router.add_get("/static/vendor/socket.io.min.js", socket_io_js)
    app.router.add_get("/static/{path:.+}", static_file)

    async def on_startup(app: web.Application) -> None:
        await hub.roster.start()

    async def on_shutdown(app: web.Application) -> None:
        await hub.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
