"""Webhooks to the system interviews come from: signed deliveries from the durable outbox, to a real aiohttp
receiver (`tests.support.webhook_receiver`) that checks every signature, through receiver and server restarts."""
from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter

import pytest
import socketio

from adapters.webhooks import WebhookSender, sign, verify
from bot.analysis.events import Event
from tests.support.clients import Peer, http, peers, served
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec-test"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


def with_webhooks(settings, receiver: WebhookReceiver):
    settings.webhook_url = receiver.url
    settings.webhook_secret = SECRET
    settings.webhook_retry_min = 0.05
    settings.webhook_retry_max = 0.3
    return settings


async def join(made: list[Peer], srv, iid: str, role: str) -> Peer:
    p = Peer()
    made.append(p)
    await p.connect(srv.url, srv.token(iid, role))
    return p


async def open_event(bot: Peer, interviewer: Peer, kind: str = "looking_away", start: float = 3.0) -> tuple[Event, float]:
    """The bot opens an event (with a snapshot); the interviewer's alert and how long it took (s)."""
    ev = Event(type=kind, start=start, end=None, confidence=0.9, detail={"yaw": 41.0})
    t0 = time.monotonic()
    await bot.sio.emit("bot_event", {"change": "opened", "event": ev.to_dict(),
                                     "snapshot_b64": base64.b64encode(JPEG).decode()})
    alert = await interviewer.until("alert", lambda a: a["event"]["id"] == ev.id)
    assert alert["change"] == "opened"
    return ev, time.monotonic() - t0


async def end(srv, iid: str) -> dict:
    status, data, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end",
                                 headers={"Authorization": f"Bearer {srv.token(iid, 'interviewer')}"})
    assert status == 200, data
    return data


def once_each(receiver: WebhookReceiver) -> Counter:
    return Counter(a.delivery for a in receiver.delivered())


# --- signing --------------------------------------------------------------------------------------

