"""Flax modules: the U-Net generator and the PatchGAN discriminator (paper Section 3, Fig. 1).

Layout is NHWC throughout. Images are float32 in [0, 1].

* ``Generator``: pix2pix U-Net with skip connections. Input ``(B, H, W, 2)`` = [IR, visible Y],
  output ``(B, H, W, 1)`` in [0, 1] (sigmoid). Any H x W: the input is reflect-padded to a
  multiple of ``2**num_downs`` and the output cropped back.
* ``Discriminator``: Markovian (PatchGAN) discriminator. Input ``(B, H, W, 1)``, output
  ``(B, h, w)`` of raw least-squares scores, one per patch. Its geometry (kernel/stride per
  conv) is a tuple of ``(kernel, stride)`` pairs; ``receptive_field`` computes the patch size.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# (kernel, stride) of every conv of the discriminator, first to last.
DISCRIMINATOR_PRESETS: dict[str, tuple[tuple[int, int], ...]] = {
    # pix2pix NLayerDiscriminator, n_layers=3: 70x70 patches.
    "pix2pix70": ((4, 2), (4, 2), (4, 2), (4, 1), (4, 1)),
    # 65x65 patches (the paper's 512x256 setting). The paper gives only the patch size; this is
    # our choice of layers: still 3 stride-2 convs (output stride 8) and two 4x4 stride-1 convs.
    "paper65": ((5, 2), (3, 2), (3, 2), (4, 1), (4, 1)),
}


def conv_padding(kernel: int) -> int:
    """Symmetric zero padding of a discriminator conv: 1 for k=4 (pix2pix), (k-1)//2 otherwise."""
    return (kernel - 1) // 2


def parse_discriminator_layers(spec: str) -> tuple[tuple[int, int], ...]:
    """A preset name, or ``"4s2,4s2,4s2,4s1,4s1"`` (kernel ``s`` stride per conv)."""
    if spec in DISCRIMINATOR_PRESETS:
        return DISCRIMINATOR_PRESETS[spec]
    layers = []
    try:
        for item in spec.split(","):
            k, s = item.strip().lower().split("s")
            layers.append((int(k), int(s)))
    except ValueError:
        raise ValueError(
            f"--d_arch={spec!r}: expected a preset ({', '.join(DISCRIMINATOR_PRESETS)}) "
            "or a list like '4s2,4s2,4s2,4s1,4s1'") from None
    if len(layers) < 2 or any(k < 1 or s < 1 for k, s in layers):
        raise ValueError(f"--d_arch={spec!r}: needs at least 2 convs with positive kernel and stride")
    return tuple(layers)


class PatchGeometry(NamedTuple):
    """Input region of output cell i (per axis): ``[i*stride - padding, i*stride - padding + size)``."""
    size: int       # receptive field (patch side, pixels)
    stride: int     # distance between neighbouring cells' patches
    padding: int    # how far the first patch starts before pixel 0


def receptive_field(layers: Sequence[tuple[int, int]]) -> PatchGeometry:
    """Patch geometry of a conv stack: ``size = 1 + sum (k_l - 1) * J_l``, ``J_l`` = product of
    the strides before layer l; ``padding = sum p_l * J_l``."""
    size, jump, pad = 1, 1, 0
    for k, s in layers:
        size += (k - 1) * jump
        pad += conv_padding(k) * jump
        jump *= s
    return PatchGeometry(size, jump, pad)


def make_norm(norm: str, train: bool, axis_name: str | None, dtype: Any = None) -> Callable[..., nn.Module]:
    """BatchNorm (running stats in ``batch_stats``; synced over ``axis_name``) or InstanceNorm.
    Statistics are always reduced in float32; ``dtype`` is the output's."""
    if norm == "batch":
        # PyTorch defaults (momentum 0.1 == flax momentum 0.9, eps 1e-5), as in pix2pix.
        return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5, axis_name=axis_name, dtype=dtype)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm, epsilon=1e-5, dtype=dtype)
    raise ValueError(f"--norm={norm!r}: expected 'batch' or 'instance'")


