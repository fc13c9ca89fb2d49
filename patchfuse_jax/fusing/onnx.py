"""The generator as an ONNX model, for ONNX Runtime, TensorRT and other runtimes without JAX.

``export_onnx(params, "model.onnx", bn="image")`` writes the generator of ``params``
(``pretrained()``, ``load_checkpoint(...)``) with its weights as one ONNX file (float32, opset 17
by default, 17-21 accepted); ``python -m patchfuse_jax export --format=onnx --out=model.onnx``
does the same from the command line (docs/onnx.md).

The model (layout NCHW, dynamic batch, height and width):

* input ``ir_vis``: float32 ``(B, 2, H, W)``, channel 0 the IR image, channel 1 the visible luma
  (BT.601 Y), gray in [0, 1]. ``H`` and ``W`` must be multiples of ``pad_multiple`` =
  ``2**num_downs`` (stored in the file's metadata): pad other sizes with reflection at the
  bottom and right (``numpy.pad(x, ((0, 0), (0, 0), (0, (-h) % m), (0, (-w) % m)),
  mode="reflect")``) and crop the output back to ``[:h, :w]``, as ``fuse`` does.
* output ``fused``: float32 ``(B, 1, H, W)``, the fused gray image in [0, 1].

BatchNorm models: ``bn="image"`` (each image normalised with its own statistics, the ONNX
``InstanceNormalization`` op with BatchNorm's scale and bias) or ``bn="running"`` (the running
statistics of training, ``BatchNormalization``), as ``fuse(..., bn=...)``. Models with
InstanceNorm (the shipped one) give the same file for both.

The graph is built layer by layer from the generator's variables with the ``onnx`` package
(``onnx.helper``), mirroring ``models.Generator``; it needs neither JAX tracing nor a converter.
(jax2onnx 0.17.1 converts this generator too, but it pins ``orbax-checkpoint<0.11.37`` while
patchfuse_jax needs ``>=0.12.8``, so ``pip install patchfuse_jax[onnx]`` could not resolve.)
The tests check ONNX Runtime's output against ``fuse`` (max abs difference <= 1e-4).

The file's ``metadata_props`` name the architecture, BatchNorm mode, training step and a
SHA-256 of the weights: ``check_onnx(path, params)`` refuses a file made from another model.
Needs ``pip install patchfuse_jax[onnx]`` (onnx, onnxruntime); importing this module does not.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from typing import Any

import numpy as np

from patchfuse_jax.checkpoint import CheckpointError
from patchfuse_jax.fusing.saved import BN_MODES, DEFAULT_BN, FuseParams
from patchfuse_jax.io import write_bytes_atomic

FORMAT = "patchfuse_jax.onnx_generator"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17  # TensorRT 8.6+ parses it; ONNX Runtime any recent version
OPSETS = range(17, 22)
TRANSPOSE_FORMS = ("phases", "native")
INPUT, OUTPUT = "ir_vis", "fused"
INSTALL_HINT = "pip install patchfuse_jax[onnx]"
# Generator options this exporter knows, with the values it supports.
SUPPORTED = {
    "norm": ("batch", "instance"),
    "upsample": ("transpose", "resize"),
    "input_skip": (False, True),
    "output": ("direct", "residual_average"),
}


class OnnxExportError(CheckpointError):
    """An ONNX file cannot be written, read or used with the given model (one-line message)."""


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxExportError(f"ONNX export/loading needs the {module!r} package: {INSTALL_HINT}") from None


# --- Weights -------------------------------------------------------------------------------------


def _flat(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v, np.float32)
    return out


def weights_sha256(params: FuseParams) -> str:
    """SHA-256 of the generator's float32 variables (names, shapes and values, sorted by name)."""
    h = hashlib.sha256()
    variables = {"params": params.variables["params"], "batch_stats": params.variables.get("batch_stats") or {}}
    for name, a in sorted(_flat(variables).items()):
        h.update(f"{name}:{a.shape}:".encode())
        h.update(np.ascontiguousarray(a, "<f4").tobytes())
    return h.hexdigest()


