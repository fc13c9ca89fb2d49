"""Convolutions of the networks, each as the plain XLA op and as an exact faster form for CPU.

Layout NHWC, kernels HWIO, no bias. ``impl`` (``--conv_impl``): ``"xla"`` runs the literal
``lax`` ops; ``"fast"`` the forms below; ``"auto"`` is ``fast`` on CPU and ``xla`` elsewhere
(cuDNN and the TPU compiler have native kernels for all of these). Both compute the same
function with the same parameters (tests: float64, 1e-10, values and gradients). docs/design.md
says why each form was chosen; the timings behind the forms and the constants below are in
docs/benchmarks.md, 'Measurements behind the code'.

Which form runs where (``MATMUL_MIN_CHANNELS``: kernels with smaller ``Cin * Cout`` keep
XLA's ops, which are as fast there and compile faster):

* Strided convs (encoder, discriminators): XLA's conv forward. Backward, for even kernels (4x4
  stride 2), the gradients of the same conv written as a 2x2 stride-1 Winograd conv of the
  2x2 space-to-depth input (``winograd.space_to_depth_conv``): 9 multiply-adds per 2x2
  output tile and channel pair instead of 16. Other kernels (``WEIGHT_GRAD_MIN_CHANNELS``):
  the weight gradient is one matmul ``X_ij^T dY`` per tap of the tap's stride-subsampled
  window ``X_ij (B*Ho*Wo, Cin)`` of the padded input (XLA's is a conv with ``dY`` as kernel, at
  a fraction of the matmul rate), the input gradient XLA's. Tiny outputs
  (``TINY_MAX_POSITIONS``): forward and backward are single matmuls.
* Stride-1 4x4 convs (the discriminators' 256 -> 512 layer): Winograd F(4x4, 4x4), forward
  and backward: 49 multiply-adds per 4x4 output tile and channel pair instead of 256.
* Thin convs (at most ``THIN_MAX_COUT`` output channels, inputs of ``THIN_MIN_POSITIONS`` or
  more: the discriminators' last layer, the generator's output): one matmul over all taps
  forward, two backward, each reading the big input once (XLA's weight gradient there, a conv
  with a one-channel kernel, runs far below the matmul rate).
* The decoder's 2x upsampling conv. Each output phase (row parity r, column parity c) is a 2x2
  stride-1 conv of the low-resolution input with phase kernel ``K_rc`` (slices, or for
  ``resize`` sums, of the stored kernel; ``_UP_TAPS``). Inputs of at most
  ``MATMUL_MAX_POSITIONS`` positions compute all 16 taps as one batched matmul with the stored
  kernel as it is, backward too: XLA would otherwise write a transposed copy of the whole kernel
  (up to 1024x512x4x4) for the input gradient. Larger inputs are one 2x2 conv to ``4 Cout``
  channels (all phases side by side): XLA's conv forward, Winograd F(2x2, 2x2) gradients.

The Winograd forms are used for float32 and float64 only; bfloat16 keeps the direct forms.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from patchfuse_jax.nn import winograd

CONV_IMPLS = ("auto", "xla", "fast")

# Upsampling inputs with at most this many positions (H x W) take the matmul form: XLA:CPU runs
# small-image, many-channel 2x2 convs at a fraction of its matmul rate, large images are faster
# as convs (measured, docs/design.md).
MATMUL_MAX_POSITIONS = 256
# Kernels with Cin * Cout at least this take the matmul forms (per-tap weight gradients, the
# small-input upsampling, tiny outputs); smaller ones keep XLA's ops, which are as fast there and
# compile faster. Strided convs take per-tap weight gradients from WEIGHT_GRAD_MIN_CHANNELS.
MATMUL_MIN_CHANNELS = 2**14
# Strided convs (other than the space-to-depth Winograd ones) with Cin * Cout at least this take
# per-tap weight gradients (``_weight_grad``). XLA's, a conv with dY as the kernel, runs the
# paper discriminators' 3x3 stride-2 64 -> 128 layer at a fraction of the matmul rate; the per-tap
# matmuls compute that gradient faster, and the paper step with them is faster
# (docs/benchmarks.md, 'Measurements behind the code'; docs/design.md).
WEIGHT_GRAD_MIN_CHANNELS = 2**13
# Strided convs with at most this many output positions (the innermost encoder levels) run as
# one matmul forward and backward: XLA:CPU lowers them to slow generic convs and kernel reversals.
TINY_MAX_POSITIONS = 64
# Convs with at most this many output channels and inputs of at least this many positions
# take the thin form (``_conv_thin``); on small inputs XLA's ops are fast enough and the thin
# form only adds compile time (docs/benchmarks.md, 'Measurements behind the code').
THIN_MAX_COUT = 4
THIN_MIN_POSITIONS = 256

_DN = ("NHWC", "HWIO", "NHWC")

# XLA:CPU (jaxlib 0.10) hands convolutions and dots to YNNPACK. For the generator's inference
# forward XLA's own kernels (Eigen) are faster here: the batched small-M matmuls of the inner
# decoder levels read their weights once instead of repacking them, and the encoder's strided
# convs run faster. The training step is slower that way, so only inference executables (fuse,
# validation) use these options (docs/benchmarks.md, 'Measurements behind the code').
INFERENCE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def resolve_impl(impl: str) -> str:
    """``auto`` -> ``fast`` on CPU, ``xla`` on other backends."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"--conv_impl={impl!r}: expected one of {', '.join(CONV_IMPLS)}")
    if impl == "auto":
        return "fast" if jax.default_backend() == "cpu" else "xla"
    return impl


