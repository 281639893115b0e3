"""Models derived from verified model files, so they run at the size of the frame instead of a fixed one, or
on onnxruntime instead of a slower runtime.

Both exports the project ships declare a fixed 640x640 input, and onnxruntime refuses any other size; a
640x480 webcam frame (or the 400x300 view the face proposals use) would be padded, and a quarter or more of
every inference spent on padding. Each derivation below is written once per source file into
``<cache_dir>/models/<stem>-<kind>-<sha256 of the source, 16 hex>.onnx`` with a ``.sha256`` sidecar (the
derived file's hash and the source's), through a temp file and a rename, so a copy that changed or was cut
short is derived again. ``onnx`` is imported only to derive. A derivation whose result does not reproduce the
source's own output on a test input is refused, and the source is used as it is.

``yolo_heads(source, cache_dir, *, source_sha256)``
    YOLOv5 cut at its three detection heads. The export's two ``Resize`` nodes compute fixed output sizes and
    its ``Detect`` head holds grids and anchors for 80x80, 40x40 and 20x20 cells as constants, so the derived
    graph ends at the head convolutions (raw ``1 x 3*(5+C) x H/s x W/s`` maps for strides 8, 16, 32), takes a
    free input height and width, and upsamples by plain 2x scales. The anchors and strides are read back from
    the source by running both graphs on one input and solving the head's formula
    (``wh = (2 sigmoid(t))^2 * anchor``, ``xy = (2 sigmoid(t) - 0.5 + cell) * stride``); the result is kept
    only when decoding its maps reproduces the source's output (``TOLERANCE``). They go in the model's
    metadata (``proctor_heads``), where ``bot.analysis.detectors.objects`` finds them and decodes the maps.
    A graph that is not a YOLOv5 ``Detect`` head (a YOLOv8/11 export, say) gives None.
    YOLOv5n on this machine, one thread: 640x640 59 ms, 640x480 43 ms (``benchmarks/bench_detectors.py``).

``free_input(source, cache_dir, *, source_sha256)``
    The same graph with its input's and outputs' spatial sizes left free (YuNet: every reshape in it is
    already ``1 x -1 x k``). Checked by running it at the declared size (outputs equal) and at a smaller one.

``dlib_resnet(source, cache_dir, *, source_sha256)``
    dlib's face recognition ResNet (a ``.dat`` file) as ONNX (``adapters.dlib_net``): the same descriptors
    (within ``DLIB_TOLERANCE`` of ``dlib.face_recognition_model_v1`` on test chips, or refused) in ~8 ms of CPU
    instead of ~130, with the GIL released. Not about input sizes: about dlib's own runtime (no BLAS in
    dlib-bin; the GIL held for the whole descriptor, which stalls a live call's event loop).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adapters.models import sha256_of
from bot.analysis.detectors.objects import HEADS_META, decode_heads
from bot.common import write_atomic

log = logging.getLogger(__name__)

DLIB_TOLERANCE = 1e-4  # max |difference| between dlib's descriptor and the ONNX one, per value (norms ~1.3-1.5)
TOLERANCE = 1e-2  # max |difference| between the source's output and the decoded heads, per value (pixels or scores)
_VERSION = "1"  # bump when a derivation changes: it is part of the sidecar
_SAME = 1e-3  # max |difference| between the source and the free graph at the source's own size


def yolo_heads(source: Path, cache_dir: Path, *, source_sha256: str) -> Path | None:
    """YOLOv5 `source` cut at its heads (derived now or found in the cache); None when it cannot be."""
    return _derived(source, cache_dir, source_sha256, "heads", _build_heads)


def free_input(source: Path, cache_dir: Path, *, source_sha256: str) -> Path | None:
    """`source` with free input and output sizes (derived now or found in the cache); None when it cannot be."""
    return _derived(source, cache_dir, source_sha256, "free", _build_free)


def dlib_resnet(source: Path, cache_dir: Path, *, source_sha256: str) -> Path | None:
    """dlib's face recognition network `source` as ONNX (derived now or found in the cache); None when it
    cannot be (dlib is then used as it is)."""
    return _derived(source, cache_dir, source_sha256, "onnx", _build_dlib)


def _derived(source: Path, cache_dir: Path, source_sha256: str, kind: str,
             build: Callable[[Path], bytes]) -> Path | None:
    out = Path(cache_dir) / "models" / f"{source.stem}-{kind}-{source_sha256[:16]}.onnx"
    stamp = f"{kind}{_VERSION}:{source_sha256}"
    if out.is_file() and _sidecar_ok(out, stamp):
        return out
    try:
        import onnx  # noqa: F401
    except ImportError:
        log.info("onnx is not installed: %s runs at its fixed input size", source.name)
        return None
    try:
        data = build(source)
    except _Unfit as e:
        log.info("%s is used as it is: %s", source.name, e)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    _sidecar(out).write_text(f"{hashlib.sha256(data).hexdigest()} {stamp}\n", encoding="utf-8")
    log.info("derived %s from %s (any input size)", out.name, source.name)
    return out


class _Unfit(Exception):
    """The graph is not one this module knows how to derive from."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sidecar_ok(path: Path, stamp: str) -> bool:
    try:
        digest, recorded = _sidecar(path).read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return False
    return recorded == stamp and sha256_of(path) == digest


