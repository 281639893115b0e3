"""Memory of the server under a flood of malformed input: 10,000 messages over real Socket.IO and HTTP.

Starts `proctor serve` as its own process (embedded database, models from PROCTOR_MODELS_DIR or
../shared/models, a temporary data dir), creates an interview, connects an interviewer, a candidate and a bot,
then sends (by default) 10,000 malformed messages from `tests.support.fuzz`'s plain-random generator:

- 60% Socket.IO events from the three clients: every event the server handles and unknown ones, fields missing,
  mistyped, huge, odd Unicode (the per-socket rate limits apply, as in production);
- 10% raw Engine.IO/Socket.IO frames over a raw websocket (malformed JSON, empty and unknown packets; the server
  drops such a connection, so each one is a new connection);
- 30% HTTP requests to every route with malformed bodies, wrong methods and wrong, forged or missing tokens.

It prints the server's RSS (VmRSS from /proc) after start-up and warm-up, after the flood, and after a short
settle, the growth in MiB, how many answers were 5xx (should be 0), and whether the server still answers.

    .venv/bin/python benchmarks/bench_fuzz_memory.py [--messages 10000] [--seed 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import socketio

from signaling import protocol
from tests.support.fuzz import ODD_TEXT, random_body, random_json, random_message
from tests.support.paths import MODELS, REPO
from tests.support.servers import free_port

ROUTES = [("GET", "/healthz"), ("POST", "/api/interviews"), ("POST", "/api/interviews/{id}/bot"),
          ("POST", "/api/interviews/{id}/end"), ("GET", "/api/interviews/{id}/events"),
          ("GET", "/api/interviews/{id}/events/{eid}/snapshot"), ("PATCH", "/api/interviews/{id}/events/{eid}"),
          ("GET", "/api/interviews/{id}/report.csv"), ("GET", "/api/interviews/{id}/report.json"),
          ("GET", "/api/catalogue"), ("GET", "/interview/{id}"), ("GET", "/static/{path}"),
          ("POST", "/socket.io/"), ("GET", "/socket.io/")]
EVENTS = (*protocol.EVENTS, "nope", "", "alert", "x" * 200)
RAW = ['42["chat",', '42[]', '42{}', '42[1]', '42', '4', '9', '', 'x', 'b!!', '42["chat",1e999]',
       '42["chat",' + "9" * 5000 + "]", '451-["chat",{"_placeholder":true,"num":7}]', '46', '41']


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def wait_up(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            try:
                async with s.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("the server did not come up")


async def run(url: str, pid: int, messages: int, seed: int) -> None:
    rnd = random.Random(seed)
    statuses: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/api/interviews", json={"candidate_name": "Flood", "interviewer_email":
                                                            "f@example.com"}) as r:
            created = await r.json()
        iid = created["id"]
        tok = {role: parse_qs(urlsplit(created[f"{role}_url"]).query)["token"][0]
               for role in ("interviewer", "candidate")}
        clients = {}
        for role in ("interviewer", "candidate"):
            c = socketio.AsyncClient(reconnection=False)
            await c.connect(url, auth={"token": tok[role]}, transports=["websocket"], wait_timeout=10)
            clients[role] = c

        async def socket_message() -> None:
            role = rnd.choice(list(clients))
            c = clients[role]
            if not c.connected:  # the server dropped it (it never should for well-formed packets): count, rejoin
                statuses[f"{role} socket dropped"] += 1
                c = clients[role] = socketio.AsyncClient(reconnection=False)
                await c.connect(url, auth={"token": tok[role]}, transports=["websocket"], wait_timeout=10)
            event = rnd.choice(EVENTS)
            args = [random_message(rnd, event) for _ in range(rnd.choice((1, 1, 1, 0, 2)))]
            if c.connected:
                await c.emit(event, args[0] if len(args) == 1 else tuple(args))

        async def raw_frame() -> None:
            ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
            async with http.ws_connect(ws_url) as ws:
                await ws.receive(timeout=5)
                await ws.send_str("40" + json.dumps({"token": tok["interviewer"]}))
                await ws.receive(timeout=5)
                frame = rnd.choice(RAW)
                await (ws.send_bytes(rnd.randbytes(rnd.randint(0, 40))) if rnd.random() < 0.2 else ws.send_str(frame))

        async def http_request() -> None:
            method, path = rnd.choice(ROUTES)
            method = method if rnd.random() < 0.8 else rnd.choice(["GET", "POST", "PUT", "PATCH", "DELETE"])
            path = path.replace("{id}", iid if rnd.random() < 0.7 else quote(rnd.choice(ODD_TEXT)[:500] or "x",
                                                                             safe="", errors="surrogatepass"))
            path = path.replace("{eid}", quote(rnd.choice(ODD_TEXT)[:100] or "e", safe="", errors="surrogatepass"))
            path = path.replace("{path}", rnd.choice(["app.js", "../x", "x" * 300, ".git/config"]))
            token = rnd.choice([tok["interviewer"], tok["candidate"], "forged.token", "", str(random_json(rnd))[:300]])
            token = "".join(ch for ch in token.encode("ascii", "replace").decode() if " " <= ch < "\x7f")
            headers = {"Authorization": "Bearer " + token}
            if token == tok["interviewer"] and (method == "DELETE" or path.endswith(("/bot", "/end"))):
                token = tok["candidate"]  # keep the interview, and no bot: a call's analysis is not the flood's cost
                headers["Authorization"] = "Bearer " + token
            async with http.request(method, url + path, headers=headers, data=random_body(rnd),
                                    allow_redirects=False) as r:
                await r.read()
                statuses[f"{r.status // 100}xx"] += 1

        async def one() -> None:
            r = rnd.random()
            try:
                if r < 0.6:
                    await socket_message()
                elif r < 0.7:
                    await raw_frame()
                else:
                    await http_request()
            except (TimeoutError, aiohttp.ClientError, socketio.exceptions.SocketIOError) as exc:
                statuses[f"client error {type(exc).__name__}"] += 1

        for _ in range(200):  # warm-up: imports, caches, the first connections
            await one()
        await asyncio.sleep(1.0)
        before = rss_mib(pid)
        t0 = time.perf_counter()
        for i in range(messages):
            await one()
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the client sockets breathe
        took = time.perf_counter() - t0
        after = rss_mib(pid)
        await asyncio.sleep(3.0)
        settled = rss_mib(pid)
        async with http.get(url + "/healthz") as r:
            alive = r.status == 200
        for c in clients.values():
            await c.disconnect()
    print(f"{messages} malformed messages in {took:.1f} s ({messages / took:.0f}/s): ~60% Socket.IO events, "
          f"~10% raw frames (a new connection each), ~30% HTTP")
    print(f"server RSS: {before:.1f} MiB before, {after:.1f} MiB right after, {settled:.1f} MiB 3 s later")
    print(f"growth: {after - before:+.1f} MiB ({settled - before:+.1f} MiB settled)")
    print(f"HTTP answers: {dict(sorted(statuses.items()))}; 5xx: {statuses['5xx']}; "
          f"server answering afterwards: {alive}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log", help="keep the server's log in this file")
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROCTOR_DATA_DIR": tmp, "PROCTOR_PORT": str(port), "PROCTOR_HOST": "127.0.0.1",
               "PROCTOR_SECRET_KEY": "bench", "PROCTOR_MODELS_DIR": os.environ.get("PROCTOR_MODELS_DIR", str(MODELS))}
        env.pop("MONGODB_URI", None)
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(url, proc))
            asyncio.run(run(url, proc.pid, args.messages, args.seed))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            text = (Path(tmp) / "server.log").read_text(errors="replace")
            if args.log:
                Path(args.log).write_text(text)
            errors = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
            print(f"server log: {len(text.splitlines())} lines, {len(errors)} at ERROR or tracebacks")
            for line in errors[:5]:
                print("  ", line[:200])


if __name__ == "__main__":
    main()
