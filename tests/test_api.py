"""The HTTP API on a real aiohttp server with the real Store (SecantusDB)."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.analysis.events import Event
from signaling import api, tokens
from signaling.server import SOCKET_IO_JS, WEB_DIR
from tests.support.clients import Peer, http, outbox_mails, pdf_text, peers, served

JPEG = b"\xff\xd8\xff\xe0" + b"\x01" * 64


@pytest.fixture
async def srv(settings, store):
    """The server with the real bot worker and reports (mail into ``settings.outbox``)."""
    async with served(settings, store, bots=True, reports=True) as s:
        yield s


async def create(srv, body=None) -> dict:
    status, data, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator, json=body or {
        "candidate_name": "Cory Candidate", "interviewer_email": "iris@example.com"})
    assert status == 201, data
    return data


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def roles(participants: dict) -> list[str]:
    return sorted(p["role"] for p in participants["participants"])


def bots_in(participants: dict) -> list[dict]:
    return [p for p in participants["participants"] if p["role"] == "bot"]


async def watch(made: list[Peer], srv, iid: str) -> Peer:
    """An interviewer's Socket.IO client in the call, to see who is there."""
    p = Peer()
    made.append(p)
    await p.connect(srv.url, srv.token(iid, "interviewer"))
    await p.until("participants", lambda d: roles(d) == ["interviewer"])
    return p


async def invite_and_see_the_bot(srv, iid: str, interviewer: Peer) -> dict:
    """POST /bot; the real bot joins the call: its entry in the interviewer's participants list."""
    status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                 headers=bearer(srv.token(iid, "interviewer")))
    assert status == 202 and data == {"status": "invited"}, data
    got = await interviewer.until("participants", bots_in, timeout=15)
    (bot,) = bots_in(got)
    assert srv.bots.running(iid)
    return bot


# --- create + pages ---------------------------------------------------------------------------

async def test_create_interview_returns_working_links(srv):
    data = await create(srv, {"candidate_name": "  Ada Lovelace ", "interviewer_email": "iris@example.com",
                              "policy": {"rules": {"looking_away": {"dwell": 5}}}})
    iid = data["id"]
    stored = await srv.store.get_interview(iid)
    assert stored["candidate_name"] == "Ada Lovelace"
    assert stored["interviewer_email"] == "iris@example.com"
    assert stored["policy"] == {"rules": {"looking_away": {"dwell": 5}}}
    for key, role in (("interviewer_url", "interviewer"), ("candidate_url", "candidate")):
        url = data[key]
        assert url.startswith(f"{srv.url}/interview/{iid}?token=")
        claims = tokens.verify(srv.secret, token_of(url))
        assert (claims.interview_id, claims.role) == (iid, role)
    assert tokens.verify(srv.secret, token_of(data["candidate_url"])).name == "Ada Lovelace"

    status, page, headers = await http("GET", data["candidate_url"])
    assert status == 200 and page == (WEB_DIR / "candidate.html").read_text()
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    status, page, _ = await http("GET", data["interviewer_url"])
    assert status == 200 and page == (WEB_DIR / "interviewer.html").read_text()


async def test_page_refuses_bad_tokens(srv):
    iid = (await create(srv))["id"]
    other = (await create(srv))["id"]
    cases = [
        (None, 401),
        ("garbage", 401),
        (tokens.issue("another-secret", iid, "candidate", 60), 401),
        (srv.token(iid, "candidate", ttl=-5), 401),
        (srv.token(iid, "bot"), 403),
        (srv.token(other, "interviewer"), 403),
    ]
    for tok, expected in cases:
        params = {"token": tok} if tok else {}
        status, body, _ = await http("GET", f"{srv.url}/interview/{iid}", params=params)
        assert status == expected, (tok, status, body)
    status, body, _ = await http("GET", f"{srv.url}/interview/nope", params={"token": srv.token("nope", "candidate")})
    assert status == 404 and "does not exist" in body