def test_signature_and_backoff():
    body = b'{"id":"x","event":"alert"}'
    ts = str(int(time.time()))
    sig = sign("k", ts, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify("k", ts, body, sig)
    assert not verify("k", ts, body + b" ", sig) and not verify("other", ts, body, sig)
    assert not verify("k", str(int(time.time()) - 3600), body, sign("k", str(int(time.time()) - 3600), body))
    assert not verify("k", "soon", body, sig)
    sender = WebhookSender(outbox=None, url="http://x", secret="k", retry_min=2, retry_max=60)  # type: ignore[arg-type]
    for attempt, ceiling in ((1, 2), (2, 4), (3, 8), (6, 60), (100, 60)):
        delays = [sender.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jitter
    assert sender.backoff(1, retry_after=30) == 30 and sender.backoff(1, retry_after=10_000) == 60


# --- end to end -----------------------------------------------------------------------------------

async def test_alert_and_interview_ended_arrive_signed(settings, store):
    receiver = await WebhookReceiver(SECRET).start()
    try:
        async with served(with_webhooks(settings, receiver), store, bots=True, reports=True) as srv, \
                peers() as made:
            iid = await srv.interview()
            interviewer = await join(made, srv, iid, "interviewer")
            bot = await join(made, srv, iid, "bot")
            ev, latency = await open_event(bot, interviewer)
            assert latency < 1.0
            # the same opening again (a bot's resend after a reconnect), an update and the close: no new webhook
            await bot.sio.emit("bot_event", {"change": "opened", "event": ev.to_dict()})
            ev.end = 9.0
            await bot.sio.emit("bot_event", {"change": "closed", "event": ev.to_dict()})
            await interviewer.until("alert", lambda a: a["change"] == "closed")

            assert await wait_for(lambda: receiver.delivered("alert"), timeout=10)
            (alert,) = receiver.delivered("alert")
            assert alert.body["event"] == "alert" and alert.body["id"] == alert.delivery
            data = alert.body["data"]
            assert data["interview_id"] == iid and data["change"] == "opened" and data["has_snapshot"] is True
            assert data["event"]["id"] == ev.id and data["event"]["type"] == "looking_away"
            assert "snapshot" not in data["event"] and "snapshot_b64" not in data
            assert alert.headers["Content-Type"] == "application/json"
            assert alert.headers["X-Proctor-Signature"].startswith("sha256=")
            # the links carry a read-only token: the snapshot and the events open, nothing else does
            status, jpeg, _ = await http("GET", data["snapshot_url"])
            assert status == 200 and jpeg == JPEG
            status, listed, _ = await http("GET", data["events_url"])
            assert status == 200 and [e["id"] for e in listed["events"]] == [ev.id]
            reader = data["events_url"].split("?token=")[1]
            status, err, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end",
                                        headers={"Authorization": f"Bearer {reader}"})
            assert status == 403 and "role interviewer" in err["error"]
            refused = Peer()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.connect(srv.url, reader)
            assert refused.refusal == "this token cannot join a call"

            summary = await end(srv, iid)
            assert await wait_for(lambda: receiver.delivered("interview.ended"), timeout=10)
            (ended,) = receiver.delivered("interview.ended")
            got = ended.body["data"]
            assert got["interview_id"] == iid
            assert got["score"] == summary["score"] and got["risk"] == summary["risk"]
            assert got["needs_review"] == summary["needs_review"] and got["events"] == 1
            status, pdf, headers = await http("GET", got["report_url"])
            assert status == 200 and headers["Content-Type"] == "application/pdf" and pdf.startswith(b"%PDF")
            status, report, _ = await http("GET", got["report_json_url"])
            assert status == 200 and report["score"]["value"] == summary["score"]
            await asyncio.sleep(0.3)
            assert receiver.forged == 0 and len(receiver.arrivals) == 2
            assert await srv.app.webhooks.outbox.counts() == {"pending": 0, "done": 2, "failed": 0}
    finally:
        await receiver.stop()


async def test_receiver_down_then_back_gets_each_delivery_once(settings, store):
    receiver = WebhookReceiver(SECRET)  # not started: its port refuses connections
    try:
        async with served(with_webhooks(settings, receiver), store, bots=True, reports=True) as srv, \
                peers() as made:
            outbox = srv.app.webhooks.outbox
            iid = await srv.interview()
            interviewer = await join(made, srv, iid, "interviewer")
            bot = await join(made, srv, iid, "bot")
            _, latency = await open_event(bot, interviewer)
            assert latency < 1.0  # the alert path does not wait for the webhook
            await end(srv, iid)

            async def retried() -> bool:
                docs = await outbox.coll.find({}).to_list(None)
                return len(docs) == 2 and all(d["state"] == "pending" and d["attempts"] >= 2 for d in docs)
            assert await poll(retried)
            doc = await outbox.coll.find_one({"event": "alert"})
            assert doc["last_status"] is None and "Connect" in doc["last_error"]

            await receiver.start()  # the same port
            assert await wait_for(lambda: len(receiver.delivered()) == 2, timeout=10)
            await asyncio.sleep(1.0)  # no second copy follows
            assert sorted(a.event for a in receiver.arrivals) == ["alert", "interview.ended"]
            assert set(once_each(receiver).values()) == {1}
            assert await outbox.counts() == {"pending": 0, "done": 2, "failed": 0}
    finally:
        await receiver.stop()


async def poll(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_server_restart_delivers_what_the_outbox_holds(settings):
    receiver = WebhookReceiver(SECRET)
    with_webhooks(settings, receiver)
    try:
        async with served(settings, bots=False, reports=False) as srv, peers() as made:  # its own store
            iid = await srv.interview()
            interviewer = await join(made, srv, iid, "interviewer")
            bot = await join(made, srv, iid, "bot")
            first, _ = await open_event(bot, interviewer, "looking_away", 1.0)
            second, _ = await open_event(bot, interviewer, "eyes_closed", 2.0)

            async def queued() -> bool:
                docs = await srv.app.webhooks.outbox.coll.find({}).to_list(None)
                return len(docs) == 2 and all(d["attempts"] >= 1 for d in docs)
            assert await poll(queued)
        # the server is down, its deliveries are in the database; the receiver comes up, then the server
        await receiver.start()
        await asyncio.sleep(0.3)
        assert receiver.arrivals == []
        async with served(settings, bots=False, reports=False) as srv:
            assert await wait_for(lambda: len(receiver.delivered()) == 2, timeout=10)
            await asyncio.sleep(0.5)
            assert sorted(a.body["data"]["event"]["id"] for a in receiver.arrivals) == sorted([first.id, second.id])
            assert set(once_each(receiver).values()) == {1}
            assert await srv.app.webhooks.outbox.counts() == {"pending": 0, "done": 2, "failed": 0}
    finally:
        await receiver.stop()


async def test_client_errors_are_given_up_and_server_errors_retried(settings, store, caplog):
    receiver = await WebhookReceiver(SECRET).start()
    try:
        async with served(with_webhooks(settings, receiver), store) as srv:
            sender = srv.app.webhooks
            receiver.statuses = [503, 429, 500]  # three transient failures, then 200
            ok = await sender.send("test.retry", {"n": 1})
            assert await wait_for(lambda: receiver.delivered("test.retry"), timeout=10)
            assert [a.status for a in receiver.arrivals] == [503, 429, 500, 200]
            assert len({a.headers["X-Proctor-Delivery"] for a in receiver.arrivals}) == 1  # one idempotency id
            assert (await sender.outbox.get(ok))["attempts"] == 4

            receiver.arrivals.clear()
            receiver.statuses = [400] * 10
            bad = await sender.send("test.refused", {"n": 2})

            async def failed() -> bool:
                doc = await sender.outbox.get(bad)
                return doc["state"] == "failed"
            assert await poll(failed)
            doc = await sender.outbox.get(bad)
            assert doc["attempts"] == 3 and doc["last_status"] == 400 and doc["last_error"] == "HTTP 400"
            assert [a.status for a in receiver.arrivals] == [400, 400, 400]
            assert any("given up after 3 attempts" in r.getMessage() for r in caplog.records)
            # the same key is queued once
            receiver.statuses.clear()
            assert await sender.send("test.key", {}, key="k1") == await sender.send("test.key", {}, key="k1")
            assert await wait_for(lambda: receiver.delivered("test.key"), timeout=10)
            await asyncio.sleep(0.3)
            assert len(receiver.delivered("test.key")) == 1
    finally:
        await receiver.stop()


async def test_a_slow_receiver_never_delays_alerts(settings, store):
    receiver = await WebhookReceiver(SECRET).start()
    receiver.delay = 2.0
    try:
        async with served(with_webhooks(settings, receiver), store) as srv, peers() as made:
            iid = await srv.interview()
            interviewer = await join(made, srv, iid, "interviewer")
            bot = await join(made, srv, iid, "bot")
            latencies = []
            for i in range(4):
                _, latency = await open_event(bot, interviewer, "looking_away", float(i))
                latencies.append(latency)
            assert max(latencies) < 1.0, latencies
            assert await wait_for(lambda: len(receiver.delivered("alert")) == 4, timeout=15)
    finally:
        await receiver.stop()


async def test_a_database_outage_holds_deliveries_in_memory_until_it_is_back(settings, store, mongo_server):
    receiver = await WebhookReceiver(SECRET).start()
    try:
        async with served(with_webhooks(settings, receiver), store) as srv, peers() as made:
            iid = await srv.interview()
            interviewer = await join(made, srv, iid, "interviewer")
            bot = await join(made, srv, iid, "bot")
            await mongo_server.stop(kill=True)
            ev, latency = await open_event(bot, interviewer)
            assert latency < 1.0  # the alert does not wait for the database either
            assert await wait_for(lambda: len(srv.app.webhooks._unsaved) == 1, timeout=15)
            assert receiver.arrivals == []
            await mongo_server.start()
            assert await wait_for(lambda: receiver.delivered("alert"), timeout=30)
            (got,) = receiver.delivered("alert")
            assert got.body["data"]["event"]["id"] == ev.id and not srv.app.webhooks._unsaved
    finally:
        await receiver.stop()