def _effective_bn(bn: str, arch: dict[str, Any]) -> str:
    if bn not in BN_MODES:
        raise ValueError(
            f"export_onnx: bn={bn!r}: expected 'running' (BatchNorm with the statistics "
            "saved in training) or 'image' (each image's own statistics)"
        )
    return bn if arch["norm"] == "batch" else "none"  # InstanceNorm: no BatchNorm, one graph


# --- The graph -----------------------------------------------------------------------------------


class _Builder:
    """Accumulates nodes and initializers (weights) of the NCHW graph."""

    def __init__(self, helper, numpy_helper, variables, transpose: str):
        self.helper, self.numpy_helper, self.transpose = helper, numpy_helper, transpose
        self.params = variables["params"]
        self.stats = variables.get("batch_stats") or {}
        self.nodes, self.inits, self.used, self.n = [], [], set(), 0

    def name(self, op: str) -> str:
        self.n += 1
        return f"{op.lower()}_{self.n}"

    def const(self, name: str, value) -> str:
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def module(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.params:
            raise OnnxExportError(
                f"export_onnx: the generator's variables have no {name!r}; "
                "they do not fit this exporter's copy of models.Generator"
            )
        self.used.add(name)
        return {k: np.asarray(v, np.float32) for k, v in self.params[name].items()}

    def conv(self, x: str, name: str, pad: int, stride: int) -> str:
        p = self.module(name)
        k = p["kernel"]  # (kh, kw, Cin, Cout) -> ONNX (Cout, Cin, kh, kw), cross-correlation as lax
        inputs = [x, self.const(f"{name}/kernel", k.transpose(3, 2, 0, 1))]
        if "bias" in p:
            inputs.append(self.const(f"{name}/bias", p["bias"]))
        return self.op("Conv", inputs, kernel_shape=list(k.shape[:2]), strides=[stride, stride], pads=[pad] * 4)

    def upsample(self, x: str, name: str, mode: str) -> str:
        p = self.module(name)
        k = p["kernel"]
        bias = [self.const(f"{name}/bias", p["bias"])] if "bias" in p else []
        if mode == "transpose" and self.transpose == "native":
            # lax.conv_transpose(x, k, (2, 2), "SAME") (transpose_kernel=False): the stride-2
            # dilated input padded by 2 each side, correlated with k. ONNX ConvTranspose
            # correlates with the flipped kernel, padded by kernel - 1 - pads = 2: pads 1.
            w = k[::-1, ::-1].transpose(2, 3, 0, 1)  # (Cin, Cout, kh, kw)
            return self.op(
                "ConvTranspose",
                [x, self.const(f"{name}/kernel", w.copy()), *bias],
                kernel_shape=[4, 4],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            )
        if mode == "transpose":
            # The same as four 2x2 convs, one per output phase (r, c): out[2i + r, 2j + c] =
            # sum_ab k[r + 2a, c + 2b] x[i + r + a - 1, j + c + b - 1], then interleaved
            # (DepthToSpace). ONNX Runtime's ConvTranspose took 2/3 of the shipped model's time.
            phases = [self.phase_conv(x, k, r, c, bias, name) for r in (0, 1) for c in (0, 1)]
            return self.op("DepthToSpace", [self.op("Concat", phases, axis=1)], blocksize=2, mode="DCR")
        scales = self.const(f"{name}/scales", np.array([1, 1, 2, 2], np.float32))
        x = self.op(
            "Resize", [x, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"
        )
        inputs = [x, self.const(f"{name}/kernel", k.transpose(3, 2, 0, 1)), *bias]
        return self.op("Conv", inputs, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])

    def phase_conv(self, x: str, k: np.ndarray, r: int, c: int, bias: list[str], name: str) -> str:
        """Output phase (r, c) of the stride-2 transposed conv with kernel ``k`` (4, 4, Cin, Cout):
        out[2i + r, 2j + c] = sum_ab k[r + 2a, c + 2b] x[i + r + a - 1, j + c + b - 1]."""
        w = k[r::2, c::2].transpose(3, 2, 0, 1)  # (Cout, Cin, 2, 2)
        return self.op(
            "Conv",
            [x, self.const(f"{name}/kernel_{r}{c}", w.copy()), *bias],
            kernel_shape=[2, 2],
            strides=[1, 1],
            pads=[1 - r, 1 - c, r, c],
        )

    def outer_tail(self, x: str, up_name: str, conv_name: str) -> str:
        """The outermost level with ``input_skip``: transposed conv -> ReLU -> concat with the
        input -> 3x3 conv (-> one channel), computed at half resolution on the four output phases
        (the input as ``SpaceToDepth``); only the one-channel result is interleaved to full size.
        The same sums as the full-size graph in another order, without forming the 16-channel
        full-size tensor, whose interleaving, concat and ReLU dominated ONNX Runtime's profile
        (docs/onnx.md). Full-size tap (dy, dx) of output phase (r, c) reads phase
        ((r + dy) % 2, (c + dx) % 2) at half-size offset ((r + dy) // 2, (c + dx) // 2)."""
        up, fin = self.module(up_name), self.module(conv_name)
        k, kf = up["kernel"], fin["kernel"]  # (4, 4, Cin, C), (3, 3, C + 2, 1)
        ch = k.shape[3]
        bias = [self.const(f"{up_name}/bias", up["bias"])] if "bias" in up else []

        def tail_kernel(src_r: int, src_c: int, channels: slice, size: int) -> np.ndarray:
            # (output phase 2r + c, channel, row offset, column offset); size 2: the offsets that
            # phase (src_r, src_c) is read at, {0, 1} for phase 0 and {-1, 0} for phase 1; size 3: -1..1
            w = np.zeros((4, channels.stop - channels.start, size, size), np.float32)
            first_r, first_c = (-src_r, -src_c) if size == 2 else (-1, -1)
            for r in (0, 1):
                for c in (0, 1):
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            if ((r + dy) % 2, (c + dx) % 2) == (src_r, src_c):
                                a, b = (r + dy) // 2 - first_r, (c + dx) // 2 - first_c
                                w[2 * r + c, :, a, b] = kf[dy + 1, dx + 1, channels, 0]
            return w

        terms = []
        for r in (0, 1):
            for c in (0, 1):
                phase = self.op("Relu", [self.phase_conv(x, k, r, c, bias, up_name)])
                w = self.const(f"{conv_name}/kernel_from_{r}{c}", tail_kernel(r, c, slice(0, ch), 2))
                terms.append(self.op("Conv", [phase, w], kernel_shape=[2, 2], pads=[r, c, 1 - r, 1 - c]))
        # SpaceToDepth channel (2r + c) * 2 + i is input channel i at phase (r, c)
        w_in = np.concatenate([tail_kernel(r, c, slice(ch, ch + 2), 3) for r in (0, 1) for c in (0, 1)], axis=1)
        inputs = [self.op("SpaceToDepth", [INPUT], blocksize=2), self.const(f"{conv_name}/kernel_from_input", w_in)]
        if "bias" in fin:
            inputs.append(self.const(f"{conv_name}/bias", np.repeat(fin["bias"], 4)))
        terms.append(self.op("Conv", inputs, kernel_shape=[3, 3], pads=[1] * 4))
        y = terms[-1]
        for t in terms[:-1]:  # a chain of Adds, not Sum: ONNX Runtime fuses each into its Conv
            y = self.op("Add", [t, y])
        return self.op("DepthToSpace", [y], blocksize=2, mode="DCR")

    def norm(self, x: str, name: str, bn: str) -> str:
        p = self.module(name)
        scale = self.const(f"{name}/scale", p["scale"])
        bias = self.const(f"{name}/bias", p["bias"])
        if bn == "running":
            s = {k: np.asarray(v, np.float32) for k, v in self.stats[name].items()}
            return self.op(
                "BatchNormalization",
                [x, scale, bias, self.const(f"{name}/mean", s["mean"]), self.const(f"{name}/var", s["var"])],
                epsilon=1e-5,
            )
        # InstanceNorm, or BatchNorm in train mode on a batch of one image: per image and channel
        return self.op("InstanceNormalization", [x, scale, bias], epsilon=1e-5)


def _graph(params: FuseParams, bn: str, opset: int, transpose: str):
    """The generator as an ``onnx.GraphProto`` (NCHW), ``bn`` in running/image/none."""
    from onnx import TensorProto, helper, numpy_helper

    arch = params.arch.as_dict()
    for key, allowed in SUPPORTED.items():
        if arch[key] not in allowed:
            raise OnnxExportError(
                f"export_onnx: {key}={arch[key]!r} is not supported by the ONNX "
                f"exporter (it knows {', '.join(map(str, allowed))})"
            )
    n = int(arch["num_downs"])
    norm_name = "BatchNorm" if arch["norm"] == "batch" else "InstanceNorm"
    residual = arch["output"] == "residual_average"
    b = _Builder(helper, numpy_helper, params.variables, transpose)
    counters = {"Conv": 0, "Upsample2x": 0, norm_name: 0}

    def next_name(kind: str) -> str:
        counters[kind] += 1
        return f"{kind}_{counters[kind] - 1}"

    x, skips = INPUT, []
    for level in range(n):
        if level > 0:
            x = b.op("LeakyRelu", [x], alpha=0.2)
        x = b.conv(x, next_name("Conv"), pad=1, stride=2)
        if 0 < level < n - 1:
            x = b.norm(x, next_name(norm_name), bn)
        skips.append(x)
    tail_in_phases = arch["input_skip"] and arch["upsample"] == "transpose" and transpose == "phases"
    for level in reversed(range(n)):
        if level < n - 1:
            x = b.op("Concat", [skips[level], x], axis=1)
        x = b.op("Relu", [x])
        if level == 0 and tail_in_phases:
            x = b.outer_tail(x, next_name("Upsample2x"), "residual" if residual else next_name("Conv"))
            break
        final = level == 0 and not arch["input_skip"]
        x = b.upsample(x, "residual" if final and residual else next_name("Upsample2x"), arch["upsample"])
        if level > 0:
            x = b.norm(x, next_name(norm_name), bn)
    if arch["input_skip"] and not tail_in_phases:
        x = b.op("Concat", [b.op("Relu", [x]), INPUT], axis=1)
        x = b.conv(x, "residual" if residual else next_name("Conv"), pad=1, stride=1)
    if residual:  # x + logit(clip(mean(ir, vis), 1/512, 1 - 1/512))
        if opset >= 18:
            avg = b.op("ReduceMean", [INPUT, b.const("avg_axes", np.array([1], np.int64))], keepdims=1)
        else:
            avg = b.op("ReduceMean", [INPUT], axes=[1], keepdims=1)
        avg = b.op("Clip", [avg, b.const("clip_lo", np.float32(1 / 512)), b.const("clip_hi", np.float32(1 - 1 / 512))])
        one_minus = b.op("Sub", [b.const("one", np.float32(1.0)), avg])
        x = b.op("Add", [x, b.op("Log", [avg])])
        x = b.op("Sub", [x, b.op("Log", [one_minus])])
    b.op("Sigmoid", [x], out=OUTPUT)
    unused = sorted(set(b.params) - b.used)
    if unused:
        raise OnnxExportError(
            f"export_onnx: variables {', '.join(unused)} are not used by the ONNX "
            "graph; this exporter does not know this generator"
        )
    dims = ["batch", "height", "width"]
    return helper.make_graph(
        b.nodes,
        "patchfuse_generator",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [dims[0], 2, dims[1], dims[2]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [dims[0], 1, dims[1], dims[2]])],
        initializer=b.inits,
    )