async def test_static_files_and_no_escape(srv):
    status, js, headers = await http("GET", srv.url + "/static/vendor/socket.io.min.js")
    assert status == 200
    assert (js if isinstance(js, bytes) else js.encode()) == SOCKET_IO_JS.read_bytes()
    assert "javascript" in headers["Content-Type"]
    status, css, _ = await http("GET", srv.url + "/static/style.css")
    assert status == 200 and css == (WEB_DIR / "style.css").read_text()
    for path in ("/static/node_modules/socket.io-client/package.json", "/static/package.json",
                 "/static/package-lock.json", "/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml",
                 "/static/.hidden", "/static/missing.js", "/static/vendor/other.js"):
        status, _, _ = await http("GET", srv.url + path)
        assert status == 404, path


# --- bad bodies: 400, 413, never 500 -----------------------------------------------------------

BAD_CREATE_BODIES = [
    (b"", "JSON object"),
    (b"not json", "not valid JSON"),
    (b"{'single': 'quotes'}", "not valid JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b'"a string"', "JSON object"),
    (b"42", "JSON object"),
    (b"null", "JSON object"),
    (b"{}", "candidate_name"),
    (b'{"candidate_name": "x"}', "interviewer_email"),
    (b'{"candidate_name": 5, "interviewer_email": "a@b.co"}', "candidate_name must be a string"),
    (b'{"candidate_name": ["x"], "interviewer_email": "a@b.co"}', "candidate_name must be a string"),
    (b'{"candidate_name": "   ", "interviewer_email": "a@b.co"}', "must not be empty"),
    (b'{"candidate_name": "x", "interviewer_email": ""}', "must not be empty"),
    (b'{"candidate_name": "x", "interviewer_email": "nope"}', "not a valid email"),
    (b'{"candidate_name": "x", "interviewer_email": "a@@b.co"}', "not a valid email"),
    (b'{"candidate_name": "x", "interviewer_email": "a b@c.co"}', "not a valid email"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co\\r\\nBcc: evil@x.co"}', "control characters"),
    (b'{"candidate_name": "x", "interviewer_email": "a@-b.co"}', "not a valid email"),
    (b'{"candidate_name": "x", "interviewer_email": {"a": 1}}', "must be a string"),
    (b'{"candidate_name": "a\\u0000b", "interviewer_email": "a@b.co"}', "control characters"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "admin": true}', "unknown field 'admin'"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": [1]}', "policy must be a JSON object"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": "strict"}', "policy must be a JSON object"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"foo": 1}}', "unknown key policy.foo"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"sampling": {"face_fps": "fast"}}}',
     "policy.sampling.face_fps must be a number"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"sampling": {"face_fps": 1e400}}}',
     "sampling.face_fps must be in"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"sampling": {"face_fps": NaN}}}',
     "not valid JSON"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"sampling": {"face_fps": 1'
     + b"0" * 400 + b"}}}", "invalid policy"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"rules": {"nap": {}}}}', "unknown rule"),
    (b'{"candidate_name": "x", "interviewer_email": "a@b.co", "policy": {"rules": {"face_missing": {"min_samples": 0}}}}',
     "min_samples must be >= 1"),
    (b'{"candidate_name": 1' + b"0" * 5000 + b', "interviewer_email": "a@b.co"}', "not valid JSON"),
    (b"[" * 20000 + b"]" * 20000, "not valid JSON"),
    (b'{"candidate_name": "\xff\xfe", "interviewer_email": "a@b.co"}', "not UTF-8"),
]


async def test_create_rejects_bad_bodies(srv):
    # one server for all cases (each database fixture costs seconds)
    for body, needle in BAD_CREATE_BODIES:
        status, data, _ = await http("POST", srv.url + "/api/interviews", data=body,
                                     headers={"Content-Type": "application/json", **srv.operator})
        assert status == 400, (body[:80], status, data)
        assert isinstance(data, dict) and needle in data["error"], (body[:80], data)


