"""Two signaling nodes on one Redis (Debian's redis-server), in this process: python-socketio's Redis manager
carries every emit to the node of its recipient, and the roster in Redis is the cluster's view of each
interview (one candidate and one bot per interview across nodes; a dead node's sockets expire)."""
from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from tests.support.clients import Peer, Served, served
from tests.support.waiting import wait_for


@asynccontextmanager
async def two_nodes(settings, store, redis_url: str) -> AsyncIterator[tuple[Served, Served]]:
    settings.redis_url = redis_url
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(served(copy.copy(settings), store))
        b = await stack.enter_async_context(served(copy.copy(settings), store))
        yield a, b


def roles(participants: dict) -> list[str]:
    return sorted(p["role"] for p in participants["participants"])


async def test_messages_cross_nodes_and_the_roster_is_shared(settings, store, redis_server):
    async with two_nodes(settings, store, redis_server.url) as (a, b):
        iid = await a.interview()
        bot = await Peer().connect(a.url, a.token(iid, "bot"))
        candidate = await Peer().connect(b.url, b.token(iid, "candidate"))
        interviewer = await Peer().connect(b.url, b.token(iid, "interviewer"))
        try:
            # everyone sees everyone, whichever node they are on
            seen = await interviewer.until("participants", lambda m: len(m["participants"]) == 3, 5)
            assert roles(seen) == ["bot", "candidate", "interviewer"]

            # WebRTC signaling from the bot on A to the candidate on B, and back
            await bot.sio.emit("signal", {"to": candidate.sid, "kind": "offer", "data": {"sdp": "x", "type": "offer"}})
            got = await candidate.next("signal", 5)
            assert got["from"] == bot.sid and got["role"] == "bot"
            await candidate.sio.emit("signal", {"to": bot.sid, "kind": "answer", "data": {"sdp": "y", "type": "answer"}})
            assert (await bot.next("signal", 5))["from"] == candidate.sid

            # the candidate's page event on B reaches the bot on A
            await candidate.sio.emit("page_event", {"kind": "tab_hidden", "active": True})
            page = await bot.next("page_event", 5)
            assert page["kind"] == "tab_hidden" and page["active"] is True

            # the bot's alert on A reaches the interviewer on B, never the candidate
            event = {"type": "tab_hidden", "start": 1.0, "end": None, "confidence": 1.0, "id": "ev-nodes-1"}
            await bot.sio.emit("bot_event", {"change": "opened", "event": event})
            alert = await interviewer.next("alert", 5)
            assert alert["event"]["id"] == "ev-nodes-1"
            assert await candidate.nothing("alert", 0.5)

            # a second candidate on A replaces the one on B: one candidate per interview across nodes
            again = await Peer().connect(a.url, a.token(iid, "candidate"))
            assert await wait_for(lambda: candidate.disconnected.is_set(), 5)
            seen = await interviewer.until("participants", lambda m: len(m["participants"]) == 3 and any(
                p["sid"] == again.sid for p in m["participants"]), 5)
            assert roles(seen) == ["bot", "candidate", "interviewer"]
            await again.close()
        finally:
            for peer in (bot, candidate, interviewer):
                await peer.close()


async def test_a_dead_nodes_sockets_leave_the_roster(settings, store, redis_server):
    settings.redis_url = redis_server.url
    async with served(copy.copy(settings), store) as a:
        iid = await a.interview()
        async with served(copy.copy(settings), store) as b:
            candidate = await Peer().connect(b.url, b.token(iid, "candidate"))
            interviewer = await Peer().connect(a.url, a.token(iid, "interviewer"))
            seen = await interviewer.until("participants", lambda m: len(m["participants"]) == 2, 5)
            assert roles(seen) == ["candidate", "interviewer"]
            hub_b = b.app.application[_hub_key()]
            await hub_b.roster.close()  # node B stops refreshing and vanishes: as if it died, sockets and all
            hub_b.roster.node_ttl = 0.5
        hub_a = a.app.application[_hub_key()]
        # B's shutdown removed its entries already; write one back as a crashed node would leave it
        await hub_a.roster.redis.hset(hub_a.roster._room(iid), "ghost-sid",
                                      '{"role":"candidate","name":"Ghost","node":"dead-node"}')
        people = await hub_a.roster.participants(iid)
        assert [p.role for p in people] == ["interviewer"]
        assert not await hub_a.roster.redis.hexists(hub_a.roster._room(iid), "ghost-sid")
        await interviewer.close()
        await candidate.close()


def _hub_key():
    from signaling import api

    return api.HUB