def onnx_model(
    params: FuseParams, *, bn: str = DEFAULT_BN, opset: int = DEFAULT_OPSET, transpose: str = "phases", source: str = ""
):
    """The ``onnx.ModelProto`` of ``export_onnx`` (checked with ``onnx.checker``)."""
    from patchfuse_jax import __version__

    onnx = _require("onnx")
    if not isinstance(params, FuseParams):
        raise TypeError(
            "export_onnx: params must come from patchfuse_jax.load_checkpoint(path) or patchfuse_jax.pretrained()"
        )
    if int(opset) not in OPSETS:
        raise ValueError(f"export_onnx: opset={opset}: expected {OPSETS.start}-{OPSETS.stop - 1}")
    arch = params.arch.as_dict()
    mode = _effective_bn(bn, arch)
    if transpose not in TRANSPOSE_FORMS:
        raise ValueError(f"export_onnx: transpose={transpose!r}: expected {' or '.join(TRANSPOSE_FORMS)}")
    graph = _graph(params, mode, int(opset), transpose)
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", int(opset))],
        producer_name="patchfuse_jax",
        producer_version=__version__,
    )
    model.ir_version = min(model.ir_version, 8 if opset < 21 else 10)  # loadable by older runtimes
    model.doc_string = (
        "patchfuse_jax IR+visible fusion generator. Input ir_vis float32 (B, 2, H, W): "
        "[IR, visible luma] in [0, 1], H and W multiples of pad_multiple (reflect-pad "
        "bottom/right, crop the output back). Output fused float32 (B, 1, H, W) in [0, 1]."
    )
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "arch": json.dumps(arch, sort_keys=True),
        "bn": mode,
        "step": str(int(params.step)),
        "variables_sha256": weights_sha256(params),
        "pad_multiple": str(2 ** int(arch["num_downs"])),
        "input": f"{INPUT}: float32 (B, 2, H, W), [ir, vis luma] in [0, 1]",
        "output": f"{OUTPUT}: float32 (B, 1, H, W) in [0, 1]",
        "patchfuse_jax_version": __version__,
        "source": source,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def export_onnx(
    params: FuseParams,
    path: str | os.PathLike,
    *,
    bn: str = DEFAULT_BN,
    opset: int = DEFAULT_OPSET,
    transpose: str = "phases",
    source: str = "",
) -> dict[str, str]:
    """Writes the generator of ``params`` to ``path`` as ONNX (module docstring: input, output,
    padding rule, ``bn``); atomic. ``transpose``: the decoder's transposed convs as four 2x2
    phase convs + DepthToSpace (``"phases"``, faster in ONNX Runtime) or as ``ConvTranspose``
    (``"native"``); the same function. Returns the file's metadata plus ``bytes``."""
    model = onnx_model(params, bn=bn, opset=opset, transpose=transpose, source=source)
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OnnxExportError(f"{path}: is a directory; --out needs a file name, e.g. model.onnx")
    data = model.SerializeToString()
    write_bytes_atomic(path, data)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["bytes"] = str(len(data))
    return meta