async def test_create_rejects_huge_strings_and_oversized_bodies(srv):
    status, data, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator,
                                 json={"candidate_name": "x" * 5000, "interviewer_email": "a@b.co"})
    assert status == 400 and "longer than 200" in data["error"]
    status, data, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator,
                                 json={"candidate_name": "x", "interviewer_email": "a" * 300 + "@b.co"})
    assert status == 400
    status, data, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator,
                                 json={"candidate_name": "x" * (200 * 1024), "interviewer_email": "a@b.co"})
    assert status == 413 and "larger than 64 KiB" in data["error"]

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b" " * 8192

    status, data, _ = await http("POST", srv.url + "/api/interviews", data=chunks(), headers=srv.operator)
    assert status == 413 and "error" in data


async def test_random_junk_never_causes_500(srv, caplog):
    import random
    rnd = random.Random(7)
    iid = (await create(srv))["id"]
    tok = srv.token(iid, "interviewer")
    event = Event(type="face_missing", start=1.0, end=2.0, confidence=0.9, interview_id=iid)
    await srv.store.save_event(event)
    values = [None, True, 0, -1, 1.5, "", "x" * 300, [], {}, [1, {"a": None}], {"$gt": ""}, {"$where": "1"}]
    keys = ["candidate_name", "interviewer_email", "policy", "review", "note", "$set", "", "x" * 100]
    with caplog.at_level(logging.ERROR, logger="signaling"):
        for _ in range(60):
            body = {rnd.choice(keys): rnd.choice(values) for _ in range(rnd.randint(0, 4))}
            for method, path, auth in (("POST", "/api/interviews", srv.operator),
                                       ("PATCH", f"/api/interviews/{iid}/events/{event.id}", bearer(tok))):
                status, data, _ = await http(method, srv.url + path, json=body, headers=auth)
                assert status in (200, 201, 400), (method, body, status, data)
                assert isinstance(data, dict)
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]


# --- auth -------------------------------------------------------------------------------------

async def test_every_interviewer_route_checks_the_token(srv):
    iid = (await create(srv))["id"]
    other = (await create(srv))["id"]
    routes = [
        ("POST", f"/api/interviews/{iid}/bot"),
        ("POST", f"/api/interviews/{iid}/end"),
        ("GET", f"/api/interviews/{iid}/events"),
        ("PATCH", f"/api/interviews/{iid}/events/abc"),
        ("GET", f"/api/interviews/{iid}/events/abc/snapshot"),
        ("GET", f"/api/interviews/{iid}/report.pdf"),
        ("GET", f"/api/interviews/{iid}/report.csv"),
        ("GET", f"/api/interviews/{iid}/report.json"),
        ("DELETE", f"/api/interviews/{iid}"),
    ]
    cases = [
        ({}, 401, "missing token"),
        (bearer("forged.token"), 401, "invalid token"),
        (bearer(tokens.issue("wrong-secret", iid, "interviewer", 60)), 401, "bad signature"),
        (bearer(srv.token(iid, "interviewer", ttl=-1)), 401, "expired"),
        ({"Authorization": f"Basic {srv.token(iid, 'interviewer')}"}, 401, "missing token"),
        (bearer(srv.token(iid, "candidate")), 403, "role interviewer"),
        (bearer(srv.token(iid, "bot")), 403, "role interviewer"),
        (bearer(srv.token(other, "interviewer")), 403, "another interview"),
    ]
    for method, path in routes:
        for headers, expected, needle in cases:
            status, data, h = await http(method, srv.url + path, headers=headers, json={"review": "confirmed"})
            assert status == expected, (method, path, headers, status, data)
            assert needle in data["error"], data
            if expected == 401:
                assert h["WWW-Authenticate"] == "Bearer"
    # nothing happened on the way: no bot started, nothing ended or mailed, nothing deleted or reviewed
    assert srv.bots.sessions == {} and not srv.bots.running(iid)
    stored = await srv.store.get_interview(iid)
    assert stored is not None and stored["status"] != "ended" and not stored.get("ended_at")
    assert not stored.get("report_sent_at") and outbox_mails(srv.settings) == []
    assert await srv.store.audit_log(iid) == []


