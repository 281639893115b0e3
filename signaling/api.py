"""The HTTP API (aiohttp): interviews, bot invitation, events, reviews, reports.

JSON in and out. Creating an interview needs an operator API key (``Authorization: Bearer <key>``,
`signaling.operators`; 401 without a valid one, 429 past the key's rate); everything else an interview's
token (``Authorization: Bearer <token>`` or ``?token=``).
401 missing/forged/expired token, 403 wrong role or other interview, 404 unknown
interview, 400 bad body, 413 oversized body, 503 when a collaborator (bots, reports)
is not configured or the machine is at capacity. Unexpected exceptions become a
logged 500 with a JSON body; bad input is rejected before it can get there.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from bot.analysis.events import REVIEW_STATES, catalogue_json
from bot.analysis.policy import Policy, PolicyError
from bot.common import jsonable
from bot.ports import Bots, CallUnreachable, Capacity, Reports, Store, StoreUnavailable, UnknownInterview, Webhooks
from bot.rooms import Room, RoomError, parse_room, public_room
from bot.settings import Settings
from signaling import tokens
from signaling.operators import Operator, OperatorAuthError, Operators, RateLimited
from signaling.tokens import Claims, TokenError

log = logging.getLogger("signaling.api")

MAX_BODY = 64 * 1024  # bytes of a JSON request body
MAX_NAME = 200
MAX_EMAIL = 254
MAX_NOTE = 2000

DEFAULT_NAMES = {"interviewer": "Interviewer", "candidate": "Candidate", "bot": "Proctor bot"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@" + _LABEL + r"(?:\." + _LABEL + r")*$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Hub(Protocol):
    """What the API needs from the Socket.IO side (`signaling.server.Hub`)."""

    async def close_interview(self, interview_id: str) -> None: ...
    async def bot_failed(self, interview_id: str, reason: str) -> None: ...
    async def flush_events(self) -> None: ...


SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
SECRET = web.AppKey("secret", str)
BOTS = web.AppKey("bots", Bots)  # absent: no bot on this server, its routes answer 503
REPORTS = web.AppKey("reports", Reports)  # absent: its routes answer 503
HUB = web.AppKey("hub", Hub)
OPERATORS = web.AppKey("operators", Operators)
WEBHOOKS = web.AppKey("webhooks", Webhooks)  # absent: no webhooks configured
READER_TTL = 7 * 24 * 3600  # seconds the read-only links in webhook deliveries stay valid
READ_ROLES = ("interviewer", "reader")
ENDING = web.AppKey("ending", set[str])


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps, headers=headers)


def error(status: int, message: str, **headers: str) -> web.HTTPException:
    """An HTTP error with a JSON body ``{"error": message}``, ready to raise."""
    exc = web.HTTPException(text=_dumps({"error": message}), content_type="application/json", headers=headers)
    exc.set_status(status)
    return exc


# --- middleware ----------------------------------------------------------------------

@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """JSON bodies for API errors; unexpected exceptions become a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if (
            request.path.startswith("/api/")
            and exc.status >= 400
            and exc.content_type != "application/json"
        ):
            return json_response({"error": exc.reason or "error"}, status=exc.status)
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, StoreUnavailable):  # the database is away
            log.warning("%s %s: %s", request.method, request.path, exc)
            return json_response({"error": "the database is unavailable; try again shortly"}, status=503)
        log.exception("unexpected error in %s %s", request.method, request.path)
        if request.path.startswith("/api/") or request.path.startswith("/socket.io"):
            return json_response({"error": "internal server error"}, status=500)
        return web.Response(status=500, text="internal server error")


# --- request helpers -----------------------------------------------------------------

def request_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = request.query.get("token")
    return token or None