# --- Reading and checking ------------------------------------------------------------------------


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The patchfuse_jax metadata of an ONNX file; OnnxExportError (one line naming ``path``)
    for a file that is not ONNX, is corrupt, or was not written by ``export_onnx``."""
    onnx = _require("onnx")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OnnxExportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - protobuf/onnx raise many types on bad input
        text = " ".join(str(e).split())[:200]
        raise OnnxExportError(
            f"{path}: not an ONNX model, or the file is truncated/corrupt ({type(e).__name__}: {text})"
        ) from None
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("format") != FORMAT:
        raise OnnxExportError(
            f"{path}: an ONNX model, but not a patchfuse_jax generator "
            "(no patchfuse_jax metadata; write one with export --format=onnx)"
        )
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise OnnxExportError(
            f"{path}: ONNX export format version {meta['format_version']} is newer "
            f"than this patchfuse_jax reads ({FORMAT_VERSION}); upgrade patchfuse_jax"
        )
    return meta


def check_onnx(path: str | os.PathLike, params: FuseParams, bn: str | None = None) -> dict[str, str]:
    """Checks that the ONNX file ``path`` holds the generator of ``params`` (architecture and
    weights' checksum) and, for BatchNorm models when given, BatchNorm mode ``bn``; returns its
    metadata. OnnxExportError (one line naming ``path``) otherwise."""
    path = os.fspath(path)
    meta = read_onnx_metadata(path)
    arch = json.loads(meta["arch"])
    want = params.arch.as_dict()
    if arch != want:
        diff = ", ".join(f"{k}={arch.get(k)!r} (expected {want[k]!r})" for k in sorted(want) if arch.get(k) != want[k])
        raise OnnxExportError(f"{path}: ONNX model of another generator architecture: {diff}")
    if meta.get("variables_sha256") != weights_sha256(params):
        raise OnnxExportError(
            f"{path}: ONNX model holds other weights than the given model (its "
            f"step {meta.get('step')}, the model's step {params.step}; the weights' "
            "checksums differ): export it again"
        )
    if bn is not None:
        mode = _effective_bn(bn, want)
        if mode != meta.get("bn"):
            raise OnnxExportError(
                f"{path}: ONNX model uses BatchNorm mode {meta.get('bn')!r}, not {bn!r}: export it again with bn={bn!r}"
            )
    return meta


def onnx_session(
    path: str | os.PathLike,
    params: FuseParams | None = None,
    bn: str | None = None,
    providers=("CPUExecutionProvider",),
    threads: int = 0,
):
    """An ``onnxruntime.InferenceSession`` for the file ``path``, after ``check_onnx`` when
    ``params`` is given (else ``read_onnx_metadata``). ``threads``: intra-op threads (0: ONNX
    Runtime's default, one per core; on a CPU shared with other work, 1 can be faster)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    path = os.fspath(path)
    if params is not None:
        check_onnx(path, params, bn)
    else:
        read_onnx_metadata(path)
    try:
        return ort.InferenceSession(path, options, providers=list(providers))
    except Exception as e:  # noqa: BLE001
        raise OnnxExportError(f"{path}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:200]})") from None


_SESSIONS: dict = {}  # (weights, arch, bn, threads) -> InferenceSession, for generator_session
# id(variables) -> (variables, weights_sha256): a loaded model is hashed once, not per fuse call
# (holding the variables keeps the id from being reused).
_HASHES: dict = {}


def _weights_key(params: FuseParams) -> str:
    entry = _HASHES.get(id(params.variables))
    if entry is None or entry[0] is not params.variables:
        entry = _HASHES[id(params.variables)] = (params.variables, weights_sha256(params))
    return entry[1]


def generator_session(params: FuseParams, bn: str = DEFAULT_BN, threads: int = 0, spin: bool = True):
    """The generator of ``params`` run by ONNX Runtime, with the signature of
    ``fusing.api.generator_fn``'s functions: ``(variables, x (B, H, W, 2)) -> (B, H, W, 1)``
    float32, ``x`` padded to a multiple of ``2**num_downs`` (``variables`` is ignored: the
    weights are in the graph). The session (the model built in memory, not written to disk) is
    made once per weights, ``bn`` mode, thread count and ``spin`` and kept for the process.
    ``spin=False``: ONNX Runtime's threads sleep between runs instead of spinning, leaving the
    cores to work done between calls (video decoding and encoding: docs/deploy.md); a single
    call waits a little longer for them to wake."""
    ort = _require("onnxruntime")
    key = (_weights_key(params), params.arch, _effective_bn(bn, params.arch.as_dict()), int(threads), bool(spin))
    if key not in _SESSIONS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        data = onnx_model(params, bn=bn).SerializeToString()
        _SESSIONS[key] = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    session = _SESSIONS[key]

    def run(variables, x):
        # One image per call: ONNX Runtime's CPU kernels ran batches slower per frame than
        # single images (docs/onnx.md, "Speed"), and the results do not depend on the batch.
        x = np.asarray(x, np.float32).transpose(0, 3, 1, 2)
        ys = [session.run([OUTPUT], {INPUT: np.ascontiguousarray(x[i : i + 1])})[0] for i in range(len(x))]
        return np.concatenate(ys).transpose(0, 2, 3, 1)

    return run


def run_onnx(session, ir: np.ndarray, vis: np.ndarray, pad_multiple: int) -> np.ndarray:
    """``float32 (B, H, W)`` [0, 1] IR and visible luma -> fused ``(B, H, W)``: reflect-pads to
    a multiple of ``pad_multiple`` (bottom/right), runs ``session``, crops back."""
    x = np.stack([ir, vis], axis=1).astype(np.float32)
    h, w = x.shape[2:]
    m = int(pad_multiple)
    x = np.pad(x, ((0, 0), (0, 0), (0, (-h) % m), (0, (-w) % m)), mode="reflect")
    return session.run([OUTPUT], {INPUT: x})[0][:, 0, :h, :w]


__all__ = [
    "DEFAULT_OPSET",
    "FORMAT",
    "FORMAT_VERSION",
    "OnnxExportError",
    "check_onnx",
    "export_onnx",
    "generator_session",
    "onnx_model",
    "onnx_session",
    "read_onnx_metadata",
    "run_onnx",
    "weights_sha256",
]