async def test_token_in_query_works_like_bearer(srv):
    iid = (await create(srv))["id"]
    tok = srv.token(iid, "interviewer")
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events", params={"token": tok})
    assert status == 200 and data == {"events": []}
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events",
                                 params={"token": srv.token(iid, "candidate")})
    assert status == 403


async def test_unknown_interview_is_404_with_a_valid_token(srv):
    tok = srv.token("0" * 24, "interviewer")
    for method, suffix in (("GET", "/events"), ("POST", "/bot"), ("POST", "/end"), ("GET", "/report.pdf"),
                           ("DELETE", "")):
        status, data, _ = await http(method, f"{srv.url}/api/interviews/{'0' * 24}{suffix}", headers=bearer(tok))
        assert status == 404 and data == {"error": "unknown interview"}, (suffix, status, data)


async def test_unknown_routes_and_methods_answer_json(srv):
    status, data, _ = await http("GET", srv.url + "/api/nothing-here")
    assert status == 404 and "error" in data
    status, data, _ = await http("PUT", srv.url + "/api/interviews")
    assert status == 405 and "error" in data


# --- events, review, snapshot ---------------------------------------------------------------------

async def test_events_review_and_snapshot(srv):
    iid = (await create(srv))["id"]
    tok = srv.token(iid, "interviewer")
    first = Event(type="looking_away", start=2.0, end=6.0, confidence=0.8, interview_id=iid, snapshot=JPEG)
    second = Event(type="tab_hidden", start=9.0, end=None, confidence=1.0, interview_id=iid)
    await srv.store.save_event(second)
    await srv.store.save_event(first)

    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events", headers=bearer(tok))
    assert status == 200
    assert [e["id"] for e in data["events"]] == [first.id, second.id]  # ordered by start
    assert data["events"][0]["type"] == "looking_away" and "snapshot" not in data["events"][0]
    assert [e["has_snapshot"] for e in data["events"]] == [True, False]

    status, body, headers = await http("GET", f"{srv.url}/api/interviews/{iid}/events/{first.id}/snapshot",
                                       params={"token": tok})
    assert status == 200 and body == JPEG and headers["Content-Type"] == "image/jpeg"
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events/{second.id}/snapshot",
                                 headers=bearer(tok))
    assert status == 404

    url = f"{srv.url}/api/interviews/{iid}/events/{first.id}"
    for body, needle in (({"review": "maybe"}, "review must be one of"), ({}, "review must be one of"),
                         ({"review": ["confirmed"]}, "review must be one of"),
                         ({"review": "confirmed", "note": 5}, "note must be a string"),
                         ({"review": "confirmed", "note": "n" * 3000}, "longer than 2000"),
                         ({"review": "confirmed", "by": "someone"}, "unknown field")):
        status, data, _ = await http("PATCH", url, json=body, headers=bearer(tok))
        assert status == 400 and needle in data["error"], (body, data)

    status, data, _ = await http("PATCH", url, json={"review": "dismissed", "note": "false alarm"},
                                 headers=bearer(tok))
    assert status == 200 and data["id"] == first.id and data["review"] == "dismissed"
    stored = {e.id: e for e in await srv.store.list_events(iid)}
    assert stored[first.id].review == "dismissed" and stored[second.id].review is None
    audit = await srv.store.audit_log(iid)
    assert any(a["event_id"] == first.id and a.get("note") == "false alarm" for a in audit), audit

    status, data, _ = await http("PATCH", f"{srv.url}/api/interviews/{iid}/events/nosuchevent",
                                 json={"review": "confirmed"}, headers=bearer(tok))
    assert status == 404 and data["error"] == "unknown event"


