"""The web pages' files: the vendored Socket.IO client is the pinned one, and a missing file is found at start."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from signaling.server import SOCKET_IO_JS, WEB_DIR, PagesMissing, check_pages, missing_page_files

VENDOR = WEB_DIR / "vendor"


def test_vendored_socket_io_is_the_pinned_release_with_its_license():
    sums = dict(reversed(line.split("  ", 1)) for line in (VENDOR / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"socket.io.min.js", "socket.io-client.LICENSE"}
    for name, digest in sums.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    pinned = json.loads((WEB_DIR / "package.json").read_text())["dependencies"]["socket.io-client"]
    assert SOCKET_IO_JS.read_text()[:200].splitlines()[1] == f" * Socket.IO v{pinned}"
    assert "MIT License" in (VENDOR / "socket.io-client.LICENSE").read_text()


def test_every_file_the_pages_load_is_there():
    assert missing_page_files() == []
    check_pages()


def test_a_missing_page_file_is_named_in_one_line(tmp_path):
    web = tmp_path / "web"
    shutil.copytree(WEB_DIR, web, ignore=shutil.ignore_patterns("node_modules"))
    (web / "vendor" / "socket.io.min.js").unlink()
    (web / "candidate.js").unlink()
    assert missing_page_files(web) == ["vendor/socket.io.min.js", "candidate.js"]
    (web / "index.html").unlink()
    with pytest.raises(PagesMissing) as e:
        check_pages(web)
    msg = str(e.value)
    assert "\n" not in msg and "index.html, vendor/socket.io.min.js, candidate.js" in msg