def authenticate(request: web.Request, roles: tuple[str, ...] = ("interviewer",)) -> Claims:
    """The token's claims if it may act on the interview in the path; else 401/403."""
    token = request_token(request)
    if token is None:
        raise error(401, "missing token", **{"WWW-Authenticate": "Bearer"})
    try:
        claims = tokens.verify(request.app[SECRET], token)
    except TokenError as e:
        raise error(401, f"invalid token: {e.reason}", **{"WWW-Authenticate": "Bearer"}) from None
    if claims.role not in roles:
        raise error(403, f"this needs a token of role {' or '.join(roles)}, not {claims.role}")
    if claims.interview_id != request.match_info.get("id"):
        raise error(403, "the token is for another interview")
    return claims


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


async def operator(request: web.Request) -> Operator:
    """The operator whose API key the request carries (header only: a key never goes in a URL); else 401."""
    try:
        return await request.app[OPERATORS].authenticate(_bearer(request))
    except OperatorAuthError as e:
        raise error(401, str(e), **{"WWW-Authenticate": "Bearer"}) from None


async def interview_or_404(request: web.Request, interview_id: str) -> dict:
    interview = await request.app[STORE].get_interview(interview_id)
    if interview is None:
        raise error(404, "unknown interview")
    return interview


def collaborator(request: web.Request, key: web.AppKey, what: str) -> Any:
    obj = request.app.get(key)
    if obj is None:
        raise error(503, f"{what} not available on this server")
    return obj