async def test_events_of_other_interview_stay_hidden(srv):
    a = (await create(srv))["id"]
    b = (await create(srv))["id"]
    await srv.store.save_event(Event(type="face_missing", start=1.0, end=3.0, confidence=1.0, interview_id=b))
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{a}/events", headers=bearer(srv.token(a, "interviewer")))
    assert status == 200 and data == {"events": []}
    status, _, _ = await http("GET", f"{srv.url}/api/interviews/{b}/events", headers=bearer(srv.token(a, "interviewer")))
    assert status == 403


# --- bot, end, reports, delete ---------------------------------------------------------------------

async def test_invite_bot_joins_the_call_with_a_bot_token(srv):
    iid = (await create(srv))["id"]
    async with peers() as made:
        interviewer = await watch(made, srv, iid)
        bot = await invite_and_see_the_bot(srv, iid, interviewer)
        assert bot["name"] == "Proctor bot"
        session = srv.bots.sessions[iid]
        assert bot["sid"] == session.peer.sid
        assert session.interview["id"] == iid and session.peer.server_url == srv.url
        claims = tokens.verify(srv.secret, session.peer.bot_token)
        assert (claims.interview_id, claims.role) == (iid, "bot")
        # already there: not invited twice (the same session, and no second bot replaces it)
        status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                     headers=bearer(srv.token(iid, "interviewer")))
        assert status == 200 and data == {"status": "present"}
        assert list(srv.bots.sessions) == [iid] and srv.bots.sessions[iid] is session
        await asyncio.sleep(0.5)
        assert all([b["sid"] for b in bots_in(d)] == [bot["sid"]] for d in interviewer.drain("participants"))


async def test_invite_at_capacity_is_503(settings, store):
    settings.max_bots = 0  # the real registry's admission control: no call may start
    async with served(settings, store, bots=True, reports=True) as srv:
        assert srv.bots is not None
        iid = await srv.interview()
        async with peers() as made:
            interviewer = await watch(made, srv, iid)
            status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                         headers=bearer(srv.token(iid, "interviewer")))
            assert status == 503 and list(data) == ["error"]
            assert data["error"].startswith("this server analyses at most 0 calls at once"), data
            assert srv.bots.sessions == {} and not srv.bots.running(iid)
            assert await interviewer.nothing("participants", within=0.5)  # no bot joined
            # with a free slot the same invitation gets the bot in
            srv.bots.max_calls = 1
            await invite_and_see_the_bot(srv, iid, interviewer)


async def test_without_bots_or_reports_routes_answer_503(settings, store):
    async with served(settings, store) as srv:
        iid = await srv.interview()
        h = bearer(srv.token(iid, "interviewer"))
        for method, suffix, needle in (("POST", "/bot", "bot"), ("POST", "/end", "bot"),
                                       ("GET", "/report.pdf", "reports"), ("GET", "/report.csv", "reports"),
                                       ("GET", "/report.json", "reports")):
            status, data, _ = await http(method, f"{srv.url}/api/interviews/{iid}{suffix}", headers=h)
            assert status == 503 and needle in data["error"], (suffix, data)
        # the store-only routes still work
        status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events", headers=h)
        assert status == 200


