"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) read and written as ONNX.

    parse(path) -> DlibNet     a reader of dlib's serialization format, checked against the network's type
    build(path) -> bytes       the same network as a serialized ONNX model

dlib-bin runs that network in ~130 ms of CPU per face on this machine and holds the GIL all along (a live
call's event loop stalls meanwhile); onnxruntime runs the ONNX graph in ~8 ms and releases the GIL. The
graph is kept only when it reproduces dlib's own descriptors (``adapters.derived.dlib_resnet``).

The ONNX model takes ``chip``: float32 [N,3,150,150], an RGB 150x150 face chip in
raw 0..255 values (channel 0 = R), and returns ``descriptor``: float32 [N,128],
the same vector as ``dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)``.

Why the network *type* is needed (just as in C++):  dlib's stream has no
self-describing structure.  add_tag_layer and add_skip_layer both serialize as
"int 1, <subnet>", tag ids are never written, and add_prev_ does not record
which tag it adds.  C++ deserializes against the compile-time type
``anet_type``; we do the same against NET_SPEC (a literal transcription of the
template aliases in dlib/examples/dnn_face_recognition_ex.cpp) and verify every
version number, every hyper-parameter that dlib itself checks, every tensor size,
and that the whole file is consumed.  Anything else raises DlibFormatError.

