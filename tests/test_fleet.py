"""The fleet end to end, on real parts: every call in a supervised child process of a worker, real WebRTC
candidates streaming real media, SecantusDB, and (across hosts) Debian's redis-server with real
``proctor serve --no-worker`` nodes and ``proctor worker`` processes."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.fleet import FleetSettings
from bot.fleet.jobs import RedisDispatch
from tests.support.candidate import CandidatePeer
from tests.support.clients import TEST_API_KEY, Listener, http, served
from tests.support.fleet_procs import ProctorProcess, fleet_env
from tests.support.paths import MEDIA
from tests.support.scenario import Segment, compose, still
from tests.support.servers import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

# admission by load is test_fleet_supervisor's; here a busy machine must not refuse the call under test
FAST = FleetSettings(call_timeout=10.0, worker_timeout=3.0, restart_delay=0.2, load_threshold=0.99, load_scope="worker")


@pytest.fixture(scope="module")
def two_people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of a still of two people: ``multiple_faces`` opens within seconds and stays open."""
    path = tmp_path_factory.mktemp("media") / "two_people.mp4"
    compose(path, [Segment("two", 20.0, still(MEDIA / "images/two_people.jpg"))])
    return path


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_now(listener: Listener, kind: str, for_at_least: float = 0.0) -> list[dict]:
    """Events of ``kind`` opened and not (yet) closed, as the interviewer's socket saw them; ``for_at_least``:
    only those whose opening reached the socket that many seconds ago."""
    closed = {e["id"] for e in listener.closed(kind)}
    return [a["event"] for t, a in listener.opened(kind)
            if a["event"]["id"] not in closed and time.time() - t >= for_at_least]


def new_opened(listener: Listener, kind: str, seen: set[str]) -> list[dict]:
    return [a["event"] for _, a in listener.alerts
            if a["change"] == "opened" and a["event"]["type"] == kind and a["event"]["id"] not in seen]


async def test_each_call_runs_in_its_own_process_and_a_killed_one_comes_back(settings, store, two_people):
    """The local worker of ``proctor serve`` (no Redis): the call runs in a child process; a full worker refuses
    another call (503); SIGKILL the call's process and the supervisor starts it again, the new bot closes the event its predecessor left open (interrupted), the gap
    is recorded, a new alert arrives; the end is clean."""
    settings.claim_timeout = 2.0
    async with served(settings, store, bots="fleet", reports=True, fleet=replace(FAST, max_calls=1)) as srv:
        assert srv.worker is not None
        iid = await srv.interview("Two Faces")
        token = srv.token(iid, "interviewer")
        interviewer = Listener()
        await interviewer.connect(srv.url, token)
        candidate = CandidatePeer(srv.url, srv.token(iid, "candidate"), two_people)
        await candidate.start()
        try:
            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot", headers=auth(token))
            assert status == 202, body
            # a still of two people may read as one face for a moment at first (see the test below)
            assert await wait_for(lambda: open_now(interviewer, "multiple_faces", 3.0), 40), interviewer.alerts
            await candidate.send_page_event("tab_hidden", True)
            assert await wait_for(lambda: interviewer.opened("tab_hidden"), 10), interviewer.alerts

            # the worker is full (one call at most): another interview's invitation is refused, saying why
            other = await srv.interview("Second Call")
            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{other}/bot",
                                         headers=auth(srv.token(other, "interviewer")))
            assert status == 503 and "no bot worker took the call" in body["error"]
            call = srv.worker.supervisor.calls()[iid]
            assert call.pid is not None and call.pid != os.getpid() and call.attempt == 1

            os.kill(call.pid, signal.SIGKILL)
            await asyncio.sleep(1.0)  # what the bot sent before it died has arrived; its successor is loading
            left_open = open_now(interviewer, "multiple_faces")
            assert left_open, interviewer.alerts
            first = left_open[-1]  # open when its bot died: the new bot has the server close it as interrupted
            old_bot = {a["event"]["id"] for _, a in interviewer.alerts}
            assert await wait_for(lambda: new_opened(interviewer, "multiple_faces", old_bot), 40), interviewer.alerts
            again = srv.worker.supervisor.calls()[iid]
            assert again.attempt == 2 and again.pid != call.pid and again.previous_end == "crash (signal 9)"
            closed = [e for e in interviewer.closed("multiple_faces") if e["id"] == first["id"]]
            assert closed and closed[0]["detail"]["interrupted"] is True  # the interviewer sees it close

            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/end", headers=auth(token))
            assert status == 200, body
            assert not await srv.bots.is_present(iid) and srv.worker.supervisor.calls() == {}
        finally:
            await candidate.stop()
            await interviewer.sio.disconnect()

    events = await store.list_events(iid)
    assert len({e.id for e in events}) == len(events)
    old = next(e for e in events if e.id == first["id"])
    assert old.end is not None and old.detail.get("interrupted") is True
    assert all(e.end is not None for e in events)  # the second bot closed its own on leaving
    new = [e for e in events if e.type == "multiple_faces" and e.id not in old_bot]
    assert new and min(e.start for e in new) >= old.end  # one clock for the call, across its bots
    interview = await store.get_interview(iid)
    assert interview is not None
    gaps = interview["bot_gaps"]
    assert len(gaps) == 1 and gaps[0]["reason"] == "bot restarting" and gaps[0]["to"] >= gaps[0]["from"]