async def test_end_then_reports_then_delete(srv):
    iid = (await create(srv))["id"]
    h = bearer(srv.token(iid, "interviewer"))
    ev = Event(type="multiple_faces", start=4.0, end=8.0, confidence=0.7, interview_id=iid)
    await srv.store.save_event(ev)
    async with peers() as made:
        interviewer = await watch(made, srv, iid)
        await invite_and_see_the_bot(srv, iid, interviewer)

        status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end", headers=h)
        assert status == 200, data
        assert set(data) == {"score", "risk", "needs_review", "coverage", "events", "delivery"}
        assert data["events"] == 1 and 0 <= data["score"] < 100 and data["risk"] in ("low", "medium", "high")
        # no SMTP host: the outbox; the answer names no file of the server
        assert data["delivery"] == {"delivered": "outbox", "to": ["iris@example.com"]}
        assert str(srv.settings.data_dir) not in str(data) and ".eml" not in str(data)
        # the bot left the call
        await interviewer.until("participants", lambda d: roles(d) == ["interviewer"], timeout=10)
        assert not srv.bots.running(iid) and srv.bots.sessions == {}
    stored = await srv.store.get_interview(iid)
    assert stored["status"] == "ended" and stored["ended_at"] and stored["report_sent_at"]
    assert stored["report_delivery"] == data["delivery"]  # report.json shows the stored interview: no path either

    # one mail to the interviewer, with the PDF report
    (mail,) = outbox_mails(srv.settings)
    assert mail["To"] == "iris@example.com" and mail["Subject"] == "Proctoring report: Cory Candidate"
    body = mail.get_body(("plain",)).get_content()
    assert f"Integrity score: {data['score']:.1f}/100, risk {data['risk']}" in body
    (attachment,) = mail.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"proctoring-report-{iid}.pdf"
    mailed = attachment.get_content()
    assert mailed.startswith(b"%PDF")
    text = pdf_text(mailed)
    assert "Cory Candidate" in text and "Several faces" in text

    status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end", headers=h)
    assert status == 409 and len(outbox_mails(srv.settings)) == 1
    status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot", headers=h)
    assert status == 409 and srv.bots.sessions == {}

    status, body, headers = await http("GET", f"{srv.url}/api/interviews/{iid}/report.pdf", headers=h)
    assert status == 200 and body.startswith(b"%PDF") and headers["Content-Type"] == "application/pdf"
    assert f'filename="interview-{iid}.pdf"' in headers["Content-Disposition"]
    assert "Several faces" in pdf_text(body)
    status, text, headers = await http("GET", f"{srv.url}/api/interviews/{iid}/report.csv", headers=h)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert f"{ev.id},multiple_faces,4.000,8.000," in text
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/report.json", headers=h)
    assert status == 200 and [e["id"] for e in data["events"]] == [ev.id]
    assert data["interview"]["report_delivery"] == {"delivered": "outbox", "to": ["iris@example.com"]}
    assert str(srv.settings.data_dir) not in str(data)

    status, data, _ = await http("DELETE", f"{srv.url}/api/interviews/{iid}", headers=h)
    assert status == 200 and data == {"deleted": True}
    assert await srv.store.get_interview(iid) is None
    assert await srv.store.list_events(iid) == []
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events", headers=h)
    assert status == 404
    status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/report.json", headers=h)
    assert status == 404


