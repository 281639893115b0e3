"""Operator API keys on the real server and the real store (SecantusDB): who may create interviews."""
from __future__ import annotations

import hashlib

import pytest

from bot.app import running
from bot.ports import KeyExists
from signaling import operators
from tests.support.clients import TEST_API_KEY, http, served
from tests.support.servers import free_port

BODY = {"candidate_name": "Cory Candidate", "interviewer_email": "iris@example.com"}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def create(srv, headers: dict, body: dict | None = None) -> tuple[int, dict, dict]:
    status, data, h = await http("POST", srv.url + "/api/interviews", headers=headers, json=body or BODY)
    return status, data, h


async def test_create_needs_a_valid_unrevoked_key(settings, store):
    stored = await operators.create_key(store, "ops")
    other = await operators.create_key(store, "other")
    async with served(settings, store) as srv:
        interview_token = srv.token("0" * 32, "interviewer")
        _, wrong = operators.new_key()
        refused = [
            ({}, "missing operator API key"),
            ({"Authorization": f"Basic {stored}"}, "missing operator API key"),
            (bearer(""), "missing operator API key"),
            (bearer("garbage"), "invalid operator API key"),
            (bearer(wrong), "invalid operator API key"),  # well formed, unknown id
            (bearer(stored[:-1] + ("A" if stored[-1] != "A" else "B")), "invalid operator API key"),  # known id
            (bearer(stored.replace(stored[3:15], other[3:15])), "invalid operator API key"),  # another's id
            (bearer(TEST_API_KEY + "x"), "invalid operator API key"),
            (bearer(interview_token), "invalid operator API key"),
        ]
        for headers, needle in refused:
            status, data, h = await create(srv, headers)
            assert status == 401 and needle in data["error"] and h["WWW-Authenticate"] == "Bearer", (headers, data)
        # a key never works from the URL (it would be in logs and histories)
        status, data, _ = await http("POST", srv.url + "/api/interviews", params={"key": stored, "token": stored},
                                     json=BODY)
        assert status == 401
        # no key, no check of the body either: nothing is said about it
        status, data, _ = await http("POST", srv.url + "/api/interviews", data=b"not json")
        assert status == 401 and "operator API key" in data["error"]
        assert await store.interviews.count_documents({}) == 0

        # the key from the environment and the stored one both work; the stored one's use is noted
        status, data, _ = await create(srv, srv.operator)
        assert status == 201, data
        (before,) = [k for k in await store.list_operator_keys() if k["name"] == "ops"]
        assert before["last_used_at"] is None
        status, data, _ = await create(srv, bearer(stored))
        assert status == 201, data
        (after,) = [k for k in await store.list_operator_keys() if k["name"] == "ops"]
        assert after["last_used_at"] is not None and "hash" not in after

        # revoked: refused at once, said so; the other key still works
        assert await store.revoke_operator_key("ops") is True
        assert await store.revoke_operator_key("ops") is False
        status, data, h = await create(srv, bearer(stored))
        assert status == 401 and data == {"error": "this operator API key has been revoked"}
        assert h["WWW-Authenticate"] == "Bearer"
        status, _, _ = await create(srv, bearer(other))
        assert status == 201
    assert await store.interviews.count_documents({}) == 3


