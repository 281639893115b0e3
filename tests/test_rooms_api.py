"""Interviews held on another platform, through the HTTP API on the real server and Store (SecantusDB): a bad
room description is a 400 naming its field; the pin and the bearer token are stored for the bot but never come
back in an API answer or a log line; the interviewer gets the monitor page (the interviewer's page without the
call). The bot in such a call is `test_platforms.py`."""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from signaling.server import WEB_DIR
from tests.support.clients import http, served

PIN = "pin-S3CRET-4711"
BEARER = "bearer-T0KEN-0042"
JANUS = {"kind": "janus", "url": "http://127.0.0.1:8088/janus", "room": 1234, "pin": PIN, "candidate": "Alice"}
WHEP = {"kind": "whep", "url": "https://media.example.com/whep/interview-7", "bearer": BEARER}


@pytest.fixture
async def srv(settings, store):
    async with served(settings, store, bots=False, reports=True) as s:
        yield s


async def create(srv, room, *, status: int = 201) -> dict:
    got, data, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator, json={
        "candidate_name": "Alice", "interviewer_email": "iris@example.com", "room": room})
    assert got == status, data
    return data


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


@pytest.mark.parametrize(("room", "field"), [
    ("janus", "room"),
    ({"kind": "zoom", "url": "https://zoom.us/j/1"}, "room.kind"),
    ({"kind": ["janus"], "url": "https://janus.example.com/janus"}, "room.kind"),
    ({"kind": {"k": 1}}, "room.kind"),
    ({**JANUS, "url": ["http://janus.example.com"]}, "room.url"),
    ({**JANUS, "candidate": {"name": "x"}}, "room.candidate"),
    ({**JANUS, "pin": ["x"]}, "room.pin"),
    ({**JANUS, "url": "ftp://janus.example.com/janus"}, "room.url"),
    ({**JANUS, "url": "http://user:pw@janus.example.com/janus"}, "room.url"),
    ({**JANUS, "room": "1234"}, "room.room"),
    ({**JANUS, "room": 0}, "room.room"),
    ({**JANUS, "candidate": ""}, "room.candidate"),
    ({k: v for k, v in JANUS.items() if k != "candidate"}, "room.candidate"),
    ({**JANUS, "pin": 4711}, "room.pin"),
    ({**WHEP, "url": "ws://media.example.com/whep"}, "room.url"),
    ({**WHEP, "bearer": ""}, "room.bearer"),
    ({**WHEP, "room": 1}, "room.room"),  # not a field of a WHEP room
])
async def test_a_bad_room_is_a_400_naming_its_field(srv, room, field) -> None:
    data = await create(srv, room, status=400)
    assert data["error"].startswith(field + " "), data
    assert PIN not in json.dumps(data) and "4711" not in data["error"]


@pytest.mark.parametrize(("room", "secret"), [(JANUS, PIN), (WHEP, BEARER)])
async def test_secrets_are_stored_for_the_bot_and_never_answered_or_logged(
    srv, room: dict, secret: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create(srv, room)
    iid = created["id"]
    public = {k: v for k, v in room.items() if k not in ("pin", "bearer")}
    assert created["room"] == public
    assert "candidate_url" not in created  # the candidate joins the other platform
    assert created["interviewer_url"] == created["monitor_url"]
    assert created["monitor_url"].startswith(f"{srv.url}/interview/{iid}/monitor?token=")
    assert (await srv.store.get_interview(iid))["room"] == room  # the bot reads it from here

    auth = {"Authorization": f"Bearer {token_of(created['monitor_url'])}"}
    answers = [created]
    for path in ("", "/events", "/report.json", "/report.csv"):
        status, body, _ = await http("GET", f"{srv.url}/api/interviews/{iid}{path}", headers=auth)
        assert status == 200, (path, body)
        answers.append(body)
    assert answers[1]["room"] == public and answers[1]["id"] == iid and "interviewer_email" not in answers[1]
    assert answers[3]["interview"]["room"] == public
    for body in answers:
        assert secret not in (body if isinstance(body, str) else json.dumps(body))
    # pymongo's own DEBUG lines quote documents (`proctor serve -v` keeps that logger at INFO)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("pymongo"))
    assert "interview" in logged and secret not in logged


async def test_the_interviewer_of_a_room_interview_gets_the_monitor(srv) -> None:
    created = await create(srv, JANUS)
    iid, token = created["id"], token_of(created["monitor_url"])
    interviewer_page = (WEB_DIR / "interviewer.html").read_text()

    status, page, headers = await http("GET", created["monitor_url"])
    assert status == 200 and page == interviewer_page  # the same page; its script leaves the call out
    assert headers["Cache-Control"] == "no-store"
    # the plain interviewer address of such an interview leads there, token kept
    status, page, _ = await http("GET", f"{srv.url}/interview/{iid}?token={token}")
    assert status == 200 and page == interviewer_page
    status, _, headers = await http("GET", f"{srv.url}/interview/{iid}?token={token}", allow_redirects=False)
    assert status == 302 and headers["Location"] == f"/interview/{iid}/monitor?token={token}"

    candidate = srv.token(iid, "candidate")
    status, text, _ = await http("GET", f"{srv.url}/interview/{iid}/monitor?token={candidate}")
    assert status == 403 and "interviewer" in text


async def test_no_room_is_the_built_in_call_as_before(srv) -> None:
    status, created, _ = await http("POST", srv.url + "/api/interviews", headers=srv.operator, json={
        "candidate_name": "Cory", "interviewer_email": "iris@example.com"})
    assert status == 201
    assert created["candidate_url"].startswith(f"{srv.url}/interview/{created['id']}?token=")
    assert created["interviewer_url"].startswith(f"{srv.url}/interview/{created['id']}?token=")
    assert (await srv.store.get_interview(created["id"]))["room"] is None
    status, shown, _ = await http("GET", f"{srv.url}/api/interviews/{created['id']}",
                                  headers={"Authorization": f"Bearer {token_of(created['interviewer_url'])}"})
    assert status == 200 and shown["room"] is None
    status, page, _ = await http("GET", created["interviewer_url"], allow_redirects=False)
    assert status == 200  # no monitor redirect
