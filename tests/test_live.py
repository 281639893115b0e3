"""The live call end to end, in one process: the real app (`bot.app`: server, CallRegistry -> CallSession ->
BotPeer -> detectors, Reports), a candidate made with aiortc streaming real video through the server's
signaling, an interviewer Socket.IO client, SecantusDB and aiosmtpd."""
from __future__ import annotations

import asyncio
import statistics
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.live.registry import CallRegistry
from tests.support.candidate import CandidatePeer
from tests.support.clients import Listener, Served, http, served
from tests.support.paths import MEDIA
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def live_settings(settings, smtp_server):
    settings.smtp_host, settings.smtp_port, settings.smtp_tls = smtp_server.host, smtp_server.port, "none"
    return settings


@dataclass
class Call:
    srv: Served
    iid: str
    token: str  # the interviewer's
    bots: CallRegistry
    interviewer: Listener
    candidate: CandidatePeer
    candidate_ear: Listener  # alerts arriving on the candidate's own socket

    async def invite(self) -> None:
        status, body, _ = await http("POST", f"{self.srv.url}/api/interviews/{self.iid}/bot",
                                     headers={"Authorization": f"Bearer {self.token}"})
        assert status in (200, 202), body

    async def api(self, method: str, path: str) -> tuple[int, Any]:
        status, body, _ = await http(method, f"{self.srv.url}/api/interviews/{self.iid}{path}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        return status, body

    async def join_candidate(self, video: Path, audio: Path | None = None) -> None:
        """The candidate (re)loads the page: a new socket and new peer connections."""
        self.candidate = CandidatePeer(self.srv.url, self.srv.token(self.iid, "candidate"), video, audio)
        self.candidate.sio.on("alert", self.candidate_ear._on_alert)
        await self.candidate.start()


@asynccontextmanager
async def live_call(settings, store, name: str, video: Path, audio: Path | None = None) -> AsyncIterator[Call]:
    async with served(settings, store, bots=True, reports=True) as srv:
        assert srv.bots is not None
        iid = await srv.interview(name)
        token = srv.token(iid, "interviewer")
        interviewer = Listener()
        await interviewer.connect(srv.url, token)
        call = Call(srv, iid, token, srv.bots, interviewer, None, Listener())  # type: ignore[arg-type]
        await call.join_candidate(video, audio)
        try:
            yield call
        finally:
            await call.candidate.stop()
            await interviewer.sio.disconnect()


async def test_no_face_reaches_the_interviewer_only_then_the_report_is_mailed(live_settings, store, smtp_server):
    async with live_call(live_settings, store, "Nora Noface", MEDIA / "video/one-by-one-person-detection.mp4",
                         MEDIA / "audio/english.wav") as call:
        interviewer = call.interviewer
        await call.invite()
        assert await wait_for(lambda: interviewer.opened("face_missing"), 30), interviewer.alerts
        session = call.bots.sessions[call.iid]

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
        assert call.candidate_ear.alerts == []  # never to the candidate

        status, listed = await call.api("GET", "/events")
        assert status == 200
        assert "face_missing" in {e["type"] for e in listed["events"]}

        status, body = await call.api("POST", "/end")
        assert status == 200, body
        assert not call.bots.running(call.iid)
        iid = call.iid

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
    async with live_call(live_settings, store, "Tab Switcher", MEDIA / "video/thanks.mkv") as call:
        await call.invite()
        assert await wait_for(lambda: call.bots.sessions[call.iid].peer.media_connected, 15)
        await call.candidate.send_page_event("tab_hidden", True)
        await asyncio.sleep(1.5)
        await call.candidate.send_page_event("tab_hidden", False)
        alerts = call.interviewer.alerts
        assert await wait_for(lambda: call.interviewer.opened("tab_hidden"), 5), alerts
        assert await wait_for(lambda: any(a["change"] == "closed" and a["event"]["type"] == "tab_hidden"
                                          for _, a in alerts), 5)
        closed = [a["event"] for _, a in alerts if a["change"] == "closed" and a["event"]["type"] == "tab_hidden"][0]
        assert closed["end"] - closed["start"] == pytest.approx(1.5, abs=0.6)


async def test_a_dead_track_is_an_event_and_a_reload_renegotiates(live_settings, store):
    async with live_call(live_settings, store, "Flaky Network", MEDIA / "video/thanks.mkv") as call:
        await call.invite()
        session = call.bots.sessions[call.iid]
        assert await wait_for(lambda: session.stats.frames_analysed > 5, 15)

        # the media dies but the candidate stays in the room and ignores new offers
        call.candidate.ignore_offers = 1000
        await call.candidate.close_peer_connections()
        assert await wait_for(lambda: call.interviewer.opened("media_lost"), 15), call.interviewer.alerts
        lost = call.interviewer.opened("media_lost")[0][1]["event"]
        assert lost["detail"].get("kind") in ("video", "audio")

        # the candidate reloads the page: a new socket, the bot offers again, frames flow again
        await call.candidate.stop()
        await call.join_candidate(MEDIA / "video/thanks.mkv")
        before = session.stats.frames_analysed
        assert await wait_for(lambda: session.stats.frames_analysed > before + 10, 20)
        assert session.peer.media_connected
        assert await wait_for(lambda: any(a["change"] == "closed" and a["event"]["type"] == "media_lost"
                                          for _, a in call.interviewer.alerts), 10)


async def test_the_database_going_away_mid_call_loses_nothing(live_settings, store, mongo_server, caplog):
    from motor.motor_asyncio import AsyncIOMotorClient

    caplog.set_level("WARNING")
    async with live_call(live_settings, store, "Outage Olga", MEDIA / "video/one-by-one-person-detection.mp4") as call:
        await call.invite()
        session = call.bots.sessions[call.iid]
        assert await wait_for(lambda: session.stats.frames_analysed > 3, 15)

        await mongo_server.stop(kill=True)  # the database dies mid-interview
        await call.candidate.send_page_event("tab_hidden", True)
        await asyncio.sleep(1.2)
        await call.candidate.send_page_event("tab_hidden", False)
        # the bot keeps working and the interviewer keeps getting alerts
        assert await wait_for(lambda: call.interviewer.opened("face_missing"), 30), call.interviewer.alerts
        assert await wait_for(lambda: any(a["change"] == "closed" and a["event"]["type"] == "tab_hidden"
                                          for _, a in call.interviewer.alerts), 10)
        assert await wait_for(lambda: "spool" in caplog.text, 10)

        await mongo_server.start()  # back on the same port and storage
        assert await store.drain(timeout=30)
        sent = {a["event"]["id"] for _, a in call.interviewer.alerts}
        client = AsyncIOMotorClient(mongo_server.uri, serverSelectionTimeoutMS=5000)
        try:
            in_db = await client[live_settings.mongodb_db]["events"].find(
                {"interview_id": call.iid}, {"_id": 0, "id": 1, "type": 1}).to_list(None)
        finally:
            client.close()
        ids = [d["id"] for d in in_db]
        assert len(ids) == len(set(ids))  # written once each
        assert sent <= set(ids)  # every alerted event is in the database
        assert {"face_missing", "tab_hidden"} <= {d["type"] for d in in_db}


def test_a_call_behind_its_face_rate_defers_objects_first():
    """`Pace`: faces at 5/s over the window keep the call on pace; fewer make it behind (objects deferred)."""
    from bot.live.call import BEHIND_WINDOW, Pace

    pace = Pace(face_fps=5.0)
    t0 = pace.started + 2 * BEHIND_WINDOW  # past the warm-up
    assert not pace.behind(pace.started + 1.0)  # never judged while warming up
    for i in range(int(5 * BEHIND_WINDOW)):
        pace.face_sampled(t0 - BEHIND_WINDOW + i / 5)
    assert not pace.behind(t0)
    for i in range(int(2 * BEHIND_WINDOW)):  # 2 faces/s for the last window
        pace.face_sampled(t0 + 0.5 + i / 2)
    assert pace.behind(t0 + BEHIND_WINDOW + 0.5)


async def test_a_detector_failure_is_logged_the_models_reloaded_and_the_call_goes_on(caplog):
    """A frame the real detectors cannot take (an empty image: OpenCV raises) is logged with the interview and
    the media time, the models are reloaded, and the next frame is analysed as before."""
    import logging

    import numpy as np

    from bot.analysis.frames import VideoFrame
    from bot.analysis.pipeline import Analyzer, Detectors
    from bot.live.call import CallSession
    from tests.support.paths import shared_models
    from tests.support.scenario import read_clip

    models = shared_models()
    session = CallSession({"id": "iv-detector-failure"}, "no-token", "http://127.0.0.1:9", models, threads=1)
    session._analyzer = Analyzer(session.policy, Detectors.load(session.policy, models, threads=1))
    first = session._analyzer.detectors
    good = read_clip(MEDIA / "video/student.mkv")[0]
    everything = frozenset({"faces", "objects", "camera"})
    try:
        with caplog.at_level(logging.ERROR, logger="bot.live.call"):
            assert session._step(VideoFrame(t=12.5, image=np.zeros((0, 0, 3), np.uint8)), everything, [], []) == []
        assert session.stats.detector_errors == 1 and session._analyzer.detectors is not first
        assert any("iv-detector-failure" in r.getMessage() and "12.5 s" in r.getMessage() for r in caplog.records)
        for i in range(3):
            session._step(VideoFrame(t=13.0 + i * 0.2, image=good), everything, [], [])
        assert session.stats.frames_analysed == 4 and session.stats.detector_errors == 1
        assert session._analyzer.rules is not None and session._analyzer.samples == 4
    finally:
        session._analyzer.detectors.close()
