"""Who is in which interview across every signaling node: the roster.

A node knows its own sockets (`signaling.rooms.Rooms`: a message always arrives on the node of its
sender). What other nodes' sockets are in the same interview is the roster's:

- ``LocalRoster``: one node; the roster is the node's own ``Rooms``.
- ``RedisRoster``: any number of nodes on one Redis. Each interview is a hash
  ``<prefix>:room:<interview id>`` (sid -> participant as JSON, with the node that holds the socket); a
  node's liveness is ``<prefix>:node:<node id>``, which the node refreshes every ``refresh`` s and which
  expires after ``node_ttl`` s. Participants of a dead node are left out of every answer and removed,
  so a node that died takes its sockets with it. The same refresh writes the node's own participants
  again, so Redis restarting without its data loses nobody for longer than one refresh.

One candidate and one bot per interview holds across nodes: ``join`` is one Lua script that removes the
previous socket of a single role and returns its sid; the server disconnects it wherever it is
(python-socketio's Redis manager forwards the disconnect to its node).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signaling.rooms import SINGLE_ROLES, Participant, Rooms

log = logging.getLogger("signaling.roster")

_JOIN = """
local replaced = ''
if ARGV[4] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] then
      local ok, p = pcall(cjson.decode, all[i + 1])
      if ok and p['role'] == ARGV[2] then
        redis.call('HDEL', KEYS[1], all[i])
        replaced = all[i]
      end
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return replaced
"""


class Roster(Protocol):
    """The cluster's view of the interviews' participants (see the module's docstring)."""

    async def join(self, interview_id: str, sid: str, role: str, name: str) -> str | None:
        """Add a socket of this node; returns the sid it replaces (same interview, single role), if any."""

    async def leave(self, sid: str) -> Participant | None:
        """Remove a socket of this node; its participant, if it was one."""

    async def participants(self, interview_id: str) -> list[Participant]: ...

    async def contains(self, interview_id: str, sid: str) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalRoster:
    """One node: the node's own rooms are the whole roster."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms

    async def join(self, interview_id: str, sid: str, role: str, name: str) -> str | None:
        return self.rooms.join(interview_id, sid, role, name)

    async def leave(self, sid: str) -> Participant | None:
        return self.rooms.leave(sid)

    async def participants(self, interview_id: str) -> list[Participant]:
        return self.rooms.participants(interview_id)

    async def contains(self, interview_id: str, sid: str) -> bool:
        p = self.rooms.get(sid)
        return p is not None and p.interview_id == interview_id

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisRoster:
    """Many nodes on one Redis (see the module's docstring)."""

    def __init__(self, rooms: Rooms, url: str, *, prefix: str = "proctor:{signaling}", node_id: str | None = None,
                 refresh: float = 3.0, node_ttl: float = 10.0, room_ttl: int = 86_400) -> None:
        self.rooms = rooms
        self.redis = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=2)
        self.prefix = prefix
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.refresh = refresh
        self.node_ttl = node_ttl
        self.room_ttl = room_ttl
        self._join = self.redis.register_script(_JOIN)
        self._task: asyncio.Task[None] | None = None

    def _room(self, interview_id: str) -> str:
        return f"{self.prefix}:room:{interview_id}"

    def _node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def _entry(self, p: Participant) -> str:
        return json.dumps({"role": p.role, "name": p.name, "node": self.node_id}, separators=(",", ":"))

    async def join(self, interview_id: str, sid: str, role: str, name: str) -> str | None:
        self.rooms.join(interview_id, sid, role, name)  # this node's own view; Redis decides replacements
        p = Participant(sid, interview_id, role, name)
        await self._beat()
        replaced = await self._join(keys=[self._room(interview_id)],
                                    args=[sid, role, self._entry(p), "1" if role in SINGLE_ROLES else "0",
                                          self.room_ttl])
        if replaced:
            self.rooms.leave(str(replaced))
        return str(replaced) or None

    async def leave(self, sid: str) -> Participant | None:
        p = self.rooms.leave(sid)
        if p is not None:
            try:
                await self.redis.hdel(self._room(p.interview_id), sid)
            except RedisError as e:  # the entry goes with the next refresh's check of who is local
                log.warning("roster: could not remove %s from Redis: %s", sid, e)
        return p

    async def participants(self, interview_id: str) -> list[Participant]:
        try:
            raw = await self.redis.hgetall(self._room(interview_id))
        except RedisError as e:
            log.warning("roster: Redis unavailable (%s); answering with this node's sockets only", e)
            return self.rooms.participants(interview_id)
        entries: dict[str, dict[str, str]] = {}
        for sid, value in raw.items():
            with contextlib.suppress(ValueError, TypeError):
                entries[str(sid)] = json.loads(value)
        nodes = sorted({entry.get("node", "") for entry in entries.values()})
        alive = dict(zip(nodes, await self.redis.mget([self._node(n) for n in nodes]), strict=True)) if nodes else {}
        out, dead = [], []
        for sid, entry in entries.items():
            node = entry.get("node", "")
            if node == self.node_id and self.rooms.get(sid) is None:
                dead.append(sid)  # this node's socket that has gone (a leave that could not reach Redis)
            elif node != self.node_id and alive.get(node) is None:
                dead.append(sid)  # its node died
            else:
                out.append(Participant(sid, interview_id, str(entry.get("role", "")), str(entry.get("name", ""))))
        if dead:
            with contextlib.suppress(RedisError):
                await self.redis.hdel(self._room(interview_id), *dead)
        return out

    async def contains(self, interview_id: str, sid: str) -> bool:
        if self.rooms.get(sid) is not None:
            return self.rooms.get(sid).interview_id == interview_id  # type: ignore[union-attr]
        return any(p.sid == sid for p in await self.participants(interview_id))

    async def _beat(self) -> None:
        await self.redis.set(self._node(self.node_id), "1", px=int(self.node_ttl * 1000))

    async def _refresh(self) -> None:
        """Keep this node alive, and write its participants again (Redis may have restarted empty)."""
        while True:
            try:
                await self._beat()
                async with self.redis.pipeline(transaction=False) as pipe:
                    for iid in self.rooms.interviews():
                        for p in self.rooms.participants(iid):
                            pipe.hset(self._room(iid), p.sid, self._entry(p))
                        pipe.expire(self._room(iid), self.room_ttl)
                    await pipe.execute()
            except RedisError as e:
                log.warning("roster: Redis unavailable (%s); the calls go on, retrying", e)
            await asyncio.sleep(self.refresh)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._refresh(), name=f"roster-{self.node_id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError):
            await self.redis.delete(self._node(self.node_id))
        await self.redis.aclose()