async def test_without_a_worker_an_invitation_is_refused_in_seconds(settings, store):
    settings.claim_timeout = 1.0
    async with served(settings, store, bots="fleet", worker=False) as srv:
        iid = await srv.interview()
        t0 = time.monotonic()
        status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot",
                                     headers=auth(srv.token(iid, "interviewer")))
        assert status == 503 and "no bot worker took the call" in body["error"]
        assert time.monotonic() - t0 < 5


async def test_two_nodes_two_workers_a_killed_worker_is_replaced_and_redis_may_restart(
        tmp_path, mongo_server, redis_server, two_people):
    """Candidate and interviewer on node B, the bot on node A (WebRTC signaling and alerts cross the nodes
    through Redis); SIGKILL the worker running the call: the other worker takes it over and a new alert
    arrives, nothing is stored twice; Redis restarts empty mid-call: the call goes on and still ends cleanly."""
    common = {"MONGODB_URI": mongo_server.uri, "REDIS_URL": redis_server.url, "PROCTOR_SECRET_KEY": "fleet-test",
              "PROCTOR_API_KEY": TEST_API_KEY,
              "PROCTOR_WORKER_TIMEOUT": "3", "PROCTOR_LOAD_THRESHOLD": "0.99", "PROCTOR_LOAD_SCOPE": "worker"}
    logs = tmp_path / "logs"
    nodes, urls = [], []
    for name in ("node-a", "node-b"):
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}")
        env = fleet_env(**common, PROCTOR_DATA_DIR=str(tmp_path / name))
        nodes.append(ProctorProcess(name, ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
                                   env, logs))
    workers = [ProctorProcess(w, ["worker", "--worker-id", w], fleet_env(**common), logs) for w in ("w1", "w2")]
    procs = nodes + workers
    dispatch = RedisDispatch(redis_server.url)
    candidate: CandidatePeer | None = None
    interviewer = Listener()
    try:
        for p in procs:
            await p.start()
        for node, url in zip(nodes, urls, strict=True):
            await node.wait_http(url)
        for w in workers:
            await w.wait_log(r"worker w\d: up to", 60)
        a, b = urls
        status, created, _ = await http("POST", f"{a}/api/interviews", headers=auth(TEST_API_KEY),
                                        json={"candidate_name": "Two Faces", "interviewer_email": "i@example.com"})
        assert status == 201, created
        iid, token = created["id"], token_of(created["interviewer_url"])
        await interviewer.connect(b, token)
        candidate = CandidatePeer(b, token_of(created["candidate_url"]), two_people)
        await candidate.start()

        status, body, _ = await http("POST", f"{a}/api/interviews/{iid}/bot", headers=auth(token))
        assert status == 202, body
        # In its first seconds a still of two people may read as one face for a moment (the picture rule waits
        # for both faces to move, and the frame's noise moves one first): kill once an event has stayed open 3 s.
        assert await wait_for(lambda: open_now(interviewer, "multiple_faces", 3.0), 60), interviewer.alerts
        running = await dispatch.worker_of(iid)
        victim = next(w for w in workers if w.name == running)
        other = next(w for w in workers if w is not victim)

        t_kill = time.monotonic()
        victim.kill()
        await asyncio.sleep(1.0)  # what the bot sent before it died has arrived; its successor needs >= 3 s
        left_open = open_now(interviewer, "multiple_faces")
        assert left_open, interviewer.alerts
        first = left_open[-1]  # open when its bot died: the server closes it as interrupted
        old_bot = {a["event"]["id"] for _, a in interviewer.alerts}
        assert await wait_for(lambda: new_opened(interviewer, "multiple_faces", old_bot), 40), interviewer.alerts
        print(f"\nSIGKILL of the worker -> new alert from the bot on the other worker: "
              f"{time.monotonic() - t_kill:.1f} s")
        await other.wait_log(rf"call {iid} attempt 1 started .*previous end: worker lost", 5)
        assert await dispatch.worker_of(iid) == other.name

        seen = len(interviewer.alerts)
        await candidate.send_page_event("tab_hidden", True)  # node B -> the bot on node A -> node B
        assert await wait_for(lambda: any(a["event"]["type"] == "tab_hidden"
                                          for _, a in interviewer.alerts[seen:]), 20), interviewer.alerts[seen:]
        await candidate.send_page_event("tab_hidden", False)

        redis_server.stop()  # Redis restarts without its data: the call must go on
        await asyncio.sleep(1.0)
        redis_server.start()
        assert await wait_for(lambda: dispatch.worker_of(iid), 20)  # the worker put its job back
        # Pub/sub loses what is published while a node resubscribes (python-socketio backs off up to a few
        # seconds): the page toggles the tab until its event crosses both ways again.
        crossed = False
        for _ in range(10):
            seen = len(interviewer.alerts)
            await candidate.send_page_event("tab_hidden", True)  # node B -> the bot on node A -> node B
            crossed = await wait_for(lambda: any(a["event"]["type"] == "tab_hidden"
                                                 for _, a in interviewer.alerts[seen:]), 2)  # noqa: B023
            await candidate.send_page_event("tab_hidden", False)
            if crossed:
                break
        assert crossed, interviewer.alerts

        status, body, _ = await http("POST", f"{b}/api/interviews/{iid}/end", headers=auth(token))
        assert status == 200, body
        await other.wait_log(rf"call {iid} ended: stopped", 10)
    except BaseException:
        for p in procs:
            print(f"--- {p.name} ---\n{p.log()[-5000:]}")
        raise
    finally:
        if candidate is not None:
            await candidate.stop()
        if interviewer.sio.connected:
            await interviewer.sio.disconnect()
        for p in procs:
            await p.stop()
        await dispatch.close()

    from adapters.store import Store
    from bot.settings import Settings

    store = await Store.open(Settings(data_dir=tmp_path / "reader", mongodb_uri=mongo_server.uri))
    try:
        events = await store.list_events(iid)
        interview = await store.get_interview(iid)
    finally:
        await store.close()
    assert len({e.id for e in events}) == len(events)
    old = next(e for e in events if e.id == first["id"])
    assert old.detail.get("interrupted") is True and old.end is not None
    assert interview is not None and interview["bot_gaps"][0]["reason"] == "bot moved to another worker"
    assert interview["status"] == "ended"