# --- The decoder's 2x upsampling conv, and a fast exact form of it ---------------------------
# Each of the 4 output phases (row parity r, column parity c) of a 2x upsampling conv is a 2x2
# stride-1 conv of the low-resolution input: along one axis phase p reads x[q-1+p], x[q+p].
# _UP_TAPS[mode][p][tap] lists the kernel rows summed into that tap:
#  transpose: 4x4 stride-2 'SAME' transposed conv: y[2q] = k0 x[q-1] + k2 x[q],
#             y[2q+1] = k1 x[q] + k3 x[q+1].
#  resize:    nearest 2x upsampling, then a 3x3 conv (zero padding 1): y[2q] = k0 x[q-1] +
#             (k1 + k2) x[q], y[2q+1] = (k0 + k1) x[q] + k2 x[q+1].
# ``impl="fast"`` computes the forward as four 2x2 convs and the backward by hand as two
# matmuls over 2x2 patches: XLA:CPU runs the weight gradient of a transposed (or 'full'-padded)
# conv about 20x slower than the equivalent matmul. ``impl="xla"`` runs the literal ops.
# ``impl="auto"`` picks ``fast`` on CPU and ``xla`` elsewhere (cuDNN has native kernels); see
# docs/design.md. Both compute the same function (tests: float64, 1e-10, values and gradients).
CONV_IMPLS = ("auto", "xla", "fast")
_UP_TAPS = {"transpose": (((0,), (2,)), ((1,), (3,))),
            "resize": (((0,), (1, 2)), ((0, 1), (2,)))}
UPSAMPLE_KERNEL = {"transpose": 4, "resize": 3}