async def test_only_a_hash_is_stored_and_names_are_checked(store):
    key = await operators.create_key(store, "ci-runner@host")
    assert key.startswith("pk_") and len(key) == 3 + 12 + 1 + 43
    (doc,) = await store.operator_keys.find({}).to_list(None)
    assert doc["hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(doc) and key.split("_", 2)[2] not in str(doc)
    with pytest.raises(KeyExists):
        await operators.create_key(store, "ci-runner@host")
    for bad in ("", "env", "a b", "x" * 65, "-lead", "ünï", "a\nb"):
        with pytest.raises(ValueError, match="key name"):
            await operators.create_key(store, bad)
    # a revoked key's name can be given to a new key; the old key stays dead
    assert await store.revoke_operator_key("ci-runner@host")
    again = await operators.create_key(store, "ci-runner@host")
    ops = operators.Operators(store)
    assert (await ops.authenticate(again)).name == "ci-runner@host"
    with pytest.raises(operators.OperatorAuthError, match="invalid"):
        await ops.authenticate(key)


async def test_creation_is_rate_limited_per_key(settings, store):
    settings.create_rate = 2
    second = await operators.create_key(store, "second")
    async with served(settings, store) as srv:
        status, data, _ = await create(srv, srv.operator, {"candidate_name": "x"})
        assert status == 400  # a rejected body costs nothing
        for _ in range(2):
            status, data, _ = await create(srv, srv.operator)
            assert status == 201, data
        status, data, h = await create(srv, srv.operator)
        assert status == 429 and "2 per minute" in data["error"], data
        assert 25 <= int(h["Retry-After"]) <= 30  # one creation every 30 s
        status, _, _ = await create(srv, bearer(second))  # another key has its own bucket
        assert status == 201
    assert await store.interviews.count_documents({}) == 3


async def test_first_start_makes_one_key_only_when_there_is_none(settings, store):
    settings.host, settings.port = "127.0.0.1", free_port()
    async with running(settings, store=store, bots=None, reports=False, first_key=True) as app:
        assert app.first_key and app.start_link == f"{app.url}/#key={app.first_key}"
        status, data, _ = await http("POST", app.url + "/api/interviews", headers=bearer(app.first_key),
                                     json=BODY)
        assert status == 201, data
    assert [k["name"] for k in await store.list_operator_keys()] == ["first"]
    settings.port = free_port()
    async with running(settings, store=store, bots=None, reports=False, first_key=True) as app:
        assert app.first_key is None and app.start_link is None  # one is stored: nothing new, nothing printed
    await store.revoke_operator_key("first")
    settings.api_key = TEST_API_KEY
    settings.port = free_port()
    async with running(settings, store=store, bots=None, reports=False, first_key=True) as app:
        assert app.first_key is None  # PROCTOR_API_KEY is a key
    assert len(await store.list_operator_keys()) == 1


def test_keys_cli_create_list_revoke(tmp_path, mongo_server, monkeypatch, capsys):
    """`proctor keys` on the embedded database: the key is printed once, listed never, revoked by name."""
    import asyncio

    from adapters.store import Store
    from bot.cli import main
    from bot.settings import Settings

    monkeypatch.setenv("MONGODB_URI", mongo_server.uri)
    monkeypatch.setenv("PROCTOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PROCTOR_API_KEY", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["keys", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("create", "lead")
    key = out.strip()
    assert code == 0 and key.startswith("pk_") and "\n" not in key
    assert "shown only now" in err and f"/#key={key}" in err

    async def use(k: str) -> str:
        store = await Store.open(Settings.from_env())
        try:
            return (await operators.Operators(store).authenticate(k)).name
        finally:
            await store.close()

    assert asyncio.run(use(key)) == "lead"
    code, out, _ = run("create", "ci")
    ci_key = out.strip()
    assert code == 0 and ci_key != key
    code, out, _ = run("list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "CREATED", "LAST", "USED", "STATUS"]
    assert [ln.split()[0] for ln in lines[1:]] == ["lead", "ci"]
    assert lines[1].split()[2] != "-" and lines[1].endswith("active")  # lead was used
    assert lines[2].split()[2] == "-"  # ci never
    assert key not in out and ci_key not in out and key.split("_", 2)[2] not in out

    assert run("revoke", "lead")[0] == 0
    with pytest.raises(operators.OperatorAuthError, match="revoked"):
        asyncio.run(use(key))
    assert asyncio.run(use(ci_key)) == "ci"
    code, out, _ = run("list")
    assert "revoked" in out.splitlines()[1] and out.splitlines()[2].endswith("active")

    code, _, err = run("revoke", "lead")
    assert code == 3 and err.strip() == "proctor: error: no active operator key named 'lead'"
    code, _, err = run("create", "ci")
    assert code == 3 and "exists" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("create", "no spaces")
    assert code == 2 and "key name" in err
    assert run("create")[0] == 2 and run("revoke")[0] == 2 and run("list", "x")[0] == 2

    monkeypatch.setenv("PROCTOR_API_KEY", TEST_API_KEY)
    code, out, _ = run("list")
    assert out.splitlines()[-1].split()[0] == "env" and "PROCTOR_API_KEY" in out and TEST_API_KEY not in out