@functools.cache
def _compiler_options_accepted(items: tuple) -> bool:
    """Whether this jaxlib knows the options ``items`` (experimental XLA flags)."""
    try:
        jax.jit(lambda x: x + 1).lower(jnp.zeros(2)).compile(compiler_options=dict(items))
        return True
    except Exception:  # noqa: BLE001  (an unknown option or value: compile without it)
        return False


def cpu_compiler_options(options: dict) -> dict | None:
    """``options`` (XLA:CPU flags) on the CPU backend if this jaxlib accepts them, else None."""
    if jax.default_backend() != "cpu" or not _compiler_options_accepted(tuple(sorted(options.items()))):
        return None
    return dict(options)


def inference_compiler_options(impl: str = "auto") -> dict | None:
    """``compiler_options`` for jitted inference (``fuse``, validation) with ``impl``:
    ``INFERENCE_COMPILER_OPTIONS`` on CPU with the fast forms, else None."""
    return cpu_compiler_options(INFERENCE_COMPILER_OPTIONS) if resolve_impl(impl) == "fast" else None


def _is_big(kernel) -> bool:
    return kernel.shape[-2] * kernel.shape[-1] >= MATMUL_MIN_CHANNELS


def _xla_conv(x, kernel, stride: int, padding):
    """``padding``: ``((top, bottom), (left, right))``."""
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DN)


def _taps(i: int, stride: int, n: int) -> slice:
    """Input rows read by kernel row ``i`` for ``n`` outputs: ``i, i + stride, ...``."""
    return slice(i, i + stride * (n - 1) + 1, stride)


def _at_tap(a, i: int, j: int, stride: int, hp: int, wp: int):
    """``a (..., Ho, Wo)`` placed where tap ``(i, j)`` reads a ``(hp, wp)`` padded input (rows
    ``i + stride q``, columns ``j + stride p``), zeros elsewhere: ``(..., hp, wp)``."""
    ho, wo = a.shape[-2:]
    lead = ((0, 0, 0),) * (a.ndim - 2)
    return lax.pad(
        a,
        jnp.zeros((), a.dtype),
        (*lead, (i, hp - i - stride * (ho - 1) - 1, stride - 1), (j, wp - j - stride * (wo - 1) - 1, stride - 1)),
    )


def _weight_grad(xp, dy, kh: int, kw: int, stride: int):
    """``dW (kh, kw, Cin, Cout)`` of a valid conv of the padded input ``xp (B, Hp, Wp, Cin)``
    with output gradient ``dy (B, Ho, Wo, Cout)``: per tap ``(i, j)`` one matmul
    ``X_ij^T dY`` of the tap's strided window ``X_ij (B*Ho*Wo, Cin)``, read in NHWC (no
    channel-major copy of the input, no stacked windows)."""
    ho, wo = dy.shape[1:3]
    d = dy.reshape(-1, dy.shape[-1])
    return jnp.stack(
        [
            xp[:, _taps(i, stride, ho), _taps(j, stride, wo)].reshape(-1, xp.shape[-1]).T @ d
            for i in range(kh)
            for j in range(kw)
        ]
    ).reshape(kh, kw, xp.shape[-1], -1)


# --- Strided convs (the encoder and the discriminators) --------------------------------------