async def test_reports_show_the_stored_events_and_the_review(srv):
    iid = (await create(srv, {"candidate_name": "Zoë Ñúñez", "interviewer_email": "iris@example.com"}))["id"]
    h = bearer(srv.token(iid, "interviewer", name="Iris"))
    face = Event(type="face_missing", start=2.0, end=12.0, confidence=0.9, interview_id=iid, snapshot=JPEG)
    faces = Event(type="multiple_faces", start=4.0, end=8.0, confidence=0.7, interview_id=iid,
                  detail={"faces": 2})
    tab = Event(type="tab_hidden", start=9.0, end=None, confidence=1.0, interview_id=iid)
    for e in (tab, faces, face):
        await srv.store.save_event(e)
    url = f"{srv.url}/api/interviews/{iid}"

    status, body, headers = await http("GET", url + "/report.pdf", headers=h)
    assert status == 200 and headers["Content-Type"] == "application/pdf" and body.startswith(b"%PDF")
    text = pdf_text(body)
    for needle in ("Zoë Ñúñez", "Face missing", "Several faces", "Tab hidden"):
        assert needle in text, (needle, text[:3000])

    status, text, headers = await http("GET", url + "/report.csv", headers=h)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert f'filename="interview-{iid}.csv"' in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    gaps = [r for r in rows if r["type"] == "not_analysed"]  # no bot was ever invited: nothing was watched
    assert [json.loads(r["detail"])["reason"] for r in gaps] == ["bot not invited yet"]
    rows = [r for r in rows if r["type"] != "not_analysed"]
    assert [(r["id"], r["type"], r["start"], r["end"]) for r in rows] == [
        (face.id, "face_missing", "2.000", "12.000"), (faces.id, "multiple_faces", "4.000", "8.000"),
        (tab.id, "tab_hidden", "9.000", "")]
    assert [r["review"] for r in rows] == ["", "", ""] and rows[1]["confidence"] == "0.700"

    status, before, _ = await http("GET", url + "/report.json", headers=h)
    assert status == 200
    assert {"value", "risk", "needs_review", "by_type"} <= set(before["score"])
    assert 0 <= before["score"]["value"] < 100 and before["score"]["risk"] in ("low", "medium", "high")
    assert set(before["score"]["by_type"]) == {"face_missing", "multiple_faces", "tab_hidden"}
    assert [e["id"] for e in before["events"]] == [face.id, faces.id, tab.id]
    assert before["events"][1]["detail"] == {"faces": 2} and before["audit"] == []
    assert before["interview"]["id"] == iid and before["interview"]["candidate_name"] == "Zoë Ñúñez"

    # the interviewer dismisses the missing face: it no longer counts, and the audit log says who and why
    status, data, _ = await http("PATCH", f"{url}/events/{face.id}", json={"review": "dismissed",
                                                                          "note": "false alarm"}, headers=h)
    assert status == 200 and data["review"] == "dismissed"
    status, after, _ = await http("GET", url + "/report.json", headers=h)
    assert status == 200
    assert after["score"]["value"] > before["score"]["value"]
    assert set(after["score"]["by_type"]) == {"multiple_faces", "tab_hidden"}
    assert [e["review"] for e in after["events"]] == ["dismissed", None, None]
    (entry,) = after["audit"]
    assert (entry["event_id"], entry["action"], entry["note"], entry["by"]) == (
        face.id, "dismissed", "false alarm", "Iris")
    status, text, _ = await http("GET", url + "/report.csv", headers=h)
    assert [r["review"] for r in csv.DictReader(io.StringIO(text)) if r["type"] != "not_analysed"] == [
        "dismissed", "", ""]
    status, body, _ = await http("GET", url + "/report.pdf", headers=h)
    assert status == 200 and "false alarm" in pdf_text(body)


async def test_delete_ends_a_present_bot(srv):
    iid = (await create(srv))["id"]
    async with peers() as made:
        interviewer = await watch(made, srv, iid)
        await invite_and_see_the_bot(srv, iid, interviewer)
        status, _, _ = await http("DELETE", f"{srv.url}/api/interviews/{iid}",
                                  headers=bearer(srv.token(iid, "interviewer")))
        assert status == 200
        await asyncio.wait_for(interviewer.disconnected.wait(), 5)
    assert not srv.bots.running(iid) and srv.bots.sessions == {}
    assert srv.app.application[api.HUB].rooms.participants(iid) == []
    assert await srv.store.get_interview(iid) is None


async def test_unexpected_failure_is_a_logged_json_500(srv, caplog):
    iid = (await create(srv))["id"]
    ev = Event(type="face_missing", start=1.0, end=2.0, confidence=0.9, interview_id=iid)
    await srv.store.save_event(ev)
    # a record the code cannot read (written into the real database by something else): the report fails
    await srv.store.events.update_one({"_id": ev.id}, {"$set": {"start": "soon"}})
    with caplog.at_level(logging.ERROR, logger="signaling.api"):
        status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/report.pdf",
                                     headers=bearer(srv.token(iid, "interviewer")))
    assert status == 500 and data == {"error": "internal server error"}
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
    # and the server keeps serving
    status, _, _ = await http("GET", srv.url + "/healthz")
    assert status == 200


