"""Generators of malformed input for the fuzz tests and `benchmarks/bench_fuzz_memory.py` (hypothesis strategies
and a plain `random` generator, so the benchmark needs no hypothesis): JSON of every shape, wrong types, huge
and odd text (lone surrogates, NUL, right-to-left marks, emoji), and each Socket.IO message with its fields
mistyped."""
from __future__ import annotations

import json
import random
from typing import Any

from signaling import protocol

ODD_TEXT = ["", " ", "\x00", "\ud800", "\udfff", "a\udc80b", "\u202e", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "😀" * 50, "\n", "$set", "a.b",
            "../../etc/passwd", "%00", "' OR 1=1 --", "<script>alert(1)</script>", "x" * 70_000, "é" * 5000,
            "looking_away\n", "opened ", "1e999", "NaN", "-0", "true", "null"]
ODD_NUMBERS = [0, -1, 1, 1.5, -0.0, 2**53 + 1, -(2**63), 10**30, 10**400, -(10**400), 1e308, -1e308, 5e-324]
FIELDS = {
    "signal": ("to", "kind", "data"),
    "bot_event": ("change", "event", "snapshot_b64"),
    "page_event": ("kind", "active"),
    "chat": ("text",),
}
EVENT_FIELDS = ("type", "start", "end", "confidence", "detail", "id")
VALID: dict[str, dict[str, Any]] = {  # a well-formed message of each event, for mutating one field at a time
    "signal": {"to": "sid-of-someone", "kind": "offer", "data": {"type": "offer", "sdp": "v=0"}},
    "bot_event": {"change": "opened", "event": {"type": "looking_away", "start": 1.0, "end": None, "confidence": 0.9,
                                                "detail": {"yaw": 41.0, "faces": [1, 2]}, "id": "ev-1"},
                  "snapshot_b64": None},
    "page_event": {"kind": "tab_hidden", "active": True},
    "chat": {"text": "hello"},
}
DROP = object()


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a nested dict (the places a mutation can hit)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    return out


