"""Dispatch of calls ("jobs") to workers on Redis Streams, with a consumer group.

Two sides, each a small interface with a Redis implementation (``worker.LocalJobs`` implements both
without Redis, in one process):

- ``Dispatch``, the server's: ``submit`` a job, ``wait_claimed`` (cancelled atomically when nobody claims
  it in time, so a late reader can never start it), ``request_end``, ``worker_of``.
- ``JobSource``, a worker's: ``claim`` (only while the worker has room), ``takeover`` (XAUTOCLAIM of the
  jobs of a worker that stopped heartbeating), ``heartbeat`` (the worker's load, and for every job it runs
  a refresh of the pending entry's idle time; returns which jobs must end), ``ack``, ``release``.

Redis keys (all in one hash tag, so each script's keys share a Redis Cluster slot):

- ``<prefix>:jobs``: the stream; one entry per job waiting or running (fields ``iid``, ``job`` as JSON),
  group ``workers``, one consumer per worker id. A running job's entry stays pending with its worker,
  whose heartbeat keeps its idle time near 0; an entry idle for ``worker_timeout`` belongs to a dead worker.
- ``<prefix>:job:<id>``: the job's state: ``state`` (queued, claimed, cancelled), ``entry`` (its stream
  id), ``worker``, ``deadline`` (ms on Redis' clock: a queued job not claimed by then is never started),
  ``end`` (set when the server asks the call to end). Every change of state is one Lua script, so a claim,
  a cancel and a takeover never interleave.
- ``<prefix>:worker:<worker id>``: the worker's heartbeat (JSON load), expiring after ``worker_timeout``.

Redis restarting without its data does not end a running call: the worker's next heartbeat finds the job
unknown and puts it back (a new entry, pending with that worker), and the group is recreated on NOGROUP.
Connection errors on the worker side are raised as ``SourceUnavailable``; the worker loop retries with
backoff.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.fleet import Job

GROUP = "workers"
DEFAULT_PREFIX = "proctor:{fleet}"
CANCELLED_TTL_MS = 60_000  # how long a cancelled job's state stays readable
RELEASED_IDLE_MS = 86_400_000  # idle time given to a released entry: any worker's next takeover takes it
StreamRead = list[tuple[str, list[tuple[str, dict[str, str]]]]]  # XREADGROUP's answer, decoded


class SourceUnavailable(Exception):
    """Redis cannot be reached (or is restarting): nothing was decided; try again later."""


@dataclass(frozen=True)
class Beat:
    """What a worker's heartbeat learned: jobs whose end the server asked for, and jobs another worker
    has taken over (stop them and do not ack them)."""

    end: frozenset[str] = frozenset()
    lost: frozenset[str] = frozenset()


class Dispatch(Protocol):
    """The server's side of dispatch."""

    async def submit(self, job: Job, *, claim_timeout: float = 5.0) -> str:
        """Queue ``job`` (idempotent per job id while it is queued or running); returns its entry id."""

    async def wait_claimed(self, job_id: str, timeout: float) -> str | None:
        """The id of the worker that claimed the job; None after ``timeout`` s, the job then cancelled."""

    async def request_end(self, job_id: str) -> str:
        """Ask the running call to end ("requested"), cancel a queued one ("cancelled"), or "none"."""

    async def worker_of(self, job_id: str) -> str | None:
        """The worker running the job, or None."""


class JobSource(Protocol):
    """A worker's side of dispatch. Raises ``SourceUnavailable`` while it cannot reach its backend."""

    worker_id: str

    async def claim(self, wait: float) -> Job | None:
        """A new job for this worker, waiting up to ``wait`` s; call only while the worker has room."""

    async def takeover(self) -> Job | None:
        """A job of a worker that stopped heartbeating (its ``delivery`` counts the handovers), or None."""

    async def heartbeat(self, load: Mapping[str, Any]) -> Beat:
        """Report this worker alive with ``load``, keep its jobs its own; say which must end."""

    async def ack(self, job_id: str) -> None:
        """The call has ended: the job is done for good."""

    async def release(self, job_id: str) -> None:
        """This worker stops running the job without finishing it: another worker takes it over now."""

    async def close(self) -> None:
        """Free the connection."""


