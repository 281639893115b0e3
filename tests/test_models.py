"""Model registry: resolve, verify, status, and fetch from a local HTTP server (no internet)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from adapters import models
from adapters.models import MODELS, ModelError, fetch, resolve, sha256_of, status
from bot.settings import Settings

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"


def settings_for(tmp_path: Path, models_dir: Path | None) -> Settings:
    return Settings(models_dir=models_dir, cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")


@pytest.fixture
def serve():
    """serve(folder) -> base URL of a static HTTP server on 127.0.0.1 for that folder."""
    servers = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    def start(folder: Path) -> str:
        handler = functools.partial(Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/models"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def mirror(tmp_path: Path, files: dict[str, bytes | Path]) -> Path:
    root = tmp_path / "www"
    (root / "models").mkdir(parents=True)
    for name, content in files.items():
        target = root / "models" / name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)
    return root


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_manifest_matches_the_shared_files():
    for spec in MODELS.values():
        p = SHARED_MODELS / spec.file
        assert p.stat().st_size == spec.size
        assert sha256_of(p) == spec.sha256
        assert spec.url.startswith("https://")
    assert MODELS["yolo"].url == "https://github.com/ultralytics/yolov5/releases/download/v6.1/yolov5n.pt"


def test_resolve_from_models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCTOR_MODELS_DIR", str(SHARED_MODELS))
    monkeypatch.setenv("PROCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PROCTOR_YOLO_MODEL", raising=False)
    s = Settings.from_env()
    for name, spec in MODELS.items():
        assert resolve(name, s) == SHARED_MODELS / spec.file
    paths = models.model_paths(s)
    assert paths.face_landmarker == SHARED_MODELS / MODELS["face_landmarker"].file
    # the detectors get YuNet with a free input size and YOLOv5n cut at its heads, derived into the cache
    # (tests/test_derived.py)
    assert paths.yolo.parent == tmp_path / "cache" / "models" and paths.yolo.name.startswith("yolov5n-heads-")
    assert paths.yunet.parent == tmp_path / "cache" / "models" and "-free-" in paths.yunet.name


def test_resolve_falls_back_to_the_user_cache(tmp_path):
    s = settings_for(tmp_path, tmp_path / "empty")
    cache_models = s.cache_dir / "models"
    cache_models.mkdir(parents=True)
    shutil.copyfile(SHARED_MODELS / MODELS["yunet"].file, cache_models / MODELS["yunet"].file)
    assert resolve("yunet", s) == cache_models / MODELS["yunet"].file


def test_missing_model_is_one_clear_line(tmp_path):
    s = settings_for(tmp_path, tmp_path / "nowhere")
    with pytest.raises(ModelError) as e:
        resolve("face_landmarker", s)
    msg = one_line(e)
    assert "face_landmarker.task" in msg
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "cache" / "models") in msg
    assert "proctor models fetch" in msg and "PROCTOR_MODELS_DIR" in msg


def test_corrupt_model_is_refused_and_cache_follows_the_file(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    p = d / MODELS["yunet"].file
    shutil.copyfile(SHARED_MODELS / p.name, p)
    s = settings_for(tmp_path, d)
    assert resolve("yunet", s) == p
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte changed
    p.write_bytes(bytes(data))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(ModelError) as e:
        resolve("yunet", s)
    msg = one_line(e)
    assert "corrupt" in msg and str(p) in msg and "proctor models fetch" in msg


def test_exported_yolo_is_verified_by_its_sidecar(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    onnx = d / "yolov5n.onnx"
    onnx.write_bytes(b"an ONNX file exported on this machine")
    s = settings_for(tmp_path, d)
    with pytest.raises(ModelError):
        resolve("yolo", s)  # no sidecar: not the manifest's bytes
    (d / "yolov5n.onnx.sha256").write_text(hashlib.sha256(onnx.read_bytes()).hexdigest() + "  yolov5n.onnx\n")
    assert resolve("yolo", s) == onnx
    (d / "yolov5n.onnx.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ModelError) as e:
        resolve("yolo", s)
    assert "sidecar" in one_line(e)


def test_own_yolo_model(tmp_path, monkeypatch, caplog):
    own = tmp_path / "yolo11n.onnx"
    shutil.copyfile(SHARED_MODELS / "yolov5n.onnx", own)
    s = settings_for(tmp_path, tmp_path / "empty")
    monkeypatch.setenv("PROCTOR_YOLO_MODEL", str(own))
    with caplog.at_level(logging.WARNING, logger="adapters.models"):
        assert resolve("yolo", s) == own
    assert "unverified" in caplog.text
    (tmp_path / "yolo11n.onnx.sha256").write_text(sha256_of(own))
    assert resolve("yolo", s) == own
    row = next(r for r in status(s) if r["name"] == "yolo")
    assert row["verified"] and row["path"] == str(own)
    (tmp_path / "yolo11n.onnx.sha256").write_text("f" * 64)
    with pytest.raises(ModelError):
        resolve("yolo", s)
    monkeypatch.delenv("PROCTOR_YOLO_MODEL")
    with pytest.raises(ModelError) as e:
        resolve("yolo", s, yolo_model=tmp_path / "absent.onnx")
    assert "absent.onnx" in one_line(e)


def test_status_rows(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    shutil.copyfile(SHARED_MODELS / MODELS["yunet"].file, d / MODELS["yunet"].file)
    (d / "face_landmarker.task").write_bytes(b"truncated")
    rows = {r["name"]: r for r in status(settings_for(tmp_path, d), yolo_model=None)}
    assert set(rows) == set(MODELS)
    assert rows["yunet"]["present"] and rows["yunet"]["verified"]
    assert rows["face_landmarker"]["present"] and not rows["face_landmarker"]["verified"]
    assert "corrupt" in rows["face_landmarker"]["message"]
    assert not rows["yolo"]["present"] and "proctor models fetch" in rows["yolo"]["message"]
    for r in rows.values():
        assert set(r) == {"name", "file", "path", "present", "verified", "message"}


def test_fetch_from_a_local_mirror(tmp_path, serve):
    root = mirror(tmp_path, {spec.file: SHARED_MODELS / spec.file for spec in MODELS.values()})
    dest = tmp_path / "dest"
    paths = fetch(None, dest, progress=False, base_url_override=serve(root))
    assert [p.name for p in paths] == [spec.file for spec in MODELS.values()]
    for spec in MODELS.values():
        assert sha256_of(dest / spec.file) == spec.sha256
    assert sorted(p.name for p in dest.iterdir()) == sorted(spec.file for spec in MODELS.values())  # no temp left
    s = settings_for(tmp_path, dest)
    assert all(r["verified"] for r in status(s))
    # a second fetch finds the files in place and downloads nothing (the server is gone)
    assert fetch(None, dest, progress=False, base_url_override="http://127.0.0.1:9/none") == paths


def test_fetch_refuses_a_corrupt_download(tmp_path, serve):
    good = (SHARED_MODELS / MODELS["yunet"].file).read_bytes()
    root = mirror(tmp_path, {MODELS["yunet"].file: good[:-100] + b"\0" * 100})
    dest = tmp_path / "dest"
    with pytest.raises(ModelError) as e:
        fetch(["yunet"], dest, progress=False, base_url_override=serve(root))
    msg = one_line(e)
    assert MODELS["yunet"].file in msg and "sha256" in msg
    assert list(dest.iterdir()) == []  # nothing installed, no temp left


def test_fetch_reports_a_missing_file(tmp_path, serve):
    root = mirror(tmp_path, {})
    with pytest.raises(ModelError) as e:
        fetch(["face_landmarker"], tmp_path / "dest", progress=False, base_url_override=serve(root))
    msg = one_line(e)
    assert "cannot download" in msg and "face_landmarker.task" in msg


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_fetch_pt_without_ultralytics_explains_the_export(tmp_path, serve):
    root = mirror(tmp_path, {"yolov5n.pt": b"not really a checkpoint"})
    dest = tmp_path / "dest"
    with pytest.raises(ModelError) as e:
        fetch(["yolo"], dest, progress=False, base_url_override=serve(root))
    msg = one_line(e)
    assert "pip install 'proctor-bot[export]'" in msg and "CPU" in msg and "yolov5n.onnx" in msg
    assert list(dest.iterdir()) == []


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelError) as e:
        resolve("resnet", settings_for(tmp_path, None))
    assert "known:" in one_line(e)
