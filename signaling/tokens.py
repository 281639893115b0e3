"""HMAC-SHA256 signed, URL-safe tokens (stdlib only).

A token is ``<payload>.<signature>``, both unpadded URL-safe base64. The payload is
compact JSON ``{"iid": interview_id, "role": ..., "exp": unix_seconds, "name"?: ...}``;
the signature is HMAC-SHA256 over the encoded payload with the server's secret.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

ROLES: tuple[str, ...] = ("interviewer", "candidate", "bot", "reader")
CALL_ROLES: tuple[str, ...] = ("interviewer", "candidate", "bot")  # "reader": read-only links in webhooks
MAX_TOKEN_LENGTH = 2048


class TokenError(ValueError):
    """A token that cannot be used; ``reason`` is "malformed", "bad signature" or "expired"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    interview_id: str
    role: str
    exp: int
    name: str | None = None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise TokenError("malformed")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed") from None


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the token secret must not be empty")
    return key


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def issue(
    secret: str | bytes,
    interview_id: str,
    role: str,
    ttl: float,
    name: str | None = None,
    *,
    now: float | None = None,
) -> str:
    """A token for ``role`` in ``interview_id`` valid for ``ttl`` seconds."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not interview_id or not isinstance(interview_id, str):
        raise ValueError("interview_id must be a non-empty string")
    exp = int((time.time() if now is None else now) + ttl)
    body: dict[str, object] = {"iid": interview_id, "role": role, "exp": exp}
    if name is not None:
        body["name"] = name
    payload = _b64encode(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return f"{payload}.{_b64encode(_sign(_key(secret), payload))}"


def verify(secret: str | bytes, token: str, *, now: float | None = None) -> Claims:
    """The claims of a valid token; raises `TokenError` (malformed / bad signature / expired)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise TokenError("malformed")
    payload, sig_text = token.split(".")
    sig = _b64decode(sig_text)
    raw = _b64decode(payload)
    if not hmac.compare_digest(sig, _sign(_key(secret), payload)):
        raise TokenError("bad signature")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenError("malformed") from None
    if not isinstance(body, dict):
        raise TokenError("malformed")
    iid, role, exp, name = body.get("iid"), body.get("role"), body.get("exp"), body.get("name")
    if (
        not isinstance(iid, str) or not iid
        or role not in ROLES
        or isinstance(exp, bool) or not isinstance(exp, int)
        or (name is not None and not isinstance(name, str))
    ):
        raise TokenError("malformed")
    if (time.time() if now is None else now) >= exp:
        raise TokenError("expired")
    return Claims(interview_id=iid, role=role, exp=exp, name=name)