Format notes (from dlib/serialize.h, float_details.h, dnn/{core,layers,input,loss,tensor}.h):
  * integers: control byte (bit7 = negative, low nibble = byte count, bits 0x70 must be 0),
    followed by |value| little-endian in that many bytes.
  * float/double: float_details = int64 mantissa then int16 exponent, each as an integer
    above; value = ldexp(mantissa, exponent); exponent 32000/32001/32002 = inf/-inf/nan.
    (serialize.h's comment says "exponent then mantissa" - the code writes mantissa first.)
  * std::string: unsigned long length, then raw bytes.   bool: ASCII '1' / '0'.
  * resizable_tensor: int version (2 = raw little-endian float32 data, 1 = per-element
    float_details), then long n, k, nr, nc, then n*k*nr*nc values.
  * alias_tensor: int version 1, long n, k, nr, nc (shape only).
  * add_loss_layer:  int 1, loss details, subnet
  * add_layer:       int 1|2, subnet, details, bool setup_called, bool grad_stale,
                     bool out_disabled, tensor x_grad, tensor cached_output, [v2: tensor params_grad]
  * add_layer on an input layer: int 2|3, input layer, details, 3 bools, x_grad,
                     cached_output, grad_final, [v3: unsigned sample_expansion_factor]
  * add_tag_layer / add_skip_layer: int 1, subnet
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np


class DlibFormatError(Exception):
    """Raised for anything in the .dat stream that does not match expectations."""


# ------------------------------------------------------------------------------------
# Low level reader for dlib's serialization primitives
# ------------------------------------------------------------------------------------

_FD_INF, _FD_NINF, _FD_NAN = 32000, 32001, 32002


class _Reader:
    def __init__(self, data: bytes):
        self.b = data
        self.pos = 0
        self.ctx: list[str] = []  # human readable path for error messages

    def fail(self, msg: str) -> NoReturn:
        where = " > ".join(self.ctx[-6:])
        raise DlibFormatError(f"{msg} (at byte offset {self.pos}; context: {where})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.b):
            self.fail(f"unexpected end of file: need {n} bytes, {len(self.b) - self.pos} left")
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    # dlib integral format -------------------------------------------------------
    def integer(self, nbytes: int, signed: bool, what: str = "int") -> int:
        """nbytes = sizeof(T) of the C++ receiving type (LP64: int 4, long 8, size_t 8)."""
        start = self.pos
        ctrl = self.take(1)[0]
        if ctrl & 0x70:
            self.pos = start
            self.fail(f"bad integer control byte 0x{ctrl:02x} for {what} (reserved bits 0x70 set)")
        neg = bool(ctrl & 0x80)
        size = ctrl & 0x0F
        if size > nbytes:
            self.pos = start
            self.fail(f"integer {what} uses {size} bytes, receiving type has only {nbytes}")
        if neg and not signed:
            self.pos = start
            self.fail(f"negative value for unsigned {what}")
        val = int.from_bytes(self.take(size), "little") if size else 0
        if neg:
            val = -val
        lim = 1 << (8 * nbytes - (1 if signed else 0))
        if not (-lim <= val < lim):
            self.pos = start
            self.fail(f"integer {val} out of range for {what}")
        return val

    def i16(self, what="short"): return self.integer(2, True, what)
    def i32(self, what="int"): return self.integer(4, True, what)
    def u32(self, what="unsigned"): return self.integer(4, False, what)
    def i64(self, what="long"): return self.integer(8, True, what)
    def u64(self, what="unsigned long"): return self.integer(8, False, what)

    # float_details ----------------------------------------------------------------
    def _float_details(self, what: str) -> tuple[int, int]:
        c = self.b[self.pos] if self.pos < len(self.b) else None
        if c is not None and (c & 0x70):
            self.fail(f"{what}: old ASCII float format (byte 0x{c:02x}) is not supported")
        man = self.integer(8, True, what + ".mantissa")
        exp = self.integer(2, True, what + ".exponent")
        return man, exp

    def f64(self, what="double") -> float:
        man, exp = self._float_details(what)
        if exp < _FD_INF:
            return math.ldexp(float(man), exp)
        return {_FD_INF: math.inf, _FD_NINF: -math.inf}.get(exp, math.nan)

    def f32(self, what="float") -> np.float32:
        man, exp = self._float_details(what)
        if exp < _FD_INF:
            # C++: ldexpf((float)mantissa, exponent)
            return np.float32(math.ldexp(float(np.float32(man)), exp))
        return np.float32({_FD_INF: np.inf, _FD_NINF: -np.inf}.get(exp, np.nan))

    def boolean(self, what="bool") -> bool:
        ch = self.take(1)
        if ch == b"1":
            return True
        if ch == b"0":
            return False
        self.pos -= 1
        self.fail(f"bad bool byte {ch!r} for {what}")

    def string(self, what="string", maxlen=4096) -> str:
        n = self.u64(what + ".size")
        if n > maxlen:
            self.fail(f"implausible string length {n} for {what}")
        raw = self.take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            self.pos -= n
            self.fail(f"non-ASCII bytes in {what}: {raw[:40]!r}")

    def expect_string(self, allowed: tuple[str, ...], what: str) -> str:
        return self._expect(self.string, allowed, what)

    def expect_int(self, allowed: tuple[int, ...], what: str) -> int:
        return self._expect(self.i32, allowed, what)

    def _expect(self, read: Any, allowed: tuple[Any, ...], what: str) -> Any:
        """A version read with `read`, one of `allowed`; else a failure pointing at where it starts."""
        start = self.pos
        value = read(what + " version")
        if value not in allowed:
            self.pos = start
            self.fail(f"unexpected version {value!r} for {what}; expected one of {allowed}")
        return value

    # tensors ------------------------------------------------------------------------
    def tensor(self, what="tensor") -> np.ndarray:
        start = self.pos
        ver = self.i32(what + " version")
        if ver not in (1, 2):
            self.pos = start
            self.fail(f"unexpected resizable_tensor version {ver} for {what}")
        n, k, nr, nc = (self.i64(f"{what}.{d}") for d in ("num_samples", "k", "nr", "nc"))
        if min(n, k, nr, nc) < 0:
            self.fail(f"negative tensor dimension {(n, k, nr, nc)} in {what}")
        size = n * k * nr * nc
        if ver == 2:
            arr = np.frombuffer(self.take(4 * size), dtype="<f4").astype(np.float32)
        else:
            arr = np.array([self.f32(what) for _ in range(size)], dtype=np.float32)
        return arr.reshape(n, k, nr, nc)

    def alias_tensor(self, what="alias_tensor") -> tuple[int, int, int, int]:
        self.expect_int((1,), what + " (alias_tensor)")
        return tuple(self.i64(f"{what}.{d}") for d in ("num_samples", "k", "nr", "nc"))


# ------------------------------------------------------------------------------------
# Network type (transcription of dnn_face_recognition_ex.cpp), listed input -> output
# ------------------------------------------------------------------------------------

@dataclass
class LayerSpec:
    kind: str  # input | con | affine | relu | max_pool | avg_pool | tag | skip | add_prev | fc | loss_metric
    args: dict = field(default_factory=dict)

    def __repr__(self):
        a = ",".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.kind}({a})"


def _con(n, r, c, sy, sx): return LayerSpec("con", dict(num_filters=n, nr=r, nc=c, stride_y=sy, stride_x=sx))
def _affine(): return LayerSpec("affine")
def _relu(): return LayerSpec("relu")
def _tag(i): return LayerSpec("tag", dict(id=i))
def _skip(i): return LayerSpec("skip", dict(id=i))
def _add_prev(i): return LayerSpec("add_prev", dict(id=i))
def _avg_pool(r, c, sy, sx): return LayerSpec("avg_pool", dict(nr=r, nc=c, stride_y=sy, stride_x=sx))
def _max_pool(r, c, sy, sx): return LayerSpec("max_pool", dict(nr=r, nc=c, stride_y=sy, stride_x=sx))


def _block(N, stride):
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [_con(N, 3, 3, stride, stride), _affine(), _relu(), _con(N, 3, 3, 1, 1), _affine()]


def _ares(N):
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [_tag(1), *_block(N, 1), _add_prev(1), _relu()]


def _ares_down(N):
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [_tag(1), *_block(N, 2), _tag(2), _skip(1), _avg_pool(2, 2, 2, 2), _add_prev(2), _relu()]


def _make_net_spec():
    s = [LayerSpec("input", dict(type="input_rgb_image_sized", nr=150, nc=150)),
         _con(32, 7, 7, 2, 2), _affine(), _relu(), _max_pool(3, 3, 2, 2)]
    s += [x for _ in range(3) for x in _ares(32)]                       # alevel4
    s += _ares_down(64) + [x for _ in range(3) for x in _ares(64)]                      # alevel3
    s += _ares_down(128) + [x for _ in range(2) for x in _ares(128)]                    # alevel2
    s += _ares_down(256) + [x for _ in range(2) for x in _ares(256)]                    # alevel1
    s += _ares_down(256)                                                                # alevel0
    s += [_avg_pool(0, 0, 1, 1),                                                        # avg_pool_everything
          LayerSpec("fc", dict(num_outputs=128, bias_mode=1)),                          # fc_no_bias<128>
          LayerSpec("loss_metric")]
    return s


NET_SPEC: list[LayerSpec] = _make_net_spec()


# ------------------------------------------------------------------------------------
# Deserializer driven by the network type
# ------------------------------------------------------------------------------------

@dataclass
class Layer:
    kind: str
    spec: dict
    params: dict[str, Any] = field(default_factory=dict)   # numpy weights / hyper-parameters
    version: str | int | None = None
    offset: int = -1

    def __repr__(self):
        p = {k: (v.shape if isinstance(v, np.ndarray) else v) for k, v in self.params.items()}
        return f"Layer({self.kind}, {self.spec}, {p})"


@dataclass
class DlibNet:
    layers: list[Layer]       # input first, loss last
    file_size: int


def _default_pad(n, stride):
    # dlib template default:  _padding = _stride!=1 ? 0 : _nr/2
    return 0 if stride != 1 else n // 2


def _read_input(r: _Reader, spec: LayerSpec) -> Layer:
    off = r.pos
    r.expect_string(("input_rgb_image_sized",), "input_rgb_image_sized")
    avg = [r.f32(f"avg_{c}") for c in ("red", "green", "blue")]
    nr, nc = r.u64("NR"), r.u64("NC")
    if (nr, nc) != (spec.args["nr"], spec.args["nc"]):
        r.fail(f"input_rgb_image_sized is {nr}x{nc}, expected {spec.args['nr']}x{spec.args['nc']}")
    return Layer("input", spec.args, dict(avg_rgb=np.array(avg, np.float32), nr=nr, nc=nc),
                 "input_rgb_image_sized", off)


def _read_details(r: _Reader, spec: LayerSpec) -> Layer:
    off = r.pos
    a = spec.args
    k = spec.kind
    if k == "con":
        ver = r.expect_string(("con_4", "con_5", "con_6"), "con_")
        params = r.tensor("con_.params")
        num_filters = r.i64("num_filters")
        nr, nc = r.i64("nr"), r.i64("nc")
        sy, sx = r.i32("stride_y"), r.i32("stride_x")
        py, px = r.i32("padding_y"), r.i32("padding_x")
        filt = r.alias_tensor("con_.filters")
        bias = r.alias_tensor("con_.biases")
        mult = [r.f64(n) for n in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult")]
        use_bias = r.boolean("use_bias") if ver in ("con_5", "con_6") else True
        use_relu = r.boolean("use_relu") if ver == "con_6" else False
        exp = (a["num_filters"], a["nr"], a["nc"], a["stride_y"], a["stride_x"],
               _default_pad(a["nr"], a["stride_y"]), _default_pad(a["nc"], a["stride_x"]))
        got = (num_filters, nr, nc, sy, sx, py, px)
        if got != exp:
            r.fail(f"con_ hyper-parameters (filters,nr,nc,sy,sx,py,px)={got}, network type says {exp}")
        if filt[0] != num_filters or filt[2:] != (nr, nc):
            r.fail(f"con_ filter alias shape {filt} inconsistent with {num_filters}x?x{nr}x{nc}")
        fsize = int(np.prod(filt))
        if use_bias:
            if bias != (1, num_filters, 1, 1):
                r.fail(f"con_ bias alias shape {bias}, expected (1,{num_filters},1,1)")
            bsize = num_filters
        else:
            bsize = 0
        flat = params.reshape(-1)
        if flat.size != fsize + bsize:
            r.fail(f"con_ params has {flat.size} values, filters+biases need {fsize + bsize}")
        W = flat[:fsize].reshape(filt).copy()
        B = flat[fsize:].copy() if use_bias else np.zeros(num_filters, np.float32)
        return Layer("con", a, dict(W=W, B=B, stride=(sy, sx), pad=(py, px), use_relu=use_relu,
                                    multipliers=mult), ver, off)
    if k == "affine":
        ver = r.expect_string(("affine_", "affine_2"), "affine_ (bn_con2/bn_fc2 not supported)")
        params = r.tensor("affine_.params")
        g = r.alias_tensor("affine_.gamma")
        b = r.alias_tensor("affine_.beta")
        mode = r.i32("affine_.mode")
        disabled = r.boolean("affine_.disabled") if ver == "affine_2" else False
        if disabled:
            r.fail("disabled affine_ layer not supported")
        if mode != 0:
            r.fail(f"affine_ mode {mode} (FC_MODE) not supported; this network uses CONV_MODE (0)")
        if g != b or g[0] != 1 or g[2:] != (1, 1):
            r.fail(f"affine_ gamma/beta alias shapes {g} {b} not (1,k,1,1)")
        kk = g[1]
        flat = params.reshape(-1)
        if flat.size != 2 * kk:
            r.fail(f"affine_ params size {flat.size} != 2*{kk}")
        return Layer("affine", a, dict(gamma=flat[:kk].copy(), beta=flat[kk:].copy()), ver, off)
    if k == "relu":
        ver = r.expect_string(("relu_",), "relu_")
        return Layer("relu", a, {}, ver, off)
    if k in ("max_pool", "avg_pool"):
        ver = r.expect_string((k + "_2",), k + "_")
        nr, nc = r.i64("nr"), r.i64("nc")
        sy, sx = r.i32("stride_y"), r.i32("stride_x")
        py, px = r.i32("padding_y"), r.i32("padding_x")
        want = (a["nr"], a["nc"], a["stride_y"], a["stride_x"],
                _default_pad(a["nr"], a["stride_y"]), _default_pad(a["nc"], a["stride_x"]))
        if (nr, nc, sy, sx, py, px) != want:
            r.fail(f"{k}_ hyper-parameters (nr,nc,sy,sx,py,px)={got}, network type says {want}")
        return Layer(k, a, dict(window=(nr, nc), stride=(sy, sx), pad=(py, px)), ver, off)
    if k == "add_prev":
        ver = r.expect_string(("add_prev_",), "add_prev_")
        return Layer("add_prev", a, {}, ver, off)
    if k == "fc":
        ver = r.expect_string(("fc_2", "fc_3"), "fc_")
        num_outputs, num_inputs = r.u64("num_outputs"), r.u64("num_inputs")
        params = r.tensor("fc_.params")
        w = r.alias_tensor("fc_.weights")
        b = r.alias_tensor("fc_.biases")
        bmode = r.i32("fc_.bias_mode")
        mult = [r.f64(n) for n in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult")]
        use_bias = r.boolean("use_bias") if ver == "fc_3" else True
        if bmode != a["bias_mode"]:
            r.fail(f"fc_ bias mode {bmode}, network type says {a['bias_mode']} (1 = FC_NO_BIAS)")
        if num_outputs != a["num_outputs"]:
            r.fail(f"fc_ num_outputs {num_outputs}, expected {a['num_outputs']}")
        if w != (num_inputs, num_outputs, 1, 1):
            r.fail(f"fc_ weights alias {w} != ({num_inputs},{num_outputs},1,1)")
        has_bias = bmode == 0 and use_bias
        flat = params.reshape(-1)
        need = num_inputs * num_outputs + (num_outputs if has_bias else 0)
        if flat.size != need:
            r.fail(f"fc_ params has {flat.size} values, expected {need}")
        weights = flat[:num_inputs * num_outputs].reshape(num_inputs, num_outputs).copy()
        biases = flat[num_inputs * num_outputs:].copy() if has_bias else None
        return Layer("fc", a, dict(W=weights, B=biases, multipliers=mult), ver, off)
    r.fail(f"no details reader for layer kind {k!r}")


def _read_subnet(r: _Reader, spec: list[LayerSpec], i: int, out: list[Layer]):
    """Deserialize the sub-network whose top layer is spec[i]; append layers bottom-up to out."""
    s = spec[i]
    r.ctx.append(f"[{i}]{s.kind}")
    try:
        if s.kind == "input":
            r.fail("input layer reached without an enclosing add_layer")
        below_is_input = spec[i - 1].kind == "input"
        if s.kind in ("tag", "skip"):
            r.expect_int((1,), f"add_{s.kind}_layer")
            if below_is_input:
                r.fail(f"add_{s.kind}_layer directly on the input layer is not supported")
            _read_subnet(r, spec, i - 1, out)
            out.append(Layer(s.kind, s.args, {}, 1, r.pos))
            return
        if below_is_input:
            ver = r.expect_int((2, 3), "add_layer<LAYER, INPUT_LAYER>")
            out.append(_read_input(r, spec[i - 1]))
            layer = _read_details(r, s)
            for nm in ("this_layer_setup_called", "gradient_input_is_stale",
                       "get_output_and_gradient_input_disabled"):
                r.boolean(nm)
            for nm in ("x_grad", "cached_output", "grad_final"):
                r.tensor(nm)
            if ver >= 3:
                r.u32("_sample_expansion_factor")
        else:
            ver = r.expect_int((1, 2), "add_layer")
            _read_subnet(r, spec, i - 1, out)
            layer = _read_details(r, s)
            for nm in ("this_layer_setup_called", "gradient_input_is_stale",
                       "get_output_and_gradient_input_disabled"):
                r.boolean(nm)
            r.tensor("x_grad")
            r.tensor("cached_output")
            if ver == 2:
                r.tensor("params_grad")
        out.append(layer)
    finally:
        r.ctx.pop()


def parse(path: str, spec: list[LayerSpec] = NET_SPEC) -> DlibNet:
    """Deserialize a dlib DNN file of type `spec` (default: the face recognition anet_type)."""
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data)
    if spec[-1].kind != "loss_metric":
        raise DlibFormatError("only loss_metric networks are supported")
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 10 * len(spec) + 1000))
    try:
        r.ctx.append("add_loss_layer")
        r.expect_int((1,), "add_loss_layer")
        off = r.pos
        ver = r.expect_string(("loss_metric_", "loss_metric_2"), "loss_metric_")
        if ver == "loss_metric_2":
            margin, dist = float(r.f32("margin")), float(r.f32("dist_thresh"))
        else:
            margin, dist = 0.1, 0.75
        loss = Layer("loss_metric", {}, dict(margin=margin, distance_threshold=dist), ver, off)
        layers: list[Layer] = []
        _read_subnet(r, spec, len(spec) - 2, layers)
        r.ctx.pop()
    finally:
        sys.setrecursionlimit(old_limit)
    layers.append(loss)
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the network (offset {r.pos})")
    if [layer.kind for layer in layers] != [s.kind for s in spec]:
        raise DlibFormatError("internal error: parsed layer sequence does not match the spec")
    return DlibNet(layers, len(data))


