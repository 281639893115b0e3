"""The web pages in real headless Chromium against the real signaling app.

The app (`signaling.server.create_app`) runs in a thread with an in-memory store; the
"bot" is a real aiortc receive-only peer driven by a python-socketio client, as the
architecture describes (recvonly offer with all candidates, no trickle). Two Chromium
instances with fake camera/microphone open the candidate's and the interviewer's pages.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WEB = Path(__file__).resolve().parents[1] / "signaling" / "web"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if not (WEB.parent / "server.py").is_file():
    pytest.skip("signaling/server.py has not landed yet", allow_module_level=True)
if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip("needs Debian's chromium and chromium-driver (./scripts/setup --test)", allow_module_level=True)
if not (WEB / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js").is_file():
    pytest.skip("socket.io-client is not installed: npm ci --prefix signaling/web", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import socketio  # noqa: E402
from aiohttp import web  # noqa: E402

from bot.events import Event  # noqa: E402
from bot.settings import Settings  # noqa: E402
from signaling.server import create_app  # noqa: E402
from tests.conftest import free_port  # noqa: E402

CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1280,900",
]


# --------------------------------------------------------------------------- collaborators

class MemoryStore:
    """The Store interface, in memory (the real Store is covered by test_store)."""

    def __init__(self) -> None:
        self.interviews: dict[str, dict] = {}
        self.events: dict[str, dict[str, Event]] = {}
        self.reviews: list[tuple[str, str, str]] = []

    async def create_interview(self, *, candidate_name: str, interviewer_email: str, policy: dict | None = None) -> dict:
        iid = uuid.uuid4().hex
        self.interviews[iid] = {"id": iid, "candidate_name": candidate_name, "interviewer_email": interviewer_email,
                                "policy": policy, "status": "created", "created_at": None, "started_at": None,
                                "ended_at": None}
        self.events[iid] = {}
        return dict(self.interviews[iid])

    async def get_interview(self, iid: str) -> dict | None:
        return dict(self.interviews[iid]) if iid in self.interviews else None

    async def update_interview(self, iid: str, **fields: Any) -> None:
        self.interviews[iid].update(fields)

    async def save_event(self, event: Event) -> None:
        old = self.events[event.interview_id].get(event.id)
        if old is not None:
            event.review = event.review or old.review
            event.snapshot = event.snapshot or old.snapshot
        self.events[event.interview_id][event.id] = event

    async def list_events(self, iid: str, *, snapshots: bool = False) -> list[Event]:
        return sorted(self.events.get(iid, {}).values(), key=lambda e: e.start)

    async def get_snapshot(self, iid: str, eid: str) -> bytes | None:
        e = self.events.get(iid, {}).get(eid)
        return e.snapshot if e else None

    async def review_event(self, iid: str, eid: str, *, state: str, by: str, note: str = "") -> Event | None:
        e = self.events.get(iid, {}).get(eid)
        if e is not None:
            e.review = state
            self.reviews.append((eid, state, by))
        return e

    async def delete_interview(self, iid: str) -> bool:
        return self.interviews.pop(iid, None) is not None

    async def close(self) -> None:
        pass


class Reports:
    async def pdf(self, iid: str) -> bytes:
        return b"%PDF-1.4\n%%EOF\n"

    async def csv(self, iid: str) -> str:
        return "id,type\n"

    async def json(self, iid: str) -> dict:
        return {"interview_id": iid}

    async def finish(self, iid: str) -> dict:
        return {"status": "ended"}


class AiortcBot:
    """A receive-only aiortc peer, as the real bot: offers recvonly audio+video to the candidate
    (re-offers when the candidate's sid changes), records what it receives, sends bot_events."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.client = socketio.AsyncClient()
        self.pc: Any = None
        self.candidate_sid: str | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.answers: list[str] = []
        self.trickled = 0
        self.page_events: list[dict] = []
        self.tasks: list[asyncio.Task] = []
        self.client.on("participants", self.on_participants)
        self.client.on("signal", self.on_signal)
        self.client.on("page_event", self.on_page_event)

    async def start(self) -> None:
        await self.client.connect(self.url, auth={"token": self.token}, transports=["websocket"])

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.pc is not None:
            await self.pc.close()
        await self.client.disconnect()

    async def on_participants(self, msg: dict) -> None:
        cands = [p for p in msg["participants"] if p["role"] == "candidate"]
        if cands and cands[-1]["sid"] != self.candidate_sid:
            await self.offer(cands[-1]["sid"])

    async def offer(self, sid: str) -> None:
        from aiortc import RTCPeerConnection

        if self.pc is not None:
            await self.pc.close()
        self.pc, self.candidate_sid = RTCPeerConnection(), sid
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self.consume(track))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.client.emit("signal", {"to": sid, "kind": "offer",
                                          "data": {"type": "offer", "sdp": self.pc.localDescription.sdp}})

    async def consume(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except Exception:
                return
            if track.kind == "video":
                self.video_frames += 1
            else:
                self.audio_frames += 1

    async def on_signal(self, msg: dict) -> None:
        from aiortc import RTCSessionDescription

        if msg["kind"] == "candidate":
            self.trickled += 1
        elif msg["kind"] == "answer" and msg["from"] == self.candidate_sid and self.pc is not None:
            self.answers.append(msg["data"]["sdp"])
            await self.pc.setRemoteDescription(RTCSessionDescription(**msg["data"]))

    async def on_page_event(self, msg: dict) -> None:
        self.page_events.append(msg)

    async def emit_event(self, change: str, event: dict) -> None:
        await self.client.emit("bot_event", {"change": change, "event": event})


class Bots:
    """The bots collaborator: invite starts an AiortcBot on the server's loop."""

    def __init__(self) -> None:
        self.bots: dict[str, AiortcBot] = {}

    async def invite(self, interview: dict, bot_token: str, server_url: str) -> None:
        bot = AiortcBot(server_url, bot_token)
        self.bots[interview["id"]] = bot
        await bot.start()

    async def end(self, iid: str) -> None:
        bot = self.bots.pop(iid, None)
        if bot is not None:
            await bot.stop()

    def is_present(self, iid: str) -> bool:
        return iid in self.bots


class Server:
    """The real app on a free port, served from a background thread's event loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = MemoryStore()
        self.bots = Bots()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, data_dir: Path) -> None:
        settings = Settings(host="127.0.0.1", port=self.port, secret_key="web-pages-test", data_dir=data_dir)
        app = create_app(settings, self.store, bots=self.bots, reports=Reports())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        for iid in list(self.bots.bots):
            await self.bots.end(iid)
        if self.runner is not None:
            await self.runner.cleanup()

    def start(self, data_dir: Path) -> None:
        self.thread.start()
        self.call(self._start(data_dir))

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def create_interview(self) -> dict:
        body = json.dumps({"candidate_name": "Ada Lovelace", "interviewer_email": "grace@example.com"}).encode()
        req = urllib.request.Request(self.url + "/api/interviews", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def server(tmp_path: Path):
    s = Server()
    s.start(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def browsers():
    made = []

    def new():
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in CHROME_FLAGS:
            opts.add_argument(flag)
        opts.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="proctor-chromium-"))
        d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        made.append(d)
        return d

    yield new
    for d in made:
        d.quit()


def wait(driver, cond, timeout: float = 30, what: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: cond(d), message=what)


def until(cond, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out: " + what)
        time.sleep(0.2)


def state(d) -> str:
    return d.execute_script("return document.body.dataset.state")


def remote_width(d) -> int:
    return d.execute_script("return document.getElementById('remote-video').videoWidth")


# --------------------------------------------------------------------------- the test

def test_call_bot_alerts_review_and_end(server: Server, browsers, tmp_path: Path) -> None:
    iv = server.create_interview()
    cand, intv = browsers(), browsers()

    # Consent first: nothing starts before the click.
    cand.get(iv["candidate_url"])
    assert state(cand) == "consent"
    notice = cand.find_element(By.ID, "consent").text.lower()
    for words in ("automated proctoring bot", "face", "gaze", "eyes", "phones", "second voice",
                  "covered", "frozen", "tab is hidden", "interviewer only", "reviewed by a human"):
        assert words in notice, words
    assert cand.execute_script("return document.getElementById('local-video').srcObject") is None
    assert cand.find_element(By.ID, "bot-indicator").text == "Proctoring bot absent"
    cand.find_element(By.ID, "join").click()

    intv.get(iv["interviewer_url"])
    wait(intv, lambda d: state(d) == "in-call" and remote_width(d) > 0, what="interviewer in call")
    wait(cand, lambda d: state(d) == "in-call" and remote_width(d) > 0, what="candidate in call")

    # The candidate's microphone has no processing, so background voices reach the bot.
    audio = cand.execute_script(
        "const t = document.getElementById('local-video').srcObject.getAudioTracks()[0].getSettings();"
        "return [t.echoCancellation, t.noiseSuppression, t.autoGainControl];")
    assert audio == [False, False, False]

    # Invite the bot: both pages show it; it receives the candidate's media over a non-trickle answer.
    intv.find_element(By.ID, "invite-bot").click()
    for d in (intv, cand):
        wait(d, lambda d: d.find_element(By.ID, "bot-indicator").get_attribute("data-present") == "true",
             what="bot indicator")
    assert cand.find_element(By.ID, "bot-indicator").text == "Proctoring bot present"
    bot = server.bots.bots[iv["id"]]
    until(lambda: bot.video_frames > 10 and bot.audio_frames > 10, what="bot receives audio and video")
    assert len(bot.answers) == 1 and "a=candidate:" in bot.answers[0]  # one complete answer
    assert bot.trickled == 0

    # Alerts reach the interviewer only, in order, timestamped.
    ev = {"id": "ev-phone-1", "type": "suspicious_object", "start": 3.5, "end": None, "confidence": 0.8,
          "detail": {"label": "cell phone"}}
    server.call(bot.emit_event("opened", ev))
    wait(intv, lambda d: d.find_elements(By.CSS_SELECTOR, ".toast-alert"), what="alert toast")
    server.call(bot.emit_event("updated", dict(ev, confidence=0.9)))
    server.call(bot.emit_event("closed", dict(ev, confidence=0.9, end=9.0)))
    wait(intv, lambda d: d.execute_script("return window.proctorAlerts.length") == 3, what="3 alerts")
    alerts = intv.execute_script("return window.proctorAlerts")
    assert [a["change"] for a in alerts] == ["opened", "updated", "closed"]
    assert all(a["event"]["id"] == "ev-phone-1" for a in alerts)
    assert alerts[0]["receivedAt"] <= alerts[1]["receivedAt"] <= alerts[2]["receivedAt"]
    assert abs(alerts[0]["receivedAt"] / 1000 - time.time()) < 60
    row = intv.find_element(By.CSS_SELECTOR, '.event[data-event-id="ev-phone-1"]')
    assert "Suspicious object" in row.text and "ongoing" not in row.text
    assert "Suspicious object" not in cand.find_element(By.TAG_NAME, "body").text
    assert cand.execute_script("return window.proctorAlerts") is None

    # Review: confirm the event.
    row.find_element(By.CSS_SELECTOR, "[data-action='confirmed']").click()
    until(lambda: any(r[:2] == ("ev-phone-1", "confirmed") for r in server.store.reviews), what="review saved")
    wait(intv, lambda d: d.find_element(By.CSS_SELECTOR, '.event[data-event-id="ev-phone-1"]')
         .get_attribute("data-review") == "confirmed", what="review shown")

    # Page focus changes reach the bot.
    cand.execute_script("window.dispatchEvent(new Event('blur'))")
    cand.execute_script("window.dispatchEvent(new Event('focus'))")
    until(lambda: [(p["kind"], p["active"]) for p in bot.page_events] == [("window_blur", True), ("window_blur", False)],
          what="page events at the bot")

    # The candidate reloads: the interviewer and the bot re-offer to the new socket.
    cand.get(iv["candidate_url"] + "&autojoin=1")
    wait(cand, lambda d: state(d) == "in-call" and remote_width(d) > 0, what="candidate back in call")
    wait(intv, lambda d: state(d) == "in-call" and remote_width(d) > 0, what="interviewer back in call")
    until(lambda: len(bot.answers) == 2, what="bot re-offered and got an answer")

    intv.save_screenshot(str(tmp_path / "interviewer.png"))
    cand.save_screenshot(str(tmp_path / "candidate.png"))

    # End: the report links carry the token; the candidate sees the interviewer leave.
    intv.find_element(By.ID, "end-interview").click()
    wait(intv, lambda d: d.find_element(By.ID, "end-confirm").is_displayed(), what="end dialog")
    intv.find_element(By.ID, "end-confirm").click()
    wait(intv, lambda d: state(d) == "ended", what="ended")
    assert server.store.interviews[iv["id"]]["status"] == "ended"
    token = iv["interviewer_url"].split("token=")[1]
    for ext in ("pdf", "csv", "json"):
        href = intv.find_element(By.ID, "report-" + ext).get_attribute("href")
        assert href.endswith(f"/api/interviews/{iv['id']}/report.{ext}?token={token}")
    wait(cand, lambda d: state(d) == "connected", what="candidate call dropped")
    with urllib.request.urlopen(intv.find_element(By.ID, "report-pdf").get_attribute("href"), timeout=10) as r:
        assert r.read().startswith(b"%PDF")


def test_bot_capacity_error_is_shown(server: Server, browsers) -> None:
    iv = server.create_interview()

    class Capacity(Exception):
        pass

    async def full(*args: Any) -> None:
        raise Capacity("all 2 bots are busy")

    server.bots.invite = full  # type: ignore[method-assign]
    intv = browsers()
    intv.get(iv["interviewer_url"])
    wait(intv, lambda d: state(d) == "connected", what="interviewer connected")
    intv.find_element(By.ID, "invite-bot").click()
    toast = wait(intv, lambda d: d.find_elements(By.CSS_SELECTOR, ".toast-error"), what="error toast")[0]
    assert "capacity" in toast.get_attribute("textContent").lower()
    assert intv.find_element(By.ID, "invite-bot").is_enabled()
