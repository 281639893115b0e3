"""Debian's Janus WebRTC server (``apt-get install janus``) for tests, with a generated configuration.

`JanusServer` writes a configuration folder and runs ``janus -F DIR -C DIR/janus.jcfg``:

- plugins: the VideoRoom plugin only; transports: the HTTP transport only, on 127.0.0.1 and a free
  port (admin API off), plus the WebSocket transport (also loopback, free port) with
  ``websocket=True``. Janus loads every library in its plugins/transports folders, so the generated
  folders hold symlinks to just those libraries: nothing else starts, no port clashes with other
  tests or a system Janus.
- no STUN/TURN: host candidates only (the test peers are on this machine).
- one room, `ROOM`, protected by `PIN` (``pin=None``: open, as the Janus demo pages expect), with
  ``notify_joining`` so joins of non-publishers are announced too.

``stop()`` and ``start()`` restart it on the SAME port (a "Janus restart" for the tests: every
session is lost). ``log_tail()`` shows the end of its log for failure messages.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM = 1234
PIN = "room-pin-4711"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def janus_executable() -> str | None:
    return shutil.which("janus")


class JanusServer:
    """A real Janus process with only VideoRoom + HTTP, restartable on the same port."""

    def __init__(self, root: Path, port: int | None = None, *, session_timeout: int = 60,
                 websocket: bool = False, pin: str | None = PIN) -> None:
        self.root = root
        self.pin = pin
        self.session_timeout = session_timeout
        self.ws_port = free_port() if websocket else None
        self.conf = root / "conf"
        self.log_path = root / "janus.log"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def ws_url(self) -> str:
        assert self.ws_port is not None, "started without websocket=True"
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self) -> None:
        """The configuration folder: janus.jcfg, the HTTP transport's and the VideoRoom's files."""
        libs = [("plugins", "plugins/libjanus_videoroom.so"), ("transports", "transports/libjanus_http.so")]
        if self.ws_port is not None:
            libs.append(("transports", "transports/libjanus_websockets.so"))
        for sub, lib in libs:
            folder = self.conf / sub
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / Path(lib).name
            if not link.exists():
                link.symlink_to(JANUS_LIB / lib)
        for empty in ("events", "loggers"):
            (self.conf / empty).mkdir(parents=True, exist_ok=True)
        (self.conf / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{self.conf}"
    plugins_folder = "{self.conf / 'plugins'}"
    transports_folder = "{self.conf / 'transports'}"
    events_folder = "{self.conf / 'events'}"
    loggers_folder = "{self.conf / 'loggers'}"
    debug_level = 4
    session_timeout = {self.session_timeout}
    server_name = "proctor-bot-test"
}}
media: {{
}}
nat: {{
    nice_debug = false
    ice_ignore_list = "vmnet"
}}
plugins: {{
}}
transports: {{
}}
events: {{
    broadcast = false
}}
""")
        (self.conf / "janus.transport.http.jcfg").write_text(f"""
general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {self.port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
""")
        if self.ws_port is not None:
            (self.conf / "janus.transport.websockets.jcfg").write_text(f"""
general: {{
    json = "compact"
    ws = true
    ws_port = {self.ws_port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
""")
        (self.conf / "janus.plugin.videoroom.jcfg").write_text(f"""
general: {{
}}
room-{ROOM}: {{
    description = "Interview room"
{f'    pin = "{self.pin}"' if self.pin is not None else ""}
    publishers = 6
    bitrate = 512000
    fir_freq = 2
    audiocodec = "opus"
    videocodec = "vp8"
    notify_joining = true
}}
""")

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        exe = janus_executable()
        if exe is None:
            raise RuntimeError("janus is not installed (apt-get install janus)")
        self.write_config()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [exe, "-F", str(self.conf), "-C", str(self.conf / "janus.jcfg"), "-o"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"janus exited ({self.proc.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"janus did not answer within {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/info", timeout=0.5) as resp:
                return bool(json.load(resp).get("janus") == "server_info")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""