def resolve_impl(impl: str) -> str:
    """``auto`` -> ``fast`` on CPU, ``xla`` on other backends."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"--conv_impl={impl!r}: expected one of {', '.join(CONV_IMPLS)}")
    if impl == "auto":
        return "fast" if jax.default_backend() == "cpu" else "xla"
    return impl


def _tap_matrix(mode: str) -> np.ndarray:
    """``(phase, tap, kernel row)`` 0/1 matrix of ``_UP_TAPS[mode]``."""
    m = np.zeros((2, 2, UPSAMPLE_KERNEL[mode]), np.float32)
    for p, taps in enumerate(_UP_TAPS[mode]):
        for t, rows in enumerate(taps):
            m[p, t, list(rows)] = 1.0
    return m


def phase_kernel(kernel: jax.Array, mode: str) -> jax.Array:
    """Upsampling kernel ``(k, k, Cin, Cout)`` -> ``(2, 2, Cin, 2, 2, Cout)``: the 2x2 kernel
    (tap row, tap column, Cin) of each output phase (row phase, column phase, Cout)."""
    if mode == "transpose":  # tap t of phase p is kernel row 2t + p: a pure reshuffle
        k = kernel.reshape(2, 2, 2, 2, *kernel.shape[2:])  # (a, r, b, c, Cin, Cout)
        return k.transpose(0, 2, 4, 1, 3, 5)
    m = jnp.asarray(_tap_matrix(mode), kernel.dtype)
    return jnp.einsum("rau,cbv,uvio->abirco", m, m, kernel)


def _conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _interleave(y):
    """``(B, H, 2, W, 2, C)`` (row phase at axis 2, column phase at axis 4) -> ``(B, 2H, 2W, C)``."""
    b, h, _, w, _, c = y.shape
    return y.reshape(b, 2 * h, 2 * w, c)


def _patches(x):
    """2x2 patches of ``x`` zero-padded by 1: ``(B, H+1, W+1, 2, 2, Cin)``."""
    b, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.stack([jnp.stack([xp[:, a:a + h + 1, c:c + w + 1] for c in (0, 1)], 3)
                      for a in (0, 1)], 3)


# Inputs with at most this many positions (H x W) take one matmul over 2x2 patches instead of
# four 2x2 convs: XLA:CPU runs small-image, many-channel 2x2 convs at a fraction of its matmul
# rate (paper decoder, 2x4 and 4x8 inputs with 1024 channels: 2.2-2.7x faster as a matmul),
# while large images are faster as convs (measured 2026-12-01, docs/design.md).
MATMUL_MAX_POSITIONS = 256


@jax.custom_vjp
def _phase_upsample(x, kp):
    """Phase (r, c) of the output at input position q is the 2x2 patch at q + (r, c) of the
    zero-padded input times ``kp[..., r, c, :]``: four 2x2 convs (input padded by (1-r, r) rows,
    (1-c, c) columns), or for small inputs one matmul over all patches."""
    b, h, w, _ = x.shape
    if h * w <= MATMUL_MAX_POSITIONS:
        y = jnp.einsum("nhwabi,abirco->nhwrco", _patches(x), kp)  # (B, H+1, W+1, 2, 2, Cout)
        rows = [jnp.stack([y[:, r:r + h, c:c + w, r, c] for c in (0, 1)], 3) for r in (0, 1)]
    else:
        rows = [jnp.stack([_conv(x, kp[:, :, :, r, c], (1, 1), ((1 - r, r), (1 - c, c)))
                           for c in (0, 1)], 3) for r in (0, 1)]
    return _interleave(jnp.stack(rows, 2))


def _phase_upsample_fwd(x, kp):
    return _phase_upsample(x, kp), (x, kp)


def _phase_upsample_bwd(res, dy):
    # Phase (r, c) of the output at low-res position q is patch q + (r, c) of the padded input
    # times kp[..., r, c, :]. Scatter each phase's gradient to its patch position, then the
    # gradients are matmuls against the 2x2 patches.
    x, kp = res
    b, h, w, cin = x.shape
    cout = kp.shape[-1]
    dy = dy.reshape(b, h, 2, w, 2, cout)
    dyp = jnp.stack([jnp.stack([jnp.pad(dy[:, :, r, :, c], ((0, 0), (r, 1 - r), (c, 1 - c), (0, 0)))
                                for c in (0, 1)], 3) for r in (0, 1)], 3)  # (B, H+1, W+1, 2, 2, Cout)
    dkp = jnp.einsum("nhwabi,nhwrco->abirco", _patches(x), dyp)
    dp = jnp.einsum("nhwrco,abirco->nhwabi", dyp, kp)                    # (B, H+1, W+1, 2, 2, Cin)
    dx = sum(jnp.pad(dp[:, :, :, a, c], ((0, 0), (a, 1 - a), (c, 1 - c), (0, 0)))
             for a in (0, 1) for c in (0, 1))[:, 1:h + 1, 1:w + 1]
    return dx, dkp


_phase_upsample.defvjp(_phase_upsample_fwd, _phase_upsample_bwd)


def upsample2x(x: jax.Array, kernel: jax.Array, mode: str, impl: str = "xla") -> jax.Array:
    """2x upsampling conv, ``x (B, H, W, Cin)`` -> ``(B, 2H, 2W, Cout)``, no bias.

    ``mode="transpose"``: 4x4 stride-2 transposed conv with 'SAME' padding (flax
    ``nn.ConvTranspose(padding='SAME')``, kernel ``(4, 4, Cin, Cout)``), pix2pix's upsampling.
    ``mode="resize"``: nearest-neighbour 2x resize then a 3x3 conv with zero padding 1 (kernel
    ``(3, 3, Cin, Cout)``), which has no checkerboard artefacts (Odena et al., 2016).
    ``impl="xla"`` runs those ops literally; ``"fast"`` the phase form (same function)."""
    if resolve_impl(impl) == "xla":
        if mode == "transpose":
            return lax.conv_transpose(x, kernel, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _conv(x, kernel, (1, 1), ((1, 1), (1, 1)))
    return _phase_upsample(x, phase_kernel(kernel, mode))


class Upsample2x(nn.Module):
    """2x upsampling conv (``upsample2x``); params ``kernel (k, k, Cin, Cout)`` (k = 4 for
    ``transpose``, the same as flax ``nn.ConvTranspose``; 3 for ``resize``) and ``bias``."""
    features: int
    mode: str = "transpose"
    use_bias: bool = True
    impl: str = "auto"
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        k = UPSAMPLE_KERNEL[self.mode]
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        y = upsample2x(x.astype(self.dtype), kernel.astype(self.dtype), self.mode, self.impl)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(self.dtype)
        return y


class Generator(nn.Module):
    """pix2pix U-Net. ``(B, H, W, 2)`` [IR, visible] -> ``(B, H, W, 1)`` fused, in [0, 1].

    Encoder level l (1..num_downs): 4x4 stride-2 conv with ``min(ngf * 2**(l-1), 8*ngf)``
    features, LeakyReLU(0.2) before it (except level 1), norm after it (except levels 1 and
    num_downs). The decoder mirrors it with ReLU, ``Upsample2x`` and norm, concatenating the
    encoder feature of the same level (skip connection). Dropout of pix2pix is not used.
    Convs followed by BatchNorm have no bias (as pix2pix).

    ``input_skip=True`` (not in pix2pix or the paper): the outermost upsampling gives ``ngf``
    features instead of the output; after ReLU they are concatenated with the (padded) input
    ``[IR, visible]`` and a 3x3 conv (zero padding 1, bias) gives the output. This is the only
    full-resolution skip, so source pixels reach the output without passing a stride-2 conv.

    ``output="residual_average"`` (not in the paper): the last layer, named ``residual`` and
    initialised to zero, gives a correction ``r`` in logit space of the pixel average ``a`` of the
    two inputs, ``out = sigmoid(logit(clip(a, 1/512, 1 - 1/512)) + r)``. At initialisation the
    generator is Average fusion (to 1/512); training learns what to change. ``"direct"`` (the
    paper) is ``out = sigmoid(r)``.
    """
    num_downs: int = 8
    ngf: int = 64
    norm: str = "batch"
    upsample: str = "transpose"   # decoder upsampling: transpose (pix2pix) | resize (nearest + 3x3)
    input_skip: bool = False      # full-resolution skip of the input into a final 3x3 conv
    output: str = "direct"        # direct (paper) | residual_average (correction of the average)
    impl: str = "auto"            # conv formulation (CONV_IMPLS); not part of the architecture
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = make_norm(self.norm, train, self.axis_name, self.dtype)
        bias = self.norm != "batch"  # a bias before BatchNorm has no effect (as pix2pix)
        h, w = x.shape[1:3]
        m = 2 ** self.num_downs
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
        inputs = x

        feats = [min(self.ngf * 2 ** i, 8 * self.ngf) for i in range(self.num_downs)]
        conv = functools.partial(nn.Conv, kernel_size=(4, 4), strides=(2, 2),
                                 padding=((1, 1), (1, 1)), dtype=self.dtype)
        skips = []
        for level, f in enumerate(feats):
            if level > 0:
                x = nn.leaky_relu(x, 0.2)
            normed = 0 < level < self.num_downs - 1
            x = conv(f, use_bias=bias or not normed)(x)
            if normed:
                x = norm()(x)
            skips.append(x)
        residual = self.output == "residual_average"
        last = (dict(name="residual", kernel_init=nn.initializers.zeros_init()) if residual else {})
        for level in reversed(range(self.num_downs)):
            if level < self.num_downs - 1:
                x = jnp.concatenate([skips[level], x], axis=-1)
            x = nn.relu(x)
            out_features = feats[level - 1] if level > 0 else (self.ngf if self.input_skip else 1)
            final = level == 0 and not self.input_skip
            x = Upsample2x(out_features, mode=self.upsample, use_bias=bias or level == 0,
                           impl=self.impl, dtype=self.dtype, **(last if final else {}))(x)
            if level > 0:
                x = norm()(x)
        if self.input_skip:
            x = jnp.concatenate([nn.relu(x), inputs.astype(x.dtype)], axis=-1)
            x = nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, **last)(x)
        x = x.astype(jnp.float32)
        if residual:
            average = jnp.clip(inputs.astype(jnp.float32).mean(axis=-1, keepdims=True),
                               1 / 512, 1 - 1 / 512)
            x = x + jnp.log(average) - jnp.log1p(-average)
        x = nn.sigmoid(x)
        return x[:, :h, :w, :]


class Discriminator(nn.Module):
    """PatchGAN. ``(B, H, W, 1)`` in [0, 1] -> ``(B, h, w)`` scores (LSGAN targets 1 real, 0 fake).

    Conv l uses ``layers[l] = (kernel, stride)`` and ``min(ndf * 2**l, 8*ndf)`` features
    (1 for the last), zero padding ``conv_padding(kernel)``, LeakyReLU(0.2) after every conv but
    the last and norm after every conv but the first and the last (pix2pix NLayerDiscriminator).
    """
    layers: tuple[tuple[int, int], ...] = DISCRIMINATOR_PRESETS["pix2pix70"]
    ndf: int = 64
    norm: str = "batch"
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = make_norm(self.norm, train, self.axis_name, self.dtype)
        x = x * 2.0 - 1.0  # centre the input like pix2pix's [-1, 1] images
        n = len(self.layers)
        for i, (k, s) in enumerate(self.layers):
            last = i == n - 1
            normed = 0 < i < n - 1
            p = conv_padding(k)
            x = nn.Conv(1 if last else min(self.ndf * 2 ** i, 8 * self.ndf), (k, k), strides=(s, s),
                        padding=((p, p), (p, p)),
                        use_bias=not (normed and self.norm == "batch"), dtype=self.dtype)(x)
            if not last:
                if normed:
                    x = norm()(x)
                x = nn.leaky_relu(x, 0.2)
        return x[..., 0].astype(jnp.float32)