async def test_reports_with_the_database_down_answer_503(srv, mongo_server):
    iid = (await create(srv))["id"]
    h = bearer(srv.token(iid, "interviewer"))
    await mongo_server.stop(kill=True)
    for suffix in ("/report.pdf", "/report.json"):
        status, data, _ = await http("GET", f"{srv.url}/api/interviews/{iid}{suffix}", headers=h)
        assert status == 503 and "database is unavailable" in data["error"], (suffix, data)
    status, _, _ = await http("GET", srv.url + "/healthz")
    assert status == 200


async def test_the_catalogue_names_every_event_type_for_the_page(srv):
    from bot.analysis.events import CATALOGUE

    status, data, headers = await http("GET", srv.url + "/api/catalogue")
    assert status == 200 and "max-age" in headers["Cache-Control"]
    kinds = {k["type"]: k for k in data["events"]}
    assert list(kinds) == list(CATALOGUE)  # report order
    assert kinds["face_missing"] == {"type": "face_missing", "title": "Face missing", "severity": "medium",
                                     "color": "#e74c3c", "live_only": False}
    assert kinds["tab_hidden"]["live_only"] and {k["severity"] for k in kinds.values()} <= {"high", "medium", "low"}


async def test_concurrent_creates(srv):
    results = await asyncio.gather(*(create(srv, {"candidate_name": f"C{i}", "interviewer_email": "i@example.com"})
                                     for i in range(10)))
    assert len({r["id"] for r in results}) == 10


# --- proctor serve: the real process ----------------------------------------------------------------


async def test_serve_runs_until_sigint_and_stops_cleanly(tmp_path, mongo_server):
    """The first start (no key stored, none in the environment) makes an operator key and prints the start
    page's link with it; that key creates interviews."""
    import os
    import signal
    import sys

    from tests.support.paths import MODELS, REPO
    from tests.support.servers import free_port

    port = free_port()
    env = {**os.environ, "MONGODB_URI": mongo_server.uri, "PROCTOR_DATA_DIR": str(tmp_path),
           "PROCTOR_SECRET_KEY": "run-test-secret", "PROCTOR_MODELS_DIR": str(MODELS)}
    env.pop("PROCTOR_API_KEY", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port), cwd=str(REPO),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        assert proc.stdout is not None
        seen: list[bytes] = []
        link = None
        deadline = time.monotonic() + 90  # imports and model checks: seconds, more on a busy machine
        while link is None and time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            assert line, b"".join(seen).decode()[-2000:]  # exited before printing the link
            seen.append(line)
            if b"#key=" in line:
                link = line.decode().strip()
        assert link is not None and link.startswith(f"{url}/#key=pk_"), link
        key = link.split("#key=", 1)[1]
        status, data, _ = await http("GET", url + "/healthz")
        assert status == 200 and data == {"ok": True}
        status, data, _ = await http("POST", url + "/api/interviews",
                                     json={"candidate_name": "Run", "interviewer_email": "run@example.com"})
        assert status == 401
        status, data, _ = await http("POST", url + "/api/interviews", headers=bearer(key),
                                     json={"candidate_name": "Run", "interviewer_email": "run@example.com"})
        assert status == 201 and data["candidate_url"].startswith(f"{url}/interview/{data['id']}?token=")
        status, data, _ = await http("POST", f"{url}/api/interviews/{data['id']}/bot",
                                     headers=bearer(token_of(data["interviewer_url"])))
        assert status == 202 and data == {"status": "invited"}  # a worker took the call
        assert proc.stdout is not None
        lines: list[bytes] = []
        while not any(b"bot joined" in line for line in lines):  # its own process joins the call
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, b"".join(lines).decode()[-2000:]
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        out = b"".join(seen) + b"".join(lines) + rest
        assert proc.returncode == 0, out.decode()[-2000:]
        assert b"bot left interview" in out and b"shutting down" in out and b"Traceback" not in out
        assert b"ended: stopped" in out  # the call's process was stopped, not killed
        assert out.count(key.encode()) == 1  # printed once, never logged
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