def _out_hw(x, kernel, stride: int, pad: int):
    return tuple((n + 2 * pad - k) // stride + 1 for n, k in zip(x.shape[1:3], kernel.shape[:2]))


def _is_tiny(x, kernel, stride: int, pad: int) -> bool:
    ho, wo = _out_hw(x, kernel, stride, pad)
    return ho * wo <= TINY_MAX_POSITIONS and _is_big(kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_fast(x, kernel, stride: int, pad: int):
    if not _is_tiny(x, kernel, stride, pad):
        return _xla_conv(x, kernel, stride, ((pad, pad), (pad, pad)))
    # Tiny outputs: one matmul of the (B*Ho*Wo, kh*kw*Cin) windows with the stored kernel.
    (kh, kw, cin, cout), (ho, wo) = kernel.shape, _out_hw(x, kernel, stride, pad)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = jnp.concatenate(
        [xp[:, _taps(i, stride, ho), _taps(j, stride, wo)] for i in range(kh) for j in range(kw)], -1
    )
    return (cols.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, cout)).reshape(x.shape[0], ho, wo, cout)


def _conv_fast_fwd(x, kernel, stride, pad):
    return _conv_fast(x, kernel, stride, pad), (x, kernel)


def _conv_fast_bwd(stride, pad, res, dy):
    x, kernel = res
    padding = ((pad, pad), (pad, pad))
    if _is_space_to_depth(x, kernel, stride, pad):
        return jax.vjp(lambda x, k: winograd.space_to_depth_conv(x, k, pad, 2), x, kernel)[1](dy)
    if _is_winograd_2x2(x, kernel, stride):
        return jax.vjp(lambda x, k: winograd.conv_winograd(x, k, pad, 2), x, kernel)[1](dy)
    per_tap_grad = stride > 1 and kernel.shape[-2] * kernel.shape[-1] >= WEIGHT_GRAD_MIN_CHANNELS
    if not _is_big(kernel) and not per_tap_grad:
        return jax.vjp(lambda x, k: _xla_conv(x, k, stride, padding), x, kernel)[1](dy)
    b, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    dk = _weight_grad(jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))), dy, kh, kw, stride)
    if not _is_tiny(x, kernel, stride, pad):
        (dx,) = jax.vjp(lambda x: _xla_conv(x, kernel, stride, padding), x)[1](dy)
        return dx, dk
    # Tiny outputs: dX^T per tap = W[i, j] (Cin, Cout) @ dY^T, added back at the tap's offsets.
    ho, wo = dy.shape[1:3]
    dcols = (kernel.reshape(-1, cout) @ dy.reshape(-1, cout).T).reshape(kh, kw, cin, b, ho, wo)
    dxt = sum(_at_tap(dcols[i, j], i, j, stride, h + 2 * pad, w + 2 * pad) for i in range(kh) for j in range(kw))
    return dxt[:, :, pad : pad + h, pad : pad + w].transpose(1, 2, 3, 0), dk


_conv_fast.defvjp(_conv_fast_fwd, _conv_fast_bwd)


# --- Thin convs (few output channels: the discriminators' last layer, the generator's output) ---