# ------------------------------------------------------------------------------------
# ONNX graph construction
# ------------------------------------------------------------------------------------

def build(path: str, opset: int = 17) -> bytes:
    """Return a serialized ONNX model equivalent to dlib's forward pass."""
    from onnx import TensorProto, helper, numpy_helper

    net = parse(path)
    nodes, inits = [], []
    counter = [0]

    def uniq(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(name, arr):
        nm = uniq(name)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def node(op, inputs, prefix, **attrs):
        out = uniq(prefix)
        nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def pad_to(name, shape, target):
        """Zero-pad (at the end of C, H, W) like dlib's tt::add does for mismatched tensors."""
        if tuple(shape) == tuple(target):
            return name
        extra = [t - s for s, t in zip(shape, target)]
        pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)  # N,C,H,W begins ; N,C,H,W ends
        return node("Pad", [name, const("pads", pads)], "pad", mode="constant")

    cur = "chip"                     # the current tensor's name
    shape: tuple[int, ...] = ()      # and its (C,H,W)
    tags: dict[int, tuple[str, tuple[int, ...]]] = {}
    tagged_names: set[str] = set()
    last_conv: tuple[int, int, str] | None = None  # (W init, B init, output) of a Conv an affine can fold into

    for L in net.layers:
        k = L.kind
        if k == "input":
            nr, nc = L.params["nr"], L.params["nc"]
            mean = L.params["avg_rgb"].reshape(1, 3, 1, 1)
            # dlib: (pixel - avg) / 256.0 per channel, channel planes in R, G, B order
            cur = node("Sub", ["chip", const("avg_rgb", mean)], "centered")
            cur = node("Mul", [cur, const("inv256", np.array(1.0 / 256.0, np.float32))], "normed")
            shape = (3, nr, nc)
            last_conv = None
        elif k == "con":
            W, B = L.params["W"], L.params["B"]
            if W.shape[1] != shape[0]:
                raise DlibFormatError(f"con input channels {W.shape[1]} but tensor has {shape[0]}")
            (sy, sx), (py, px) = L.params["stride"], L.params["pad"]
            kh, kw = W.shape[2:]
            # dlib: out = 1 + (in + 2*pad - k)/stride  (integer division) == ONNX floor mode
            oh = 1 + (shape[1] + 2 * py - kh) // sy
            ow = 1 + (shape[2] + 2 * px - kw) // sx
            wn, bn = const("W", W), const("B", B)
            cur = node("Conv", [cur, wn, bn], "conv", kernel_shape=[kh, kw], strides=[sy, sx],
                       pads=[py, px, py, px], dilations=[1, 1], group=1)
            last_conv = (len(inits) - 2, len(inits) - 1, cur)
            shape = (W.shape[0], oh, ow)
            if L.params["use_relu"]:
                cur = node("Relu", [cur], "relu")
                last_conv = None
        elif k == "affine":
            g, b = L.params["gamma"], L.params["beta"]
            if g.size != shape[0]:
                raise DlibFormatError(f"affine has {g.size} channels, tensor has {shape[0]}")
            if last_conv is not None and last_conv[2] == cur and cur not in tagged_names:
                wi, bi, _ = last_conv
                W = numpy_helper.to_array(inits[wi]).astype(np.float64)
                B = numpy_helper.to_array(inits[bi]).astype(np.float64)
                W = (W * g.astype(np.float64)[:, None, None, None]).astype(np.float32)
                B = (B * g + b.astype(np.float64)).astype(np.float32)
                inits[wi] = numpy_helper.from_array(W, inits[wi].name)
                inits[bi] = numpy_helper.from_array(B, inits[bi].name)
            else:
                cur = node("Mul", [cur, const("gamma", g.reshape(1, -1, 1, 1))], "affine_mul")
                cur = node("Add", [cur, const("beta", b.reshape(1, -1, 1, 1))], "affine_add")
            last_conv = None
        elif k == "relu":
            cur = node("Relu", [cur], "relu")
            last_conv = None
        elif k in ("max_pool", "avg_pool"):
            (wh, ww), (sy, sx), (py, px) = L.params["window"], L.params["stride"], L.params["pad"]
            if wh == 0 and ww == 0:        # *_pool_everything: window = whole input
                cur = node("GlobalMaxPool" if k == "max_pool" else "GlobalAveragePool", [cur], k)
                shape = (shape[0], 1, 1)
            else:
                wh = wh or shape[1]
                ww = ww or shape[2]
                if wh > shape[1] + 2 * py or ww > shape[2] + 2 * px:
                    raise DlibFormatError("pooling window larger than padded input")
                oh = 1 + (shape[1] + 2 * py - wh) // sy
                ow = 1 + (shape[2] + 2 * px - ww) // sx
                attrs = dict(kernel_shape=[wh, ww], strides=[sy, sx], pads=[py, px, py, px])
                if k == "avg_pool":
                    # dlib averages only the in-image part of a window (subm_clipped)
                    cur = node("AveragePool", [cur], "avgpool", count_include_pad=0, **attrs)
                else:
                    cur = node("MaxPool", [cur], "maxpool", **attrs)
                shape = (shape[0], oh, ow)
            last_conv = None
        elif k == "tag":
            tags[L.spec["id"]] = (cur, shape)
            tagged_names.add(cur)
        elif k == "skip":
            if L.spec["id"] not in tags:
                raise DlibFormatError(f"skip{L.spec['id']} without a tag below it")
            cur, shape = tags[L.spec["id"]]
            last_conv = None
        elif k == "add_prev":
            if L.spec["id"] not in tags:
                raise DlibFormatError(f"add_prev{L.spec['id']} without a tag below it")
            t2, s2 = tags[L.spec["id"]]
            # dlib add_prev_: output dims = max of both; tt::add zero-fills the rest
            target = tuple(max(x, y) for x, y in zip(shape, s2))
            a1 = pad_to(cur, shape, target)
            a2 = pad_to(t2, s2, target)
            cur = node("Add", [a1, a2], "add_prev")
            shape = target
            last_conv = None
        elif k == "fc":
            W, B = L.params["W"], L.params["B"]
            n_in = shape[0] * shape[1] * shape[2]
            if W.shape[0] != n_in:
                raise DlibFormatError(f"fc expects {W.shape[0]} inputs, tensor has {n_in}")
            cur = node("Flatten", [cur], "flatten", axis=1)
            # dlib: output(N x out) = input(N x in) * W(in x out)
            cur = node("MatMul", [cur, const("fc_W", W)], "fc")
            if B is not None:
                cur = node("Add", [cur, const("fc_B", B.reshape(1, -1))], "fc_bias")
            shape = (W.shape[1],)
            last_conv = None
        elif k == "loss_metric":
            # loss_metric_::to_label copies the raw fc output (no normalisation)
            nodes.append(helper.make_node("Identity", [cur], ["descriptor"], name="descriptor_node"))
        else:
            raise DlibFormatError(f"no ONNX lowering for {k}")

    inp = net.layers[0].params
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chip", TensorProto.FLOAT, ["N", 3, inp["nr"], inp["nc"]])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", shape[0]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="proctor adapters.dlib_net")
    model.ir_version = 8
    loss = net.layers[-1].params
    helper.set_model_props(model, {
        "source": "dlib_face_recognition_resnet_model_v1.dat",
        "input": "RGB chip 150x150, float 0..255, NCHW, channel0=R",
        "loss_metric_distance_threshold": repr(loss["distance_threshold"]),
    })
    return model.SerializeToString()
