"""Signed tokens: round trip, tampering, expiry, malformed input."""
from __future__ import annotations

import base64
import json
import time

import pytest

from signaling import tokens
from signaling.tokens import Claims, TokenError, issue, verify

SECRET = "test-secret-0123456789"


def test_round_trip_keeps_claims():
    tok = issue(SECRET, "iv123", "candidate", 60, name="Ada Lovelace")
    c = verify(SECRET, tok)
    assert c == Claims(interview_id="iv123", role="candidate", exp=c.exp, name="Ada Lovelace")
    assert time.time() + 55 < c.exp <= time.time() + 61


def test_token_is_url_safe():
    tok = issue(SECRET, "iv/with?odd&chars", "interviewer", 3600, name="Zoë ✓ + /")
    assert all(c.isalnum() or c in "-_." for c in tok)
    assert verify(SECRET, tok).name == "Zoë ✓ + /"


@pytest.mark.parametrize("role", tokens.ROLES)
def test_every_role_verifies(role):
    assert verify(SECRET, issue(SECRET, "iv", role, 10)).role == role


def test_unknown_role_cannot_be_issued():
    with pytest.raises(ValueError):
        issue(SECRET, "iv", "admin", 10)


def test_expired_token_is_refused():
    tok = issue(SECRET, "iv", "interviewer", 10, now=1000)
    assert verify(SECRET, tok, now=1009).interview_id == "iv"
    with pytest.raises(TokenError) as e:
        verify(SECRET, tok, now=1010)
    assert e.value.reason == "expired"
    with pytest.raises(TokenError, match="expired"):
        verify(SECRET, issue(SECRET, "iv", "candidate", -1))


def test_other_secret_is_a_bad_signature():
    tok = issue("another-secret", "iv", "interviewer", 60)
    with pytest.raises(TokenError) as e:
        verify(SECRET, tok)
    assert e.value.reason == "bad signature"


def _forge(tok: str, **changes) -> str:
    payload, sig = tok.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{new}.{sig}"


@pytest.mark.parametrize("change", [{"role": "interviewer"}, {"iid": "other"}, {"exp": 9999999999}])
def test_tampered_payload_is_a_bad_signature(change):
    tok = issue(SECRET, "iv", "candidate", 60)
    with pytest.raises(TokenError) as e:
        verify(SECRET, _forge(tok, **change))
    assert e.value.reason == "bad signature"


def test_flipped_signature_is_refused():
    tok = issue(SECRET, "iv", "candidate", 60)
    payload, sig = tok.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(TokenError, match="bad signature"):
        verify(SECRET, f"{payload}.{flipped}")


@pytest.mark.parametrize("bad", [
    "", "abc", "a.b.c", ".", "x.", ".y", "!!!.???", "a b.c", "x" * 5000 + ".y",
    None, 123, b"bytes.token",
])
def test_malformed_tokens(bad):
    with pytest.raises(TokenError) as e:
        verify(SECRET, bad)
    assert e.value.reason in ("malformed", "bad signature")


def test_validly_signed_but_wrong_shape_is_malformed():
    import hashlib
    import hmac
    for body in ([1, 2], {"iid": "", "role": "bot", "exp": 2**40}, {"iid": "x", "role": "root", "exp": 2**40},
                 {"iid": "x", "role": "bot", "exp": "soon"}, {"iid": "x", "role": "bot", "exp": True},
                 {"iid": "x", "role": "bot", "exp": 2**40, "name": 7}):
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        sig = base64.urlsafe_b64encode(
            hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
        with pytest.raises(TokenError) as e:
            verify(SECRET, f"{payload}.{sig}")
        assert e.value.reason == "malformed", body


def test_empty_secret_is_a_programming_error():
    with pytest.raises(ValueError):
        issue("", "iv", "bot", 10)
