"""Operator API keys: who may create interviews.

A stored key is ``pk_<id>_<secret>``: ``id`` (12 hex digits) names its record, ``secret`` is 32 random bytes
(URL-safe base64). Only ``sha256(key)`` is stored (`bot.ports.OperatorKeys`); a random 256-bit secret needs no
slow hash. A presented key is looked up by its id and its hash compared with `hmac.compare_digest`, so the
comparison takes the same time however much of it matches. ``PROCTOR_API_KEY`` adds one key from the
environment (compared the same way, by hash), named ``env``.

Interview creation is rate-limited per key: a token bucket of ``PROCTOR_CREATE_RATE`` per minute (burst as
large), 429 with ``Retry-After`` beyond it.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from bot.ports import OperatorKeys
from signaling.protocol import TokenBucket

PREFIX = "pk_"
ENV_NAME = "env"
_KEY = re.compile(r"^pk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_BUCKETS = 10_000  # buckets kept in memory; only valid keys get one, so this is never reached in practice


class OperatorAuthError(Exception):
    """No valid operator key: the API answers 401 with this reason."""


class RateLimited(Exception):
    """Too many interviews created with this key: the API answers 429 with ``Retry-After``."""

    def __init__(self, retry_after: int, rate: float) -> None:
        super().__init__(f"too many interviews created with this key (limit {rate:g} per minute); "
                         f"retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Operator:
    """The key a request was made with: its id (``env`` for ``PROCTOR_API_KEY``) and name."""

    id: str
    name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A new key and its id: ``(key_id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def valid_name(name: str) -> bool:
    return NAME.match(name) is not None and name != ENV_NAME


async def create_key(keys: OperatorKeys, name: str) -> str:
    """Make a key named `name`, store its hash, return the key (shown once: it cannot be read back).
    `ValueError` for a bad name, `bot.ports.KeyExists` if the name is taken."""
    if not valid_name(name):
        raise ValueError(f"a key name is 1-64 letters, digits or . _ @ - (not {ENV_NAME!r}), got {name!r}")
    key_id, key = new_key()
    await keys.add_operator_key(key_id=key_id, name=name, key_hash=hash_key(key))
    return key


class Operators:
    """Checks operator keys and rate-limits what each key creates."""

    def __init__(self, keys: OperatorKeys, *, env_key: str | None = None, per_minute: float = 30.0) -> None:
        self.keys = keys
        self._env_hash = hash_key(env_key) if env_key else None
        self.per_minute = per_minute
        self._buckets: dict[str, TokenBucket] = {}

    async def authenticate(self, key: str | None) -> Operator:
        """The operator whose key this is; `OperatorAuthError` for a missing, unknown or revoked key."""
        if not key:
            raise OperatorAuthError("missing operator API key (send Authorization: Bearer <key>)")
        digest = hash_key(key)
        if self._env_hash is not None and hmac.compare_digest(digest, self._env_hash):
            return Operator(ENV_NAME, ENV_NAME)
        m = _KEY.match(key)
        record: dict[str, Any] | None = await self.keys.get_operator_key(m.group(1)) if m else None
        if record is None or not hmac.compare_digest(digest, str(record.get("hash", ""))):
            raise OperatorAuthError("invalid operator API key")
        if record.get("revoked_at"):
            raise OperatorAuthError("this operator API key has been revoked")
        await self.keys.operator_key_used(record["id"])
        return Operator(record["id"], record["name"])

    def take(self, operator: Operator, now: float | None = None) -> None:
        """Count one creation against the key's bucket; `RateLimited` when it is empty."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(operator.id)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[operator.id] = TokenBucket(self.per_minute / 60.0, max(1.0, self.per_minute))
        if not bucket.take(now):
            raise RateLimited(max(1, math.ceil(bucket.wait())), self.per_minute)