# --- Lua: every change of a job's state, atomically ---------------------------------------------------

_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function drop(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end
local function cancel(stream, group, jobkey, id)
  drop(stream, group, id)
  redis.call('HSET', jobkey, 'state', 'cancelled')
  redis.call('PEXPIRE', jobkey, CANCELLED_TTL_MS)
end
""".replace("CANCELLED_TTL_MS", str(CANCELLED_TTL_MS))

# KEYS: stream, job; ARGV: group, job id, payload, claim timeout ms
_SUBMIT = _LUA_COMMON + """
local h = redis.call('HMGET', KEYS[2], 'state', 'entry')
if h[1] == 'queued' or h[1] == 'claimed' then return h[2] end
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
local id = redis.call('XADD', KEYS[1], '*', 'iid', ARGV[2], 'job', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'state', 'queued', 'entry', id, 'deadline', now_ms() + tonumber(ARGV[4]))
return id
"""

# After XREADGROUP. KEYS: stream, job; ARGV: group, entry, worker. 1 start it, 0 leave it, -1 dropped
_MARK = _LUA_COMMON + """
local h = redis.call('HMGET', KEYS[2], 'state', 'entry', 'deadline')
if h[2] ~= ARGV[2] then drop(KEYS[1], ARGV[1], ARGV[2]) return -1 end
if h[1] == 'claimed' then return 0 end  -- a restored entry: its worker's heartbeat takes it back
if h[1] ~= 'queued' then drop(KEYS[1], ARGV[1], ARGV[2]) return -1 end
if now_ms() > tonumber(h[3]) then cancel(KEYS[1], ARGV[1], KEYS[2], ARGV[2]) return -1 end
redis.call('HSET', KEYS[2], 'state', 'claimed', 'worker', ARGV[3])
return 1
"""

# After XAUTOCLAIM moved an entry to this worker. KEYS: stream, job; ARGV: group, entry, worker.
# {1, deliveries} start it, {0, 0} not ours any more, {-1, 0} dropped
_ADOPT = _LUA_COMMON + """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return {0, 0} end
local h = redis.call('HMGET', KEYS[2], 'state', 'entry', 'deadline', 'end')
if h[2] ~= ARGV[2] or h[1] == 'cancelled' then drop(KEYS[1], ARGV[1], ARGV[2]) return {-1, 0} end
if h[4] then drop(KEYS[1], ARGV[1], ARGV[2]) redis.call('DEL', KEYS[2]) return {-1, 0} end
if h[1] == 'queued' and now_ms() > tonumber(h[3]) then
  cancel(KEYS[1], ARGV[1], KEYS[2], ARGV[2]) return {-1, 0}
end
redis.call('HSET', KEYS[2], 'state', 'claimed', 'worker', ARGV[3])
return {1, p[1][4]}
"""

# One running job in a heartbeat. KEYS: stream, job; ARGV: group, entry, worker, job id, payload.
# {'ok'|'end', entry}, {'lost', ''}, or {'restored'|'restored-end', new entry}
_BEAT = _LUA_COMMON + """
local function restore()
  redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  local id = redis.call('XADD', KEYS[1], '*', 'iid', ARGV[4], 'job', ARGV[5])
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, id, 'FORCE', 'JUSTID')
  -- pending with this worker already: move the group past it unless older entries still wait
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == ARGV[1] then
      local next = redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', 2)
      if #next == 1 and next[1][1] == id then redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], id) end
    end
  end
  redis.call('HSET', KEYS[2], 'state', 'claimed', 'entry', id, 'worker', ARGV[3])
  return id
