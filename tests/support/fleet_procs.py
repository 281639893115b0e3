"""Real `proctor` processes for the fleet tests and benchmarks: signaling nodes (``serve --no-worker``) and
workers (``worker``), each with its own environment and log file.

    node = ProctorProcess("node-a", ["serve", "--no-worker", "--port", "8001"], env, logs)
    await node.start(); await node.wait_http(); ...; node.kill(); await node.stop()
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.paths import REPO


class ProctorProcess:
    """One ``python -m bot.cli ...`` process whose output goes to ``<logs>/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", *self.args, cwd=str(REPO), env=self.env,
                stdout=log, stderr=asyncio.subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_log(self, pattern: str, timeout: float = 30.0, *, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the log from character ``after``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log(), after)
            if m:
                return m
            if not self.running:
                raise AssertionError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {pattern!r} within {timeout} s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    async def wait_http(self, url: str, timeout: float = 90.0) -> None:
        """Until ``url``/healthz answers 200 (imports and model checks take seconds on a busy machine)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if not self.running:
                    raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
                try:
                    async with http.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer on {url} within {timeout} s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a worker drains, a node shuts down), then SIGKILL after ``timeout`` s."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


def fleet_env(**extra: str) -> dict[str, str]:
    """The environment of a test's proctor process: this one's (models dir, PATH) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROCTOR_", "REDIS_", "MONGODB_", "SMTP_"))}
    if os.environ.get("PROCTOR_MODELS_DIR"):
        env["PROCTOR_MODELS_DIR"] = os.environ["PROCTOR_MODELS_DIR"]
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