def _build_heads(source: Path) -> bytes:
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(source))
    g = model.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise _Unfit("not one input and one output")
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims):
        raise _Unfit("input is not a fixed 1x3xHxW")
    producers = {o: n for n in g.node for o in n.output}
    heads = _head_convs(g.output[0].name, producers)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in shape_inference.infer_shapes(model).graph.value_info}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    for n in g.node:  # fixed-size upsamplings -> scale 2
        if n.op_type != "Resize":
            continue
        src = shapes.get(n.input[0])
        peers = [i for c in consumers.get(n.output[0], []) if c.op_type == "Concat" for i in c.input
                 if i != n.output[0]]
        if not src or len(src) != 4 or not peers or shapes.get(peers[0], [])[2:] != [src[2] * 2, src[3] * 2]:
            raise _Unfit(f"Resize {n.name} is not a 2x upsampling")
        del n.input[1:]
        n.input.extend(["proctor_roi", "proctor_scale2"])
    g.initializer.extend([numpy_helper.from_array(np.zeros(0, np.float32), "proctor_roi"),
                          numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "proctor_scale2")])

    needed = set(heads)
    kept = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    kept.reverse()
    del g.node[:]
    g.node.extend(kept)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    del g.output[:]
    g.output.extend(helper.make_tensor_value_info(h, onnx.TensorProto.FLOAT, [1, None, None, None]) for h in heads)
    d = g.input[0].type.tensor_type.shape.dim
    d[2].dim_param, d[3].dim_param = "height", "width"
    onnx.checker.check_model(model)
    cut = model.SerializeToString()

    strides, anchors = _calibrate(source, cut, dims)
    meta = {p.key: p.value for p in model.metadata_props}
    meta[HEADS_META] = json.dumps({"strides": strides, "anchors": anchors})
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    return model.SerializeToString()


def _head_convs(output: str, producers: dict[str, Any]) -> list[str]:
    """The three Conv outputs the Detect head reshapes and decodes into `output`, in the order of the output."""
    final = producers.get(output)
    if final is None or final.op_type != "Concat" or len(final.input) != 3:
        raise _Unfit("output is not the Concat of three heads")
    heads = []
    for branch in final.input:
        todo, seen, convs = [branch], set(), []
        while todo:
            name = todo.pop()
            n = producers.get(name)
            if n is None or name in seen:
                continue
            seen.add(name)
            if n.op_type == "Conv":
                convs.append(name)
            elif n.op_type in ("Reshape", "Transpose", "Sigmoid", "Split", "Mul", "Add", "Pow", "Concat"):
                todo.extend(n.input[:1] if n.op_type == "Reshape" else n.input)
            elif n.op_type != "Constant":
                raise _Unfit(f"unexpected {n.op_type} in the Detect head")
        if len(convs) != 1:
            raise _Unfit("a head branch does not start at one Conv")
        heads.append(convs[0])
    return heads