end
local h = redis.call('HMGET', KEYS[2], 'state', 'entry', 'worker', 'end')
if not h[1] then return {'restored', restore()} end
if h[1] ~= 'claimed' or h[2] ~= ARGV[2] or h[3] ~= ARGV[3] then return {'lost', ''} end
local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
local kind = h[4] and 'end' or 'ok'
if #got == 0 then return {'restored-' .. kind, restore()} end
return {kind, ARGV[2]}
"""

# KEYS: stream, job; ARGV: group, entry, worker
_ACK = _LUA_COMMON + """
local h = redis.call('HMGET', KEYS[2], 'entry', 'worker')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] then return 0 end
drop(KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: stream, job; ARGV: group, entry, worker, idle ms
_RELEASE = _LUA_COMMON + """
local h = redis.call('HMGET', KEYS[2], 'entry', 'worker')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""

# KEYS: stream, job; ARGV: group. The worker that claimed it, or '' (cancelled now, or unknown)
_CANCEL = _LUA_COMMON + """
local h = redis.call('HMGET', KEYS[2], 'state', 'entry', 'worker')
if h[1] == 'queued' then cancel(KEYS[1], ARGV[1], KEYS[2], h[2]) return '' end
if h[1] == 'claimed' then return h[3] end
return ''
"""

# KEYS: stream, job; ARGV: group
_END = _LUA_COMMON + """
local h = redis.call('HMGET', KEYS[2], 'state', 'entry')
if h[1] == 'queued' then cancel(KEYS[1], ARGV[1], KEYS[2], h[2]) return 'cancelled' end
if h[1] == 'claimed' then redis.call('HSET', KEYS[2], 'end', '1') return 'requested' end
return 'none'
"""


# KEYS: stream; ARGV: group, idle ms. Drops consumers with nothing pending, idle that long: those of dead
# workers (their jobs taken over). A live one that was only idle is recreated by its next read.
_PRUNE = """
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
"""


def _payload(job: Job) -> str:
    return json.dumps({"id": job.id, "data": job.data}, separators=(",", ":"))


def _job(payload: str, delivery: int) -> Job:
    d = json.loads(payload)
    return Job(d["id"], d["data"], delivery)


class _RedisFleet:
    """The Redis client, key names and scripts both sides share."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        # Few, quick retries inside redis-py; a longer outage is the caller's to wait out.
        self.redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2))
        self.prefix = prefix
        self.stream = f"{prefix}:jobs"
        self._scripts = {name: self.redis.register_script(src) for name, src in (
            ("submit", _SUBMIT), ("mark", _MARK), ("adopt", _ADOPT), ("beat", _BEAT), ("ack", _ACK),
            ("release", _RELEASE), ("cancel", _CANCEL), ("end", _END), ("prune", _PRUNE))}

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def worker_key(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    async def _script(self, name: str, job_id: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[self.stream, self.job_key(job_id)], args=[GROUP, *args])

    async def close(self) -> None:
        await self.redis.aclose()


class RedisDispatch(_RedisFleet):
    """The server's side: submit jobs, learn who claimed them, ask them to end. Redis errors propagate
    (``redis.exceptions.ConnectionError``): the caller answers 503."""

    async def submit(self, job: Job, *, claim_timeout: float = 5.0) -> str:
        return str(await self._script("submit", job.id, job.id, _payload(job), int(claim_timeout * 1000)))

    async def wait_claimed(self, job_id: str, timeout: float, *, poll: float = 0.05) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state, worker = await self.redis.hmget(self.job_key(job_id), "state", "worker")
            except (RedisConnectionError, RedisTimeoutError):
                state, worker = "queued", None  # Redis away: keep waiting until the deadline
            if state == "claimed":
                return str(worker)
            if state != "queued":
                return None
            await asyncio.sleep(poll)
        return str(await self._script("cancel", job_id)) or None

    async def request_end(self, job_id: str) -> str:
        return str(await self._script("end", job_id))

    async def worker_of(self, job_id: str) -> str | None:
        state, worker = await self.redis.hmget(self.job_key(job_id), "state", "worker")
        return str(worker) if state == "claimed" else None

    async def workers(self) -> dict[str, dict[str, Any]]:
        """Live workers (heartbeat not expired) and their last reported load."""
        keys = [k async for k in self.redis.scan_iter(match=self.worker_key("*"), count=100)]
        values = await self.redis.mget(keys) if keys else []
        start = len(self.worker_key(""))
        return {k[start:]: json.loads(v) for k, v in zip(keys, values, strict=True) if v}


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisJobSource(_RedisFleet):
    """A worker's side: one consumer of the group, named by ``worker_id``.

    It remembers the entry of every job it handed out until ``ack`` or ``release`` (at most the worker's
    running calls), to refresh their pending entries in each heartbeat.
    """

    def __init__(self, url: str, *, worker_id: str | None = None, worker_timeout: float = 10.0,
                 prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(url, prefix=prefix)
        self.worker_id = worker_id or default_worker_id()
        self.worker_timeout = worker_timeout
        self._jobs: dict[str, tuple[str, str]] = {}  # job id -> (entry id, payload)
        self._group_ready = False
        self._next_prune = 0.0  # monotonic: when takeover next drops dead workers' empty consumers

    @contextlib.contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Redis unreachable -> ``SourceUnavailable``; a missing group (Redis restarted empty) too,
        after which the group is created again."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            raise SourceUnavailable(f"redis: {e}") from e
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._group_ready = False
            raise SourceUnavailable("redis: the consumer group is gone (restarted empty?)") from e

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def running(self) -> list[str]:
        """Jobs handed out and not yet acked or released."""
        return list(self._jobs)

    async def claim(self, wait: float) -> Job | None:
        with self._unavailable():
            await self._ensure_group()
            block = int(wait * 1000)
            resp = cast(StreamRead, await self.redis.xreadgroup(
                GROUP, self.worker_id, {self.stream: ">"}, count=1, block=block if block > 0 else None))
            for _stream, entries in resp or []:
                for entry, fields in entries:
                    job_id, payload = fields["iid"], fields["job"]
                    if await self._script("mark", job_id, entry, self.worker_id) == 1:
                        self._jobs[job_id] = (entry, payload)
                        return _job(payload, 1)
        return None

    async def takeover(self) -> Job | None:
        with self._unavailable():
            await self._ensure_group()
            if time.monotonic() >= self._next_prune:
                await self._scripts["prune"](keys=[self.stream], args=[GROUP, int(self.worker_timeout * 6000)])
                self._next_prune = time.monotonic() + self.worker_timeout
            cursor = "0-0"
            for _ in range(10):  # each XAUTOCLAIM scans a bounded part of the pending list
                cursor, claimed, *_ = await self.redis.xautoclaim(
                    self.stream, GROUP, self.worker_id, int(self.worker_timeout * 1000), cursor, count=1)
                for entry, fields in claimed:
                    if not fields:
                        continue
                    job_id, payload = fields["iid"], fields["job"]
                    verdict, deliveries = await self._script("adopt", job_id, entry, self.worker_id)
                    if verdict == 1:
                        self._jobs[job_id] = (entry, payload)
                        return _job(payload, int(deliveries))
                if cursor == "0-0":
                    break
        return None

    async def heartbeat(self, load: Mapping[str, Any]) -> Beat:
        end: set[str] = set()
        lost: set[str] = set()
        with self._unavailable():
            beat = {**load, "jobs": list(self._jobs), "at": time.time()}
            await self.redis.set(self.worker_key(self.worker_id), json.dumps(beat),
                                 px=int(self.worker_timeout * 1000))
            for job_id, (entry, payload) in list(self._jobs.items()):
                kind, new_entry = await self._script("beat", job_id, entry, self.worker_id, job_id, payload)
                if kind == "lost":
                    lost.add(job_id)
                    del self._jobs[job_id]
                    continue
                if kind.startswith("restored"):
                    self._jobs[job_id] = (new_entry, payload)
                if kind.endswith("end"):
                    end.add(job_id)
        return Beat(frozenset(end), frozenset(lost))

    async def ack(self, job_id: str) -> None:
        held = self._jobs.get(job_id)
        if held is None:
            return
        with self._unavailable():
            await self._script("ack", job_id, held[0], self.worker_id)
        del self._jobs[job_id]

    async def release(self, job_id: str) -> None:
        held = self._jobs.get(job_id)
        if held is None:
            return
        with self._unavailable():
            await self._script("release", job_id, held[0], self.worker_id, RELEASED_IDLE_MS)
        del self._jobs[job_id]
