"""The live call end to end, in one process: the real server, the real bot (BotWorker ->
BotSession -> BotPeer -> detectors), a candidate made with aiortc streaming real video
through the server's signaling, an interviewer Socket.IO client, SecantusDB and aiosmtpd."""
from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from typing import Any

import pytest
import socketio

from adapters.mail import Mailer
from bot.reporting import Reports
from bot.worker import BotWorker
from tests.candidate_peer import CandidatePeer
from tests.scenario import MEDIA
from tests.signaling_support import http, running

pytestmark = pytest.mark.slow


class Listener:
    """A Socket.IO client that notes when each alert arrives (wall clock)."""

    def __init__(self) -> None:
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("alert", self._on_alert)

    async def _on_alert(self, data: dict[str, Any]) -> None:
        self.alerts.append((time.time(), data))

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(url, auth={"token": token}, wait_timeout=10)

    def opened(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, a) for t, a in self.alerts if a["change"] == "opened" and a["event"]["type"] == kind]


async def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


@pytest.fixture
def live_settings(settings, smtp_server):
    settings.smtp_host, settings.smtp_port, settings.smtp_tls = smtp_server.host, smtp_server.port, "none"
    return settings


async def test_no_face_reaches_the_interviewer_only_then_the_report_is_mailed(live_settings, store, smtp_server):
    worker = BotWorker(live_settings)
    reports = Reports(store, Mailer(live_settings))
    async with running(live_settings, store, bots=worker, reports=reports) as srv:
        iid = await srv.interview("Nora Noface")
        interviewer_token = srv.token(iid, "interviewer")
        interviewer, candidate_ear = Listener(), Listener()
        await interviewer.connect(srv.url, interviewer_token)
        candidate = CandidatePeer(srv.url, srv.token(iid, "candidate"),
                                  MEDIA / "video/one-by-one-person-detection.mp4", MEDIA / "audio/english.wav")
        candidate.sio.on("alert", candidate_ear._on_alert)  # the candidate's own socket
        await candidate.start()
        try:
            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                         headers={"Authorization": f"Bearer {interviewer_token}"})
            assert status in (200, 202), body
            assert await wait_for(lambda: interviewer.opened("face_missing"), 30), interviewer.alerts
            session = worker.sessions[iid]

            # latency: frame taken -> detectors -> rule fires -> sent -> the interviewer's socket has it
            fired = {eid: (taken, sent) for change, eid, taken, sent in session.stats.fired if change == "opened"}
            hops = [(got - fired[a["event"]["id"]][1], got - fired[a["event"]["id"]][0])
                    for got, a in interviewer.alerts if a["change"] == "opened" and a["event"]["id"] in fired]
            assert hops and max(total for _, total in hops) < 1.0
            print(f"\nalert latency ms, rule fired -> interviewer: "
                  f"median {statistics.median(h[0] for h in hops) * 1000:.1f}; frame taken -> interviewer: "
                  f"median {statistics.median(h[1] for h in hops) * 1000:.1f}, max {max(h[1] for h in hops) * 1000:.1f} "
                  f"(n={len(hops)}); frames analysed {session.stats.fps():.1f}/s")
            assert session.stats.frames_analysed > 10
            assert session.peer.audio is not None and session.stats.audio_chunks > 0

            await asyncio.sleep(0.5)
            assert candidate_ear.alerts == []  # never to the candidate

            status, events, _ = await http("GET", f"{srv.url}/api/interviews/{iid}/events",
                                           headers={"Authorization": f"Bearer {interviewer_token}"})
            assert status == 200
            listed = events["events"] if isinstance(events, dict) else events
            assert "face_missing" in {e["type"] for e in listed}

            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end",
                                         headers={"Authorization": f"Bearer {interviewer_token}"})
            assert status == 200, body
            assert not worker.is_present(iid)
        finally:
            await candidate.stop()
            await interviewer.sio.disconnect()
            await worker.close()

    assert await wait_for(lambda: smtp_server.messages, 10)
    msg = smtp_server.messages[-1]
    assert msg["To"] == "iris@example.com"
    pdfs = [p for p in msg.walk() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1
    pdf = pdfs[0].get_payload(decode=True)
    assert pdf[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True).stdout.decode()
    assert "Nora Noface" in text and "Face missing" in text

    stored = await store.list_events(iid, snapshots=True)
    fm = [e for e in stored if e.type == "face_missing"]
    assert fm and fm[0].end is not None and fm[0].snapshot[:2] == b"\xff\xd8"


async def test_page_events_become_tab_hidden_events(live_settings, store):
    worker = BotWorker(live_settings)
    async with running(live_settings, store, bots=worker) as srv:
        iid = await srv.interview("Tab Switcher")
        token = srv.token(iid, "interviewer")
        interviewer = Listener()
        await interviewer.connect(srv.url, token)
        candidate = CandidatePeer(srv.url, srv.token(iid, "candidate"), MEDIA / "video/thanks.mkv")
        await candidate.start()
        try:
            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                         headers={"Authorization": f"Bearer {token}"})
            assert status in (200, 202), body
            assert await wait_for(lambda: worker.sessions[iid].peer.media_connected, 15)
            await candidate.send_page_event("tab_hidden", True)
            await asyncio.sleep(1.5)
            await candidate.send_page_event("tab_hidden", False)
            assert await wait_for(lambda: interviewer.opened("tab_hidden"), 5), interviewer.alerts
            assert await wait_for(lambda: any(a["change"] == "closed" and a["event"]["type"] == "tab_hidden"
                                              for _, a in interviewer.alerts), 5)
            closed = [a["event"] for _, a in interviewer.alerts
                      if a["change"] == "closed" and a["event"]["type"] == "tab_hidden"][0]
            assert closed["end"] - closed["start"] == pytest.approx(1.5, abs=0.6)
        finally:
            await candidate.stop()
            await interviewer.sio.disconnect()
            await worker.close()



async def test_a_dead_track_is_an_event_and_a_reload_renegotiates(live_settings, store):
    worker = BotWorker(live_settings)
    async with running(live_settings, store, bots=worker) as srv:
        iid = await srv.interview("Flaky Network")
        token = srv.token(iid, "interviewer")
        interviewer = Listener()
        await interviewer.connect(srv.url, token)
        candidate = CandidatePeer(srv.url, srv.token(iid, "candidate"), MEDIA / "video/thanks.mkv")
        await candidate.start()
        try:
            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                         headers={"Authorization": f"Bearer {token}"})
            assert status in (200, 202), body
            session = worker.sessions[iid]
            assert await wait_for(lambda: session.stats.frames_analysed > 5, 15)

            # the media dies but the candidate stays in the room and ignores new offers
            candidate.ignore_offers = 1000
            await candidate.close_peer_connections()
            assert await wait_for(lambda: interviewer.opened("media_lost"), 15), interviewer.alerts
            lost = interviewer.opened("media_lost")[0][1]["event"]
            assert lost["detail"].get("kind") in ("video", "audio")

            # the candidate reloads the page: a new socket, the bot offers again, frames flow again
            await candidate.stop()
            candidate = CandidatePeer(srv.url, srv.token(iid, "candidate"), MEDIA / "video/thanks.mkv")
            await candidate.start()
            before = session.stats.frames_analysed
            assert await wait_for(lambda: session.stats.frames_analysed > before + 10, 20)
            assert session.peer.media_connected
            assert await wait_for(lambda: any(a["change"] == "closed" and a["event"]["type"] == "media_lost"
                                              for _, a in interviewer.alerts), 10)
        finally:
            await candidate.stop()
            await interviewer.sio.disconnect()
            await worker.close()