def mutate(message: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    """A deep copy of ``message`` with the field at ``path`` set to ``value`` (removed if `DROP`)."""
    out = json.loads(json.dumps(message))
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DROP:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


# --- plain random (the benchmark) ------------------------------------------------------------------

def random_json(rnd: random.Random, depth: int = 0) -> Any:
    r = rnd.random()
    if depth > 3 or r < 0.5:
        return rnd.choice([None, True, False, rnd.choice(ODD_NUMBERS), rnd.choice(ODD_TEXT)[:200],
                           rnd.randint(-10**6, 10**6), rnd.random()])
    if r < 0.75:
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice(ODD_TEXT)[:20]: random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


def random_message(rnd: random.Random, event: str) -> Any:
    """A payload for ``event``: its fields present with random values, some missing, some extra."""
    if rnd.random() < 0.2:
        return random_json(rnd)
    if event in VALID and rnd.random() < 0.5:
        base = VALID[event]
        base = mutate(base, ("event", "id"), f"ev-{rnd.getrandbits(48):x}") if event == "bot_event" else base
        return mutate(base, rnd.choice(paths(base)), DROP if rnd.random() < 0.2 else random_json(rnd))
    d: dict[str, Any] = {}
    for key in FIELDS.get(event, ("x",)):
        if rnd.random() < 0.85:
            d[key] = random_json(rnd)
    if event == "bot_event" and rnd.random() < 0.7:
        d["change"] = rnd.choice(protocol.CHANGES)
        d["event"] = {k: random_json(rnd) for k in EVENT_FIELDS if rnd.random() < 0.8}
        d["event"]["type"] = rnd.choice(["looking_away", "face_missing", "nope"])
    if event == "signal" and rnd.random() < 0.5:
        d["kind"] = rnd.choice(protocol.SIGNAL_KINDS)
    return d


def random_body(rnd: random.Random) -> bytes:
    """An HTTP body: malformed JSON, JSON of the wrong shape, or bytes."""
    r = rnd.random()
    if r < 0.2:
        return rnd.randbytes(rnd.randint(0, 300))
    if r < 0.4:
        text = json.dumps(random_json(rnd), ensure_ascii=rnd.random() < 0.5)
        return text[: rnd.randint(0, len(text))].encode("utf-8", "surrogatepass")  # cut short
    value = {k: random_json(rnd) for k in rnd.sample(
        ["candidate_name", "interviewer_email", "policy", "review", "note", "$where", ""], rnd.randint(0, 4))}
    return json.dumps(value).encode()


# --- hypothesis strategies (tests only) ------------------------------------------------------------

def strategies() -> Any:
    """A namespace of strategies: ``json``, ``message(event)``, ``body``, ``text``."""
    from hypothesis import strategies as st

    text = st.one_of(st.text(max_size=40), st.sampled_from(ODD_TEXT),
                     st.text(alphabet=st.characters(codec=None), max_size=30))
    numbers = st.one_of(st.integers(), st.floats(), st.sampled_from(ODD_NUMBERS))
    leaf = st.one_of(st.none(), st.booleans(), numbers, text)
    json_value = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)

    def fields(keys: tuple[str, ...], values: dict[str, Any]) -> Any:
        return st.fixed_dictionaries({}, optional={k: values.get(k, json_value) for k in keys})

    event_obj = fields(EVENT_FIELDS, {
        "type": st.one_of(st.sampled_from(["looking_away", "face_missing", "tab_hidden"]), json_value),
        "start": st.one_of(numbers, json_value), "end": st.one_of(numbers, json_value),
        "confidence": st.one_of(numbers, json_value),
        "id": st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True), text, json_value),
    })
    per_event = {
        "signal": fields(FIELDS["signal"], {"kind": st.one_of(st.sampled_from(protocol.SIGNAL_KINDS), json_value),
                                            "to": st.one_of(text, json_value)}),
        "bot_event": fields(FIELDS["bot_event"], {
            "change": st.one_of(st.sampled_from(protocol.CHANGES), json_value),
            "event": st.one_of(event_obj, json_value),
            "snapshot_b64": st.one_of(st.sampled_from(["/9j/4AAQ", "////", "not base64!", "/9j/" * 3]), json_value),
        }),
        "page_event": fields(FIELDS["page_event"], {
            "kind": st.one_of(st.sampled_from(protocol.PAGE_KINDS), json_value),
            "active": st.one_of(st.booleans(), json_value)}),
        "chat": fields(FIELDS["chat"], {"text": st.one_of(text, json_value)}),
    }

    odd = st.one_of(json_value, st.sampled_from(ODD_NUMBERS), st.sampled_from(ODD_TEXT),
                    st.dictionaries(st.sampled_from(ODD_TEXT[:12]), json_value, min_size=1, max_size=2),
                    st.just(DROP))

    def mutated(event: str) -> Any:
        base = VALID[event]
        return st.tuples(st.sampled_from(paths(base)), odd).map(lambda t: mutate(base, t[0], t[1]))

    def message(event: str) -> Any:
        if event not in VALID:
            return json_value
        return st.one_of(mutated(event), per_event[event], json_value)

    body = st.one_of(
        st.binary(max_size=200),
        json_value.map(lambda v: json.dumps(v).encode()),
        json_value.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        st.tuples(json_value, st.integers(0, 50)).map(lambda t: json.dumps(t[0]).encode()[: t[1]]),
        st.fixed_dictionaries({}, optional={
            k: json_value for k in ("candidate_name", "interviewer_email", "policy", "review", "note", "$set")
        }).map(lambda v: json.dumps(v).encode()),
    )

    class S:
        pass

    ns = S()
    ns.json, ns.message, ns.body, ns.text = json_value, message, body, text  # type: ignore[attr-defined]
    return ns
