"""The product as people use it: two headless Chromium instances, the real server, the real bot.

The app as `proctor serve` builds it (`bot.app.running`: the real Store on SecantusDB, the real
bot and Reports with the mail outbox) runs in its own thread and event loop;
Selenium drives the candidate's page, whose fake camera plays a .y4m made from the
shared no-face video, and the interviewer's page.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import MEDIA

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FFMPEG = shutil.which("ffmpeg")
if not CHROMIUM or not CHROMEDRIVER or not FFMPEG:
    pytest.skip("needs Debian's chromium, chromium-driver and ffmpeg (./scripts/setup --test)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from bot.app import running  # noqa: E402
from tests.support.servers import free_port  # noqa: E402
from tests.support.waiting import wait_for_sync  # noqa: E402

CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1280,900",
]


class ServerThread:
    """`proctor serve`'s app, in a thread of its own."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._start())

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        # the bot in this process, so the test can read its session's figures (the fleet's processes: test_fleet);
        # the first operator key made as by `proctor serve`
        self._running = running(self.settings, bots="inprocess", first_key=True)
        app = await self._running.__aenter__()
        self.store, self.bots = app.store, app.bots
        self.key, self.start_link = app.first_key, app.start_link

    async def _stop(self) -> None:
        await self._running.__aexit__(None, None, None)

    def stop(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def api(self, method: str, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.settings.base_url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if r.headers.get_content_type() == "application/json" else raw
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def camera(tmp_path_factory) -> tuple[Path, Path]:
    """A fake camera: 12 s of the no-face video as .y4m (Chromium loops it), and speech."""
    d = tmp_path_factory.mktemp("camera")
    y4m = d / "noface.y4m"
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-i", str(MEDIA / "video/one-by-one-person-detection.mp4"),
                    "-t", "12", "-vf", "scale=640:360,fps=15", "-pix_fmt", "yuv420p", str(y4m)], check=True)
    return y4m, MEDIA / "audio/english.wav"


@pytest.fixture
def server(settings):
    settings.host, settings.port = "127.0.0.1", free_port()
    settings.secret_key = "browser-test-secret"
    srv = ServerThread(settings)
    yield srv
    srv.stop()


@pytest.fixture
def browsers(tmp_path):
    drivers = []

    def new(*extra: str):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in [*CHROME_FLAGS, *extra, f"--user-data-dir={tmp_path / f'profile{len(drivers)}'}"]:
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        drivers.append(driver)
        return driver

    yield new
    for d in drivers:
        d.quit()


def wait(driver, cond, timeout: float = 30, what: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond, message=f"waiting for {what}")


def alerts(driver, kind: str, change: str = "opened") -> list[dict]:
    return [a for a in (driver.execute_script("return window.proctorAlerts || []") or [])
            if a["change"] == change and a["event"]["type"] == kind]