def _tap_placement(kh: int, kw: int, cout: int, dtype):
    """One-hot kernel ``E (kh, kw, kh*kw*Cout, Cout)``, ``E[i, j, (i, j, o), o] = 1``: a conv of
    per-tap products ``Z (..., kh*kw*Cout)`` with ``E`` adds tap ``(i, j)``'s column at offset
    ``(i, j)``, as the direct conv does (one small op instead of kh*kw slices: faster to compile)."""
    n = kh * kw * cout
    return jnp.asarray(np.eye(n).reshape(n, kh, kw, cout).transpose(1, 2, 0, 3), dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_thin(x, kernel, stride: int, pad: int):
    """All taps at once: ``Z = X (B*Hp*Wp, Cin) @ W (Cin, kh*kw*Cout)``, then each output sums
    its taps' columns of ``Z`` at the tap offsets (a conv with ``_tap_placement``). The big input
    is read once."""
    kh, kw, cin, cout = kernel.shape
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    z = (xp.reshape(-1, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, -1)).reshape(*xp.shape[:3], -1)
    return _xla_conv(z, _tap_placement(kh, kw, cout, z.dtype), stride, ((0, 0), (0, 0)))


def _conv_thin_fwd(x, kernel, stride, pad):
    return _conv_thin(x, kernel, stride, pad), (x, kernel)


def _conv_thin_bwd(stride, pad, res, dy):
    """With ``D (B*Hp*Wp, kh*kw*Cout)``, the output gradient placed at the positions each tap
    reads (the transpose of the placement conv): ``dW = D^T X`` and ``dX_padded = D W^T``, two
    matmuls that read or write the big array once. (XLA's weight gradient here is a conv with
    a one-channel kernel, far below the matmul rate: docs/benchmarks.md, 'Measurements behind
    the code'.)"""
    x, kernel = res
    kh, kw, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    z_shape = jax.ShapeDtypeStruct((*xp.shape[:3], kh * kw * cout), dy.dtype)
    place = _tap_placement(kh, kw, cout, dy.dtype)
    (d,) = jax.linear_transpose(lambda z: _xla_conv(z, place, stride, ((0, 0), (0, 0))), z_shape)(dy)
    d = d.reshape(-1, kh * kw * cout)
    dk = (d.T @ xp.reshape(-1, cin)).reshape(kh, kw, cout, cin).transpose(0, 1, 3, 2)
    dxp = (d @ kernel.transpose(0, 1, 3, 2).reshape(-1, cin)).reshape(xp.shape)
    return dxp[:, pad : pad + h, pad : pad + w], dk


_conv_thin.defvjp(_conv_thin_fwd, _conv_thin_bwd)


# --- Winograd forms (winograd.py) ---------------------------------------------------------------

# Output tile of the stride-1 4x4 Winograd convs: F(4x4, 4x4) (49 products per 16 outputs; F(2x2,
# 4x4): 25 per 4), the faster of the two at the paper's D layer, forward and backward
# (docs/benchmarks.md, 'Measurements behind the code').
WINOGRAD_TILE = 4


def _is_winograd_2x2(x, kernel, stride: int) -> bool:
    """Stride-1 2x2 convs with big kernels (the upsampling's conv form) take F(2x2, 2x2) Winograd
    gradients (their forward stays XLA's conv, which is as fast); they make the paper step
    faster (docs/benchmarks.md, 'Measurements behind the code'). F(4x4, 2x2) (25 products per 16
    outputs) was faster standalone on large inputs but slower in the step (docs/design.md)."""
    return _winograd_fits(x, kernel, stride, 2)


def _is_winograd(x, kernel, stride: int) -> bool:
    """Stride-1 4x4 convs run as Winograd convs (a Winograd forward for 2x2 ones measured no
    faster: docs/design.md; their gradients are ``_is_winograd_2x2``)."""
    return _winograd_fits(x, kernel, stride, 4)


def _winograd_fits(x, kernel, stride: int, size: int) -> bool:
    """A big stride-1 ``size x size`` conv in a dtype the Winograd forms take."""
    dtypes_ok = x.dtype in winograd.DTYPES and kernel.dtype in winograd.DTYPES
    return stride == 1 and kernel.shape[:2] == (size, size) and _is_big(kernel) and dtypes_ok


def _is_space_to_depth(x, kernel, stride: int, pad: int) -> bool:
    k = kernel.shape[0]
    return (
        stride == 2
        and kernel.shape[1] == k
        and k % 2 == 0
        and (2, k // 2) in winograd.POINTS
        and 4 * kernel.shape[2] * kernel.shape[3] >= MATMUL_MIN_CHANNELS
        and x.dtype in winograd.DTYPES
        and kernel.dtype in winograd.DTYPES
        and not _is_tiny(x, kernel, stride, pad)
    )


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, pad: int, impl: str = "xla") -> jax.Array:
    """``x (B, H, W, Cin)`` conv ``kernel (kh, kw, Cin, Cout)``, zero padding ``pad`` on every
    side, stride ``stride``: ``(B, (H + 2 pad - kh)//stride + 1, ..., Cout)``."""
    if resolve_impl(impl) == "xla":
        return _xla_conv(x, kernel, stride, ((pad, pad), (pad, pad)))
    if _is_winograd(x, kernel, stride):
        return winograd.conv_winograd(x, kernel, pad, WINOGRAD_TILE)
    if kernel.shape[-1] <= THIN_MAX_COUT and x.shape[1] * x.shape[2] >= THIN_MIN_POSITIONS:
        return _conv_thin(x, kernel, stride, pad)
    return _conv_fast(x, kernel, stride, pad)


# --- The decoder's 2x upsampling conv ----------------------------------------------------------
# Along one axis, output phase p at low-res position q reads the input zero-padded by 1 at
# q + p + t (tap t = 0, 1) with the sum of the kernel rows _UP_TAPS[mode][p][t]:
#  transpose: 4x4 stride-2 'SAME' transposed conv: y[2q] = k0 x[q-1] + k2 x[q],
#             y[2q+1] = k1 x[q] + k3 x[q+1].
#  resize:    nearest 2x upsampling, then a 3x3 conv (zero padding 1): y[2q] = k0 x[q-1] +
#             (k1 + k2) x[q], y[2q+1] = (k0 + k1) x[q] + k2 x[q+1].
_UP_TAPS = {"transpose": (((0,), (2,)), ((1,), (3,))), "resize": (((0,), (1, 2)), ((0, 1), (2,)))}
UPSAMPLE_KERNEL = {"transpose": 4, "resize": 3}
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def phase_kernel(kernel: jax.Array, mode: str, r: int, c: int) -> jax.Array:
    """Stored kernel ``(k, k, Cin, Cout)`` -> the 2x2 kernel ``(2, 2, Cin, Cout)`` of output
    phase ``(r, c)``: tap ``(a, b)`` sums the stored taps ``(u, v)``, u in _UP_TAPS[r][a]."""
    rows, cols = _UP_TAPS[mode][r], _UP_TAPS[mode][c]
    if mode == "transpose":  # single rows: tap a of phase r is kernel row 2a + r, a slice
        return kernel[r::2, c::2]
    return jnp.stack([jnp.stack([sum(kernel[u, v] for u in rows[a] for v in cols[b]) for b in (0, 1)]) for a in (0, 1)])


def _phase_kernel_grad(dkp, mode: str, k: int):
    """Adjoint of ``phase_kernel``: ``dkp[(r, c)] (2, 2, Cin, Cout)`` -> ``(k, k, Cin, Cout)``."""
    acc = {}
    for (r, c), a, b in itertools.product(_PHASES, (0, 1), (0, 1)):
        for u, v in itertools.product(_UP_TAPS[mode][r][a], _UP_TAPS[mode][c][b]):
            acc[u, v] = acc.get((u, v), 0) + dkp[r, c][a, b]
    return jnp.stack([jnp.stack([acc[u, v] for v in range(k)]) for u in range(k)])


def _interleave_phases(phases, b, h, w):
    """``phases[(r, c)] (B, H, W, C)`` -> ``(B, 2H, 2W, C)`` with ``y[2q + r, 2p + c]``."""
    y = jnp.stack([jnp.stack([phases[r, c] for c in (0, 1)], 3) for r in (0, 1)], 2)
    return y.reshape(b, 2 * h, 2 * w, y.shape[-1])


def _tap_kernels(kernel, mode: str):
    """The 16 tap kernels ``(16, Cin, Cout)``, tap ``(2a + r, 2b + c)`` = tap ``(a, b)`` of phase
    ``(r, c)``, row-major. For ``transpose`` that is the stored kernel itself (a reshape)."""
    k, _, cin, cout = kernel.shape
    if mode == "transpose":
        return kernel.reshape(16, cin, cout)
    kp = {rc: phase_kernel(kernel, mode, *rc) for rc in _PHASES}
    return jnp.stack([kp[i % 2, j % 2][i // 2, j // 2] for i in range(4) for j in range(4)])


def _tap_kernels_grad(dt, mode: str, k: int):
    """Adjoint of ``_tap_kernels``: ``(16, Cin, Cout)`` -> ``(k, k, Cin, Cout)``."""
    if mode == "transpose":
        return dt.reshape(4, 4, *dt.shape[1:])
    dkp = {
        (r, c): jnp.stack([jnp.stack([dt[(2 * a + r) * 4 + 2 * b + c] for b in (0, 1)]) for a in (0, 1)])
        for r, c in _PHASES
    }
    return _phase_kernel_grad(dkp, mode, k)


# Tap (i, j) reads the input padded by 1 at offset (_OFFSET[i], _OFFSET[j]): tap a of phase r is
# row 2a + r and reads offset r + a.
_OFFSET = (0, 1, 1, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _upsample_matmul(x, kernel, mode: str):
    """Small inputs: one batched matmul ``(16, B*H*W, Cin) @ (16, Cin, Cout)`` over the 16 taps
    (the stored kernel is used as it is), then each phase sums its four taps. The backward pass
    is batched matmuls too, with channel-major windows: no transposed kernel copy."""
    b, h, w, cin = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    win = jnp.stack(
        [
            xp[:, _OFFSET[i] : _OFFSET[i] + h, _OFFSET[j] : _OFFSET[j] + w].reshape(-1, cin)
            for i in range(4)
            for j in range(4)
        ]
    )
    z = jnp.einsum("tmi,tio->tmo", win, _tap_kernels(kernel, mode)).reshape(4, 4, b, h, w, -1)
    return _interleave_phases(
        {(r, c): sum(z[2 * a + r, 2 * bb + c] for a in (0, 1) for bb in (0, 1)) for r, c in _PHASES}, b, h, w
    )


def _upsample_matmul_fwd(x, kernel, mode):
    return _upsample_matmul(x, kernel, mode), (x, kernel)


def _upsample_matmul_bwd(mode, res, dy):
    x, kernel = res
    b, h, w, cin = x.shape
    cout = dy.shape[-1]
    dys = {(r, c): dy[:, r::2, c::2].reshape(-1, cout) for r, c in _PHASES}  # (B*H*W, Cout)
    dz = jnp.stack([dys[i % 2, j % 2] for i in range(4) for j in range(4)])  # (16, M, Cout)
    xt = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).transpose(3, 0, 1, 2)  # (Cin, B, H+2, W+2)
    wint = jnp.stack(
        [
            xt[:, :, _OFFSET[i] : _OFFSET[i] + h, _OFFSET[j] : _OFFSET[j] + w].reshape(cin, -1)
            for i in range(4)
            for j in range(4)
        ]
    )  # (16, Cin, M)
    dt = jnp.einsum("tim,tmo->tio", wint, dz)
    dwint = jnp.einsum("tio,tmo->tim", _tap_kernels(kernel, mode), dz).reshape(16, cin, b, h, w)
    zero = jnp.zeros((), dy.dtype)
    dxt = sum(
        lax.pad(
            dwint[i * 4 + j],
            zero,
            ((0, 0, 0), (0, 0, 0), (_OFFSET[i], 2 - _OFFSET[i], 0), (_OFFSET[j], 2 - _OFFSET[j], 0)),
        )
        for i in range(4)
        for j in range(4)
    )
    return dxt[:, :, 1 : h + 1, 1 : w + 1].transpose(1, 2, 3, 0), _tap_kernels_grad(dt, mode, kernel.shape[0])


_upsample_matmul.defvjp(_upsample_matmul_fwd, _upsample_matmul_bwd)


def _upsample_conv(x, kernel, mode: str):
    """Large inputs: one 2x2 conv of the input padded by 1 with all four phase kernels side by side
    (``Cin -> 4 Cout``), at every 2x2 patch position; phase ``(r, c)`` at ``q`` is the output at
    patch ``q + (r, c)``. Its gradients are ``conv2d``'s."""
    b, h, w, cin = x.shape
    kp = jnp.stack(
        [jnp.stack([phase_kernel(kernel, mode, r, c) for c in (0, 1)], -2) for r in (0, 1)], -3
    )  # (2, 2, Cin, 2, 2, Cout)
    cout = kp.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = conv2d(xp, kp.reshape(2, 2, cin, 4 * cout), 1, 0, "fast").reshape(b, h + 1, w + 1, 2, 2, cout)
    return _interleave_phases({(r, c): y[:, r : r + h, c : c + w, r, c] for r, c in _PHASES}, b, h, w)


def upsample2x(x: jax.Array, kernel: jax.Array, mode: str, impl: str = "xla") -> jax.Array:
    """2x upsampling conv, ``x (B, H, W, Cin)`` -> ``(B, 2H, 2W, Cout)``, no bias.

    ``mode="transpose"``: 4x4 stride-2 transposed conv with 'SAME' padding (flax
    ``nn.ConvTranspose(padding='SAME')``, kernel ``(4, 4, Cin, Cout)``), pix2pix's upsampling.
    ``mode="resize"``: nearest-neighbour 2x resize then a 3x3 conv with zero padding 1 (kernel
    ``(3, 3, Cin, Cout)``), which has no checkerboard artefacts (Odena et al., 2016).
    ``impl="xla"`` runs those ops literally; ``"fast"`` the phase form (same function)."""
    if resolve_impl(impl) == "xla":
        if mode == "transpose":
            return lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _xla_conv(x, kernel, 1, ((1, 1), (1, 1)))
    if x.shape[1] * x.shape[2] <= MATMUL_MAX_POSITIONS and _is_big(kernel):
        return _upsample_matmul(x, kernel, mode)
    return _upsample_conv(x, kernel, mode)
