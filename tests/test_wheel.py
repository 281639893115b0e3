"""The package as a user installs it: a wheel built from a copy of the sources (no node_modules), installed in a
fresh venv, serving its pages from the installed files.

Offline: the wheel is built with the project venv's setuptools (``--no-build-isolation --no-index``); the fresh
venv (no system site-packages, no pip) gets the wheel alone (``--no-deps``) and reaches the dependencies through a
``.pth`` line naming the project venv's site-packages (a plain path: the ``.pth`` files there, such as the
editable install's finder, are not run, so ``bot``/``signaling`` come from the wheel only).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.paths import MODELS, REPO
from tests.support.servers import free_port

NOT_SOURCES = (".venv", ".git", "node_modules", "__pycache__", "build", "dist", "*.egg-info", ".*_cache")


def get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def install_wheel(tmp: Path) -> Path:
    """Build the wheel, make a fresh venv with it; its ``bin`` directory."""
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "wheels"), str(src)], check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp / "wheels").glob("proctor_bot-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=120)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "proctor-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


@pytest.mark.slow  # ~11 s on an idle machine, over 20 s on a busy one
def test_installed_wheel_serves_its_pages(tmp_path):
    t0 = time.monotonic()
    bin_dir = install_wheel(tmp_path)
    where = subprocess.run([str(bin_dir / "python"), "-c", "import signaling; print(signaling.__file__)"],
                           cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    installed_web = Path(where).parent / "web"
    assert installed_web.is_relative_to(tmp_path / "venv"), where  # not the source tree

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "PROCTOR_API_KEY", "PYTHONPATH")}
    env.update(PROCTOR_DATA_DIR=str(tmp_path / "data"), PROCTOR_MODELS_DIR=str(MODELS),
               PATH=f"{env.get('PATH', '')}:{Path(sys.executable).parent}")  # secantusd-py: the embedded database
    err = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(bin_dir / "proctor"), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdout is not None
        link = None
        while link is None:
            line = proc.stdout.readline()
            assert line, (tmp_path / "serve.log").read_text()[-2000:]  # exited without printing the link
            if b"#key=" in line:
                link = line.decode().strip()
        base = f"http://127.0.0.1:{port}"
        assert link.startswith(f"{base}/#key=pk_")
        key = link.split("#key=", 1)[1]

        status, ctype, page = get(base + "/")
        assert status == 200 and ctype.startswith("text/html")
        status, ctype, body = get(base + "/api/interviews", {"Authorization": f"Bearer {key}",
                                                             "Content-Type": "application/json"},
                                  b'{"candidate_name": "Wheel", "interviewer_email": "w@example.com"}')
        assert status == 201, body
        candidate_url = re.search(rb'"candidate_url": "([^"]+)"', body).group(1).decode()  # type: ignore[union-attr]
        status, ctype, page = get(candidate_url)
        assert status == 200 and ctype.startswith("text/html")
        scripts = re.findall(r'<script src="(/static/[^"]+)"', page.decode())
        assert "/static/vendor/socket.io.min.js" in scripts and "/static/candidate.js" in scripts
        for path in scripts:
            status, ctype, js = get(base + path)
            assert status == 200, path
            assert ctype.split(";")[0] in ("application/javascript", "text/javascript"), (path, ctype)
            assert js == (installed_web / path.removeprefix("/static/")).read_bytes()
        assert get(base + "/static/vendor/socket.io.min.js")[2] == (REPO / "signaling/web/vendor/socket.io.min.js"
                                                                    ).read_bytes()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()

    # an install without the Socket.IO client does not start: one line says what is missing
    (installed_web / "vendor" / "socket.io.min.js").unlink()
    done = subprocess.run([str(bin_dir / "proctor"), "serve", "--port", str(free_port())], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        f"proctor: error: the web pages are incomplete, missing in {installed_web}: vendor/socket.io.min.js "
        "(reinstall proctor-bot)"]
    print(f"\nwheel built, installed and served in {time.monotonic() - t0:.1f} s")