async def read_json(request: web.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 if not a JSON object."""
    if request.content_length is not None and request.content_length > limit:
        raise error(413, f"body larger than {limit // 1024} KiB")
    body = bytearray()
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        body += chunk
        if len(body) > limit:
            raise error(413, f"body larger than {limit // 1024} KiB")
    if not body.strip():
        raise error(400, "body must be a JSON object")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise error(400, "body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise error(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise error(400, "body must be a JSON object")
    _valid_text(data, "body")
    return data


def _valid_text(value: Any, path: str, depth: int = 0) -> None:
    """400 naming the field for text no database stores: a lone surrogate (``"\\ud800"`` is valid JSON) or a key
    with NUL or starting with ``$``."""
    if depth > 64:
        raise error(400, "body is nested too deeply")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise error(400, f"{path} must be valid Unicode text (no lone surrogates)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _valid_text(k, f"{path} key {k[:32]!r}", depth + 1)
            if "\x00" in k or k.startswith("$"):
                raise error(400, f"{path} has an invalid key {k[:32]!r} (with NUL or starting with $)")
            _valid_text(v, k[:50] if path == "body" else f"{path}.{k[:32]}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _valid_text(v, f"{path}[{i}]", depth + 1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(k for k in data if k not in allowed)
    if unknown:
        raise error(400, f"unknown field {unknown[0][:50]!r} (allowed: {', '.join(allowed)})")


def _text(data: dict[str, Any], key: str, limit: int, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise error(400, f"{key} must be a string")
    value = value.strip()
    if required and not value:
        raise error(400, f"{key} must not be empty")
    if len(value) > limit:
        raise error(400, f"{key} is longer than {limit} characters")
    if _CONTROL.search(value) and key != "note":
        raise error(400, f"{key} must not contain control characters")
    return value


def valid_email(value: str) -> bool:
    return len(value) <= MAX_EMAIL and _EMAIL.match(value) is not None and ".." not in value


def parse_policy(value: Any) -> dict | None:
    """The policy overrides as given, if `Policy.from_dict` accepts them; else 400."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise error(400, "policy must be a JSON object")
    try:
        Policy.from_dict(value)
    except PolicyError as e:
        raise error(400, str(e)) from None
    except (ValueError, TypeError, OverflowError, RecursionError, AttributeError) as e:
        raise error(400, f"invalid policy: {e}") from None
    return value


def parse_room_field(value: Any) -> Room | None:
    """The call's place on another platform (`bot.rooms.parse_room`), None for the built-in call; else 400
    naming the field (``room.url must be ...``). The message never quotes the value (it may be a secret)."""
    if value is None:
        return None
    try:
        return parse_room(value)
    except RoomError as e:
        raise error(400, str(e)) from None


def public_interview(interview: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of an interview: no secrets (the room's pin or bearer token), no internals."""
    keys = ("id", "candidate_name", "status", "created_at", "started_at", "ended_at")
    return {**{k: interview.get(k) for k in keys}, "room": public_room(interview.get("room"))}


def _base_url(request: web.Request) -> str:
    return request.app[SETTINGS].base_url


def page_url(request: web.Request, interview_id: str, token: str, page: str = "") -> str:
    """The web page for a token: ``/interview/{id}``, or with `page` ``/interview/{id}/{page}`` (``monitor``)."""
    suffix = f"/{page}" if page else ""
    return f"{_base_url(request)}/interview/{quote(interview_id, safe='')}{suffix}?token={token}"


def reader_links(settings: Settings, secret: str, interview_id: str) -> tuple[str, str]:
    """(the interview's API base URL, ``?token=`` with a read-only token) for links in webhook deliveries."""
    token = tokens.issue(secret, interview_id, "reader", READER_TTL)
    return f"{settings.base_url}/api/interviews/{quote(interview_id, safe='')}", f"?token={token}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- handlers --------------------------------------------------------------------------

async def create_interview(request: web.Request) -> web.Response:
    who = await operator(request)
    data = await read_json(request)
    _only(data, ("candidate_name", "interviewer_email", "policy", "room"))
    name = _text(data, "candidate_name", MAX_NAME)
    email = _text(data, "interviewer_email", MAX_EMAIL)
    assert name is not None and email is not None
    if not valid_email(email):
        raise error(400, "interviewer_email is not a valid email address")
    policy = parse_policy(data.get("policy"))
    room = parse_room_field(data.get("room"))
    try:
        request.app[OPERATORS].take(who)  # counts creations only: a rejected body costs nothing
    except RateLimited as e:
        raise error(429, str(e), **{"Retry-After": str(e.retry_after)}) from None
    interview = await request.app[STORE].create_interview(
        candidate_name=name, interviewer_email=email, policy=policy,
        room=room.stored() if room is not None else None)
    iid = str(interview["id"])
    settings = request.app[SETTINGS]
    secret = request.app[SECRET]
    ttl = settings.token_ttl
    interviewer = tokens.issue(secret, iid, "interviewer", ttl, name=DEFAULT_NAMES["interviewer"])
    if room is not None:
        # the call is on another platform: the interviewer watches alerts on the monitor page (no call here),
        # and the candidate joins that platform, not a page of this server
        log.info("interview %s created with the operator key %r (call on %s)", iid, who.name, room.kind)
        monitor = page_url(request, iid, interviewer, "monitor")
        return json_response({"id": iid, "room": room.public(), "interviewer_url": monitor, "monitor_url": monitor},
                             status=201)
    candidate = tokens.issue(secret, iid, "candidate", ttl, name=name)
    log.info("interview %s created with the operator key %r", iid, who.name)
    return json_response({
        "id": iid,
        "interviewer_url": page_url(request, iid, interviewer),
        "candidate_url": page_url(request, iid, candidate),
        "monitor_url": page_url(request, iid, interviewer, "monitor"),
    }, status=201)


async def get_interview(request: web.Request) -> web.Response:
    """The interview as the interviewer may see it (`public_interview`: no pin, no bearer token)."""
    authenticate(request)
    iid = request.match_info["id"]
    return json_response(public_interview(await interview_or_404(request, iid)))


async def invite_bot(request: web.Request) -> web.Response:
    authenticate(request)
    iid = request.match_info["id"]
    bots = collaborator(request, BOTS, "the proctoring bot is")
    interview = await interview_or_404(request, iid)
    if interview.get("status") == "ended":
        raise error(409, "the interview has ended")
    if await bots.is_present(iid):
        return json_response({"status": "present"})
    if interview.get("room") and not interview.get("started_at"):
        # no candidate joins this server: the call's clock (event times, the report's span) starts with the bot
        started = {"started_at": _now().isoformat(), "status": "live"}
        await request.app[STORE].update_interview(iid, **started)
        interview = {**interview, **started}
    settings = request.app[SETTINGS]
    bot_token = tokens.issue(request.app[SECRET], iid, "bot", settings.token_ttl, name=DEFAULT_NAMES["bot"])
    try:
        await bots.invite(interview, bot_token, settings.base_url)
    except Capacity as e:
        raise error(503, str(e) or "all bots are busy; try again later") from None
    except CallUnreachable as e:  # the other platform refused or is away
        log.warning("interview %s: %s", iid, e)
        raise error(502, str(e)) from None
    return json_response({"status": "invited"}, status=202)


async def end_interview(request: web.Request) -> web.Response:
    authenticate(request)
    iid = request.match_info["id"]
    bots = collaborator(request, BOTS, "the proctoring bot is")
    reports = collaborator(request, REPORTS, "reports are")
    interview = await interview_or_404(request, iid)
    ending: set[str] = request.app[ENDING]
    if interview.get("status") == "ended" or iid in ending:
        raise error(409, "the interview has already ended")
    ending.add(iid)
    try:
        await bots.end(iid)
        await request.app[HUB].flush_events()  # the events the bot closed on leaving are stored
        await request.app[STORE].update_interview(iid, status="ended", ended_at=_now().isoformat())
        summary = await reports.finish(iid)
    finally:
        ending.discard(iid)
    await _notify_ended(request, iid, summary)
    return json_response(summary if summary is not None else {"status": "ended"})


async def bot_failed(request: web.Request) -> web.Response:
    """The fleet gave the bot up (it crashed or hung after every restart): the worker says so here, with the
    bot's own token, and the interviewer is told."""
    authenticate(request, roles=("bot",))
    iid = request.match_info["id"]
    data = await read_json(request, limit=4096)
    _only(data, ("reason",))
    reason = _text(data, "reason", 500) or ""
    await interview_or_404(request, iid)
    log.error("interview %s: the proctoring bot failed and was given up: %s", iid, reason)
    await request.app[STORE].update_interview(iid, bot_failed={"reason": reason, "at": _now().isoformat()})
    await request.app[HUB].bot_failed(iid, reason)
    return web.Response(status=204)


async def _notify_ended(request: web.Request, iid: str, summary: dict[str, Any] | None) -> None:
    """Queue the ``interview.ended`` webhook (a durable outbox write; the sender posts it later)."""
    webhooks = request.app.get(WEBHOOKS)
    if webhooks is None:
        return
    base, query = reader_links(request.app[SETTINGS], request.app[SECRET], iid)
    s = summary or {}
    data: dict[str, Any] = {"interview_id": iid, "ended_at": _now().isoformat()}
    data.update({k: s[k] for k in ("score", "risk", "needs_review", "events", "coverage") if k in s})
    data["report_url"] = f"{base}/report.pdf{query}"
    data["report_json_url"] = f"{base}/report.json{query}"
    try:
        await webhooks.send("interview.ended", data, key=f"interview.ended:{iid}")
    except Exception:  # the interview has ended all the same; the error says what was lost
        log.exception("could not queue the interview.ended webhook of interview %s", iid)


async def list_events(request: web.Request) -> web.Response:
    authenticate(request, READ_ROLES)
    iid = request.match_info["id"]
    await interview_or_404(request, iid)
    events = await request.app[STORE].list_events(iid, snapshots=True)
    return json_response({"events": [{**e.to_dict(), "has_snapshot": e.snapshot is not None} for e in events]})


def _event_id(request: web.Request) -> str:
    eid = request.match_info["event_id"]
    if not _EVENT_ID.fullmatch(eid):
        raise error(404, "unknown event")
    return eid


async def get_snapshot(request: web.Request) -> web.Response:
    authenticate(request, READ_ROLES)
    iid = request.match_info["id"]
    eid = _event_id(request)
    await interview_or_404(request, iid)
    jpeg = await request.app[STORE].get_snapshot(iid, eid)
    if not jpeg:
        raise error(404, "no snapshot for this event")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def review_event(request: web.Request) -> web.Response:
    claims = authenticate(request)
    iid = request.match_info["id"]
    eid = _event_id(request)
    await interview_or_404(request, iid)
    data = await read_json(request)
    _only(data, ("review", "note"))
    state = data.get("review")
    if not isinstance(state, str) or state not in REVIEW_STATES:
        raise error(400, f"review must be one of {', '.join(REVIEW_STATES)}")
    note = _text(data, "note", MAX_NOTE, required=False) or ""
    event = await request.app[STORE].review_event(
        iid, eid, state=state, by=claims.name or claims.role, note=note)
    if event is None:
        raise error(404, "unknown event")
    return json_response(event.to_dict())


async def _report(request: web.Request) -> tuple[str, Any]:
    authenticate(request, READ_ROLES)
    iid = request.match_info["id"]
    reports = collaborator(request, REPORTS, "reports are")
    await interview_or_404(request, iid)
    return iid, reports


def _attachment(iid: str, ext: str) -> dict[str, str]:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", iid)[:64]
    return {"Content-Disposition": f'attachment; filename="interview-{safe}.{ext}"', "Cache-Control": "no-store"}


async def _build(coro: Awaitable[Any]) -> Any:
    try:
        return await coro
    except UnknownInterview:  # deleted while the report was being built
        raise error(404, "unknown interview") from None


async def report_pdf(request: web.Request) -> web.Response:
    iid, reports = await _report(request)
    body = await _build(reports.pdf(iid))
    return web.Response(body=body, content_type="application/pdf", headers=_attachment(iid, "pdf"))


async def report_csv(request: web.Request) -> web.Response:
    iid, reports = await _report(request)
    text = await _build(reports.csv(iid))
    return web.Response(text=text, content_type="text/csv", charset="utf-8", headers=_attachment(iid, "csv"))


async def report_json(request: web.Request) -> web.Response:
    iid, reports = await _report(request)
    return json_response(await _build(reports.json(iid)))


async def delete_interview(request: web.Request) -> web.Response:
    authenticate(request)
    iid = request.match_info["id"]
    await interview_or_404(request, iid)
    bots = request.app.get(BOTS)
    if bots is not None and await bots.is_present(iid):
        await bots.end(iid)
    hub = request.app.get(HUB)
    if hub is not None:
        await hub.close_interview(iid)
    deleted = await request.app[STORE].delete_interview(iid)
    log.info("interview %s deleted", iid)
    return json_response({"deleted": bool(deleted)})


async def catalogue(request: web.Request) -> web.Response:
    """Every event type with its title, severity and colour (the interviewer's page shows them so)."""
    return json_response({"events": catalogue_json()}, headers={"Cache-Control": "public, max-age=3600"})


async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", health)
    r.add_post("/api/interviews", create_interview)
    r.add_get("/api/interviews/{id}", get_interview)
    r.add_post("/api/interviews/{id}/bot", invite_bot)
    r.add_post("/api/interviews/{id}/bot/failed", bot_failed)
    r.add_post("/api/interviews/{id}/end", end_interview)
    r.add_get("/api/interviews/{id}/events", list_events)
    r.add_get("/api/interviews/{id}/events/{event_id}/snapshot", get_snapshot)
    r.add_patch("/api/interviews/{id}/events/{event_id}", review_event)
    r.add_get("/api/interviews/{id}/report.pdf", report_pdf)
    r.add_get("/api/interviews/{id}/report.csv", report_csv)
    r.add_get("/api/interviews/{id}/report.json", report_json)
    r.add_delete("/api/interviews/{id}", delete_interview)
    r.add_get("/api/catalogue", catalogue)