def test_candidate_in_chromium_is_proctored_and_the_interviewer_is_alerted(server, browsers, camera, tmp_path):
    status, iv = server.api("POST", "/api/interviews", server.key, body={"candidate_name": "Chloé Chromium",
                                                             "interviewer_email": "ivan@example.com"})
    assert status in (200, 201), iv
    iid = iv["id"]
    y4m, wav = camera
    cand = browsers(f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}")
    intv = browsers()

    cand.get(iv["candidate_url"])
    notice = cand.find_element(By.ID, "consent").text.lower()
    assert "proctor" in notice and "interviewer" in notice
    assert cand.execute_script("return document.getElementById('local-video').srcObject") is None  # not before consent
    cand.find_element(By.ID, "join").click()
    intv.get(iv["interviewer_url"])
    for d in (cand, intv):
        wait(d, lambda d: d.execute_script("return document.getElementById('remote-video').videoWidth") > 0,
             what="the call's remote video")
    track = cand.execute_script("return document.getElementById('local-video').srcObject"
                                ".getAudioTracks()[0].getSettings()")
    assert (track["echoCancellation"], track["noiseSuppression"], track["autoGainControl"]) == (False, False, False)

    intv.find_element(By.ID, "invite-bot").click()
    wait(cand, lambda d: d.find_element(By.ID, "bot-indicator").get_attribute("data-present") == "true",
         what="bot indicator on the candidate's page")
    wait(intv, lambda d: alerts(d, "face_missing"), timeout=45, what="face_missing alert")
    # the bot's heartbeat on the interviewer's page: what it is doing, at what rate
    wait(intv, lambda d: d.find_element(By.ID, "bot-indicator").get_attribute("data-state") == "analysing",
         what="the bot's state on the interviewer's page")
    assert "faces/s" in intv.find_element(By.ID, "bot-indicator").text

    # the alert's path, frame taken by the bot -> the interviewer's page (same clock)
    session = server.bots.sessions[iid]
    fired = {eid: taken for change, eid, taken, _ in session.stats.fired if change == "opened"}
    got = [(a["receivedAt"] / 1000.0) - fired[a["event"]["id"]]
           for a in intv.execute_script("return window.proctorAlerts")
           if a["change"] == "opened" and a["event"]["id"] in fired]
    assert got and max(got) < 1.0
    print(f"\nbrowser alert latency (frame taken -> interviewer page): median {statistics.median(got) * 1000:.0f} ms, "
          f"max {max(got) * 1000:.0f} ms, n={len(got)}; bot analysed {session.stats.fps():.1f} frames/s")

    # the candidate's browser sends the bot only what it samples (faces at 5/s: 8 frames/s at most)
    sent = cand.execute_script("return window.proctorDebug.botSendParameters")
    assert sent and sent["maxFramerate"] == 8 and sent["maxBitrate"] == 500_000, sent
    video, audio = session.peer.video, session.peer.audio
    n0, a0, t0 = video.frames_received, audio.frames_received, time.monotonic()
    time.sleep(4)
    received = (video.frames_received - n0) / (time.monotonic() - t0)
    audio_packets = (audio.frames_received - a0) / (time.monotonic() - t0)
    print(f"frames the bot received from Chromium: {received:.1f}/s (camera 15/s, maxFramerate 8); "
          f"analysed {session.stats.fps():.1f}/s; audio packets {audio_packets:.1f}/s (a=ptime:60 asked)")
    assert 4.0 <= received <= 9.5
    sent_kbps = cand.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const bot = Array.from(window.proctorDebug.peers.values()).find((e) => e.role === "bot");
        const bytes = async () => {
          let n = 0;
          (await bot.pc.getStats()).forEach((r) => { if (r.type === "outbound-rtp" && r.kind === "video") n += r.bytesSent; });
          return n;
        };
        (async () => { const b0 = await bytes(); await new Promise((r) => setTimeout(r, 3000));
                       done(((await bytes()) - b0) * 8 / 3000); })();
    """)
    print(f"video bitrate Chromium sends the bot: {sent_kbps:.0f} kbit/s (maxBitrate 500)")
    assert 0 < sent_kbps <= 600  # capped (a little over for the packets' headers and key frames)
    assert 12.0 <= audio_packets <= 22.0  # 60 ms Opus packets (~16.7/s), not Chromium's default 20 ms (50/s)

    token = iv["interviewer_url"].split("token=")[1].split("&")[0]

    def stored_face_missing() -> list[dict]:  # written in the background, right after the alert
        status, listed = server.api("GET", f"/api/interviews/{iid}/events", token)
        assert status == 200
        return [e for e in listed["events"] if e["type"] == "face_missing"]

    assert wait_for_sync(stored_face_missing, 10), "the stored face_missing event"
    face_missing = stored_face_missing()

    # never on the candidate's page
    assert cand.execute_script("return window.proctorAlerts") is None
    assert "Face missing" not in cand.find_element(By.TAG_NAME, "body").text

    # leaving the window, from the real page's own listeners
    cand.execute_script("window.dispatchEvent(new Event('blur'))")
    time.sleep(1.6)
    cand.execute_script("window.dispatchEvent(new Event('focus'))")
    wait(intv, lambda d: alerts(d, "window_blur", "closed"), timeout=10, what="window_blur event")

    # review: confirm the face_missing event; the audit log keeps it
    eid = face_missing[0]["id"]
    button = f'.event[data-event-id="{eid}"] [data-action="confirmed"]'
    # the list re-renders as alerts arrive: find and click in one step
    wait(intv, lambda d: d.execute_script(f"const b = document.querySelector('{button}'); b && b.click(); return !!b"),
         what="confirm button")
    wait(intv, lambda d: d.execute_script(
        f"return document.querySelector('.event[data-event-id=\"{eid}\"]')?.dataset.review") == "confirmed",
         what="review state")

    def confirmed_in_audit() -> bool:  # the page shows the review as soon as it is clicked; the PATCH follows
        status, report = server.api("GET", f"/api/interviews/{iid}/report.json", token)
        assert status == 200
        return any(a["event_id"] == eid and a["action"] == "confirmed" for a in report["audit"])

    assert wait_for_sync(confirmed_in_audit, 10)

    intv.save_screenshot(str(tmp_path / "interviewer.png"))
    cand.save_screenshot(str(tmp_path / "candidate.png"))

    intv.find_element(By.ID, "end-interview").click()
    wait(intv, lambda d: d.find_element(By.ID, "end-confirm").is_displayed(), what="end dialog")
    intv.find_element(By.ID, "end-confirm").click()
    wait(intv, lambda d: d.execute_script("return document.body.dataset.state") == "ended", what="ended")
    assert not server.bots.running(iid)
    outbox = server.settings.outbox
    mails = list(outbox.glob("*.eml"))
    assert len(mails) == 1 and b"application/pdf" in mails[0].read_bytes()


def test_capacity_refusal_is_shown_to_the_interviewer(server, browsers):
    server.bots.max_calls = 0
    status, iv = server.api("POST", "/api/interviews", server.key, body={"candidate_name": "Full House",
                                                             "interviewer_email": "ivan@example.com"})
    assert status in (200, 201)
    intv = browsers()
    intv.get(iv["interviewer_url"])
    wait(intv, lambda d: d.execute_script("return document.body.dataset.state") in ("connected", "in-call"),
         what="interviewer connected")
    intv.find_element(By.ID, "invite-bot").click()
    # the toast is in the DOM before it is shown (and .text is '' until then): wait for its words
    text = wait(intv, lambda d: d.execute_script(
        "const t = document.querySelector('.toast-error'); return t && t.textContent.trim()"), what="error toast")
    assert "capacity" in text.lower() or "PROCTOR_MAX_BOTS" in text
    assert not server.bots.running(iv["id"])


def test_start_page_creates_an_interview_and_hands_out_both_links(server, browsers):
    page = browsers()
    page.get(server.start_link)  # the link `proctor serve` prints at its first start: the key in the fragment
    assert server.start_link.startswith(server.settings.base_url + "/#key=pk_")
    key_field = page.find_element(By.NAME, "operator_key")
    assert key_field.get_attribute("value") == server.key
    assert page.execute_script("return location.href") == server.settings.base_url + "/"  # out of the bar
    key_field.clear()
    key_field.send_keys("pk_not_a_real_key")
    page.find_element(By.NAME, "candidate_name").send_keys("Ana Start")
    page.find_element(By.NAME, "interviewer_email").send_keys("ana.lead@example.com")
    page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = wait(page, lambda d: d.find_element(By.ID, "error").text, what="key error")
    assert "Operator key" in error and "invalid" in error
    key_field.clear()
    key_field.send_keys(server.key)
    page.find_element(By.NAME, "interviewer_email").clear()
    page.find_element(By.NAME, "interviewer_email").send_keys("not-an-email")
    page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert page.execute_script("return document.body.dataset.state") == "idle"  # the browser's own check
    page.find_element(By.NAME, "interviewer_email").clear()
    page.find_element(By.NAME, "interviewer_email").send_keys("ana.lead@example.com")
    page.find_element(By.CSS_SELECTOR, "details summary").click()
    page.find_element(By.NAME, "policy").send_keys('{"rules": {"looking_away": {"dwel": 5}}}')
    page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    error = wait(page, lambda d: d.find_element(By.ID, "error").text, what="policy error")
    assert "dwel" in error  # the server's message names the bad key
    page.find_element(By.NAME, "policy").clear()
    page.find_element(By.NAME, "policy").send_keys('{"rules": {"looking_away": {"dwell": 5}}}')
    page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(page, lambda d: d.execute_script("return document.body.dataset.state") == "created", what="links")
    interviewer_url = page.find_element(By.ID, "interviewer-url").get_attribute("value")
    candidate_url = page.find_element(By.ID, "candidate-url").get_attribute("value")
    assert "token=" in interviewer_url and "token=" in candidate_url and interviewer_url != candidate_url
    iid = interviewer_url.split("/interview/")[1].split("?")[0]
    interview = server.call(server.store.get_interview(iid))
    assert interview["candidate_name"] == "Ana Start" and interview["policy"]["rules"]["looking_away"]["dwell"] == 5
    page.get(interviewer_url)
    wait(page, lambda d: d.execute_script("return document.body.dataset.state") in ("connected", "in-call"),
         what="interviewer page connected")
    page.get(server.settings.base_url + "/")  # the browser kept the key
    assert page.find_element(By.NAME, "operator_key").get_attribute("value") == server.key


def test_monitor_page_follows_a_call_held_in_janus(server, browsers, tmp_path):
    """The interviewer's monitor (the page without the call) for an interview held in a Janus VideoRoom: the real
    bot joins the room, where an aiortc candidate publishes the empty-room clip, and its alert reaches the page."""
    from tests.support.janus_publisher import JanusPublisher
    from tests.support.janus_server import PIN, ROOM, JanusServer, janus_executable

    if janus_executable() is None:
        pytest.skip("Debian's janus is not installed")
    janus = JanusServer(tmp_path / "janus")
    janus.start()
    candidate = JanusPublisher(janus.url, ROOM, "Jana Janus", pin=PIN,
                               video=MEDIA / "video/one-by-one-person-detection.mp4")
    try:
        server.call(candidate.start())
        status, iv = server.api("POST", "/api/interviews", server.key, body={
            "candidate_name": "Jana Janus", "interviewer_email": "ivan@example.com",
            "room": {"kind": "janus", "url": janus.url, "room": ROOM, "pin": PIN, "candidate": "Jana Janus"}})
        assert status == 201 and "/monitor?token=" in iv["monitor_url"], iv
        page = browsers()
        page.get(iv["interviewer_url"])
        assert page.execute_script("return document.body.dataset.mode") == "monitor"
        wait(page, lambda d: "Janus VideoRoom 1234" in d.find_element(By.ID, "platform-text").text,
             what="where the call is")
        assert PIN not in page.page_source
        assert not page.find_element(By.ID, "remote-video").is_displayed()
        wait(page, lambda d: d.execute_script("return document.body.dataset.state") == "connected",
             what="monitor connected")
        assert page.execute_script("return document.getElementById('local-video').srcObject") is None  # no camera

        page.find_element(By.ID, "invite-bot").click()
        wait(page, lambda d: d.find_element(By.ID, "bot-indicator").get_attribute("data-present") == "true",
             what="the bot's presence")
        wait(page, lambda d: "(janus): receiving" in d.find_element(By.ID, "chat-log").text,
             what="the bot's word that it receives the candidate's media")
        wait(page, lambda d: alerts(d, "face_missing"), timeout=60, what="face_missing alert")
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, '.event[data-type="face_missing"]'),
             what="face_missing in the alert list")
        page.save_screenshot(str(tmp_path / "monitor.png"))

        page.find_element(By.ID, "end-interview").click()
        wait(page, lambda d: d.find_element(By.ID, "end-confirm").is_displayed(), what="end dialog")
        page.find_element(By.ID, "end-confirm").click()
        wait(page, lambda d: d.execute_script("return document.body.dataset.state") == "ended", what="ended")
        assert not server.bots.running(iv["id"])
    finally:
        server.call(candidate.stop())
        janus.stop()
