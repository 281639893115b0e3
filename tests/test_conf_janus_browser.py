"""The Janus adapter with a real client nobody here wrote: Chromium on Debian's Janus VideoRoom demo page.

``janus-demos`` ships ``videoroomtest.html`` (janus.js); the test serves that folder with its own
``settings.js`` (the demo's points at port 8088) and lets headless Chromium, with its fake camera
and microphone, join room 1234 under a display name and publish. The adapter finds that publisher by
name, receives its audio and video, and follows the page's Unpublish / Publish buttons. The room has
no pin here: the demo page cannot send one.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from adapters.conferencing import JanusRoom
from adapters.conferencing.janus import JanusSource
from tests.support.janus_publisher import room_participants
from tests.support.janus_server import ROOM, JanusServer, janus_executable
from tests.support.media_sink import TrackSink, until

DEMOS = Path("/usr/share/janus/demos")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (janus_executable() and CHROMIUM and CHROMEDRIVER and (DEMOS / "videoroomtest.html").is_file()):
    pytest.skip("needs Debian's janus, janus-demos, chromium and chromium-driver (./scripts/setup --test)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(90)]

CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--disable-features=WebRtcHideLocalIpsWithMdns",
]
CANDIDATE = "Candidate1"  # the demo accepts letters and digits only


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    server = JanusServer(tmp_path, pin=None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def demo_url(janus: JanusServer) -> AsyncIterator[str]:
    """The demo folder over HTTP, with a settings.js that points janus.js at the test's Janus."""
    settings = f'var server = "{janus.url}"; var iceServers = []; var token = null; var apisecret = null;'

    async def settings_js(_request: web.Request) -> web.Response:
        return web.Response(text=settings, content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/settings.js", settings_js)
    app.router.add_static("/", DEMOS, follow_symlinks=True)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/videoroomtest.html"
    await runner.cleanup()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _publish_from_demo(driver: webdriver.Chrome, url: str) -> None:
    """Open the demo, press Start, give the display name, register (the page then publishes)."""
    driver.get(url)
    driver.implicitly_wait(0)
    for _ in range(100):  # Start works once janus.js has initialised
        try:
            driver.find_element(By.ID, "start").click()
            field = driver.find_element(By.ID, "username")
            if field.is_displayed():
                break
        except WebDriverException:
            pass
        time.sleep(0.1)  # a worker thread: the event loop runs meanwhile
    field.send_keys(CANDIDATE)
    driver.find_element(By.ID, "register").click()


def _click(driver: webdriver.Chrome, element_id: str, timeout: float = 20.0) -> None:
    """Click the element once the page has made it (in a worker thread: selenium blocks)."""
    deadline = time.monotonic() + timeout
    while not (found := driver.find_elements(By.ID, element_id)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed #{element_id}")
        time.sleep(0.1)
    found[0].click()


async def test_follows_a_chromium_publisher_on_the_janus_demo_page(
    janus: JanusServer, demo_url: str, browser: webdriver.Chrome,
) -> None:
    sink = TrackSink()
    source = JanusSource(JanusRoom(url=janus.url, room=ROOM, candidate=CANDIDATE))
    try:
        await source.join(sink.on_track)
        await asyncio.to_thread(_publish_from_demo, browser, demo_url)
        await until(lambda: source.state == "receiving", "the adapter to receive the page's feed", 30)
        await until(lambda: sink.count("video") >= 10 and sink.count("audio") >= 20, "video and audio frames", 30)
        assert sink.kinds() == ["audio", "video"]
        listing = {p["display"]: p["publisher"] for p in await room_participants(janus.url, ROOM)}
        assert listing == {CANDIDATE: True, "Proctoring bot": False}

        await asyncio.to_thread(_click, browser, "unpublish")
        await until(lambda: source.state == "waiting for the candidate", "the adapter to see the unpublish")
        await asyncio.to_thread(_click, browser, "publish")
        await until(lambda: len(sink.tracks) == 4 and sink.count("video", 2) >= 10, "frames after the republish", 30)
        assert source.state == "receiving"
    finally:
        await source.leave()
        await sink.close()