async def test_a_call_that_keeps_crashing_is_given_up_and_the_interviewer_is_told(settings, store, tmp_path):
    """Models that cannot load make every attempt of the call's process fail: after its restarts the worker gives
    the call up, tells the server with the bot's token, and the interviewer's socket gets ``bot_status``."""
    from bot.analysis.detectors import ModelPaths
    from bot.callproc import make_worker
    from tests.support.clients import Peer

    broken = ModelPaths(yunet=tmp_path / "missing.onnx", face_landmarker=tmp_path / "missing.task",
                        yolo=tmp_path / "missing-yolo.onnx")
    async with served(settings, store, bots="fleet", worker=False) as srv:
        worker = make_worker(srv.bots.dispatch, broken, replace(FAST, max_restarts=1))  # 3: test_fleet_supervisor
        worker.start()
        try:
            iid = await srv.interview()
            token = srv.token(iid, "interviewer")
            interviewer = Peer()
            interviewer.sio.on("bot_status", interviewer._collector("error"))  # noted with the errors
            await interviewer.connect(srv.url, token)
            status, body, _ = await http("POST", f"{srv.url}/api/interviews/{iid}/bot", headers=auth(token))
            assert status == 202, body
            got = await interviewer.next("error", 60)
            assert got["state"] == "failed" and "crash" in got["reason"]
            stored = await store.get_interview(iid)
            assert stored is not None and "crash" in stored["bot_failed"]["reason"]
            await interviewer.close()
        finally:
            worker.stop()
            await worker.start()