def _calibrate(source: Path, cut: bytes, dims: list[int]) -> tuple[list[int], list[list[list[float]]]]:
    """Strides and anchors that make the decoded heads equal the source's output on one input."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    full = ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
    heads = ort.InferenceSession(cut, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(dims, dtype=np.float32)
    want = full.run(None, {full.get_inputs()[0].name: x})[0][0]
    maps = heads.run(None, {heads.get_inputs()[0].name: x})
    strides: list[int] = []
    anchors: list[list[list[float]]] = []
    start = 0
    for m in maps:
        _, c, ny, nx = m.shape
        if c % 3 or dims[2] % ny or dims[2] // ny != dims[3] // nx:
            raise _Unfit(f"head of shape {m.shape} does not fit 3 anchors on a square grid")
        y = 1.0 / (1.0 + np.exp(-m.reshape(3, c // 3, ny, nx).transpose(0, 2, 3, 1)))
        part = want[start:start + 3 * ny * nx].reshape(3, ny, nx, c // 3)
        start += 3 * ny * nx
        strides.append(dims[2] // ny)
        anchors.append([[round(float(np.median(part[a, ..., k] / (2 * y[a, ..., k]) ** 2)), 3) for k in (2, 3)]
                        for a in range(3)])
    if start != len(want):
        raise _Unfit("the heads do not cover the output")
    got = decode_heads(maps, strides, anchors, min_objectness=0.0)
    if float(np.abs(got - want).max()) > TOLERANCE:
        raise _Unfit("decoding the heads does not reproduce the output")
    return strides, anchors


def _build_free(source: Path) -> bytes:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(source))
    g = model.graph
    if len(g.input) != 1:
        raise _Unfit("not one input")
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims):
        raise _Unfit("input is not a fixed 1x3xHxW")
    d = g.input[0].type.tensor_type.shape.dim
    d[2].dim_param, d[3].dim_param = "height", "width"
    for o in g.output:
        for k, od in enumerate(o.type.tensor_type.shape.dim):
            if k > 0:
                od.dim_param = f"{o.name}_{k}"
    del g.value_info[:]
    onnx.checker.check_model(model)
    data = model.SerializeToString()

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    whole = ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
    free = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    name = whole.get_inputs()[0].name
    x = np.random.default_rng(0).random(dims, dtype=np.float32) * 255
    for a, b in zip(whole.run(None, {name: x}), free.run(None, {name: x}), strict=True):
        if a.shape != b.shape or float(np.abs(a - b).max()) > _SAME:
            raise _Unfit("the free graph does not reproduce the source at its own size")
    try:
        free.run(None, {name: x[:, :, : dims[2] // 2, : dims[3] // 2].copy()})
    except Exception as e:  # onnxruntime raises its own error types
        raise _Unfit(f"the graph does not run at another size: {e}") from None
    return data


def _build_dlib(source: Path) -> bytes:
    from adapters import dlib_net

    try:
        data = dlib_net.build(str(source))
    except dlib_net.DlibFormatError as e:
        raise _Unfit(str(e)) from e
    import dlib
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    net = dlib.face_recognition_model_v1(str(source))
    rng = np.random.default_rng(0)
    # noise, and a smooth picture (what a face chip is more like): both must come out as dlib's
    ramp = np.linspace(0, 255, 150, dtype=np.float32)
    smooth = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp[::-1], ramp) / 2,
                       np.full((150, 150), 128.0, np.float32)], axis=2).astype(np.uint8)
    chips = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(3)] + [smooth]
    for chip in chips:
        want = np.asarray(net.compute_face_descriptor(chip), dtype=np.float32)
        got = session.run(None, {"chip": chip.astype(np.float32).transpose(2, 0, 1)[None]})[0][0]
        worst = float(np.max(np.abs(want - got)))
        if worst > DLIB_TOLERANCE:
            raise _Unfit(f"its ONNX graph differs from dlib by {worst:.2e} (> {DLIB_TOLERANCE})")
    return data
