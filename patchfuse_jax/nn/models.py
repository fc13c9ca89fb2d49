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

from patchfuse_jax.nn.convs import UPSAMPLE_KERNEL, conv2d, upsample2x

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
            "or a list like '4s2,4s2,4s2,4s1,4s1'"
        ) from None
    if len(layers) < 2 or any(k < 1 or s < 1 for k, s in layers):
        raise ValueError(f"--d_arch={spec!r}: needs at least 2 convs with positive kernel and stride")
    return tuple(layers)


class PatchGeometry(NamedTuple):
    """Input region of output cell i (per axis): ``[i*stride - padding, i*stride - padding + size)``."""

    size: int  # receptive field (patch side, pixels)
    stride: int  # distance between neighbouring cells' patches
    padding: int  # how far the first patch starts before pixel 0


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
        return functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name, dtype=dtype
        )
    if norm == "instance":
        return functools.partial(nn.InstanceNorm, epsilon=1e-5, dtype=dtype)
    raise ValueError(f"--norm={norm!r}: expected 'batch' or 'instance'")


class _ConvLayer(nn.Module):
    """Shared fields and body of ``Conv`` and ``Upsample2x``: creates ``kernel (k, k, Cin,
    features)`` and ``bias`` as flax's conv modules do (same names and initialisers) and applies
    the conv ``op``. Subclasses are called with keyword arguments after ``features``."""

    features: int
    use_bias: bool = True
    impl: str = "auto"
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()

    def _apply(self, x, k: int, op: Callable) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        y = op(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,)).astype(self.dtype)
        return y


class Conv(_ConvLayer):
    """Conv with zero padding ``padding`` on every side (``convs.conv2d``); params ``kernel
    (k, k, Cin, Cout)`` and ``bias``, initialised and named as flax ``nn.Conv``'s."""

    kernel_size: int = 3
    strides: int = 1
    padding: int = 0

    @nn.compact
    def __call__(self, x):
        return self._apply(x, self.kernel_size, lambda x, k: conv2d(x, k, self.strides, self.padding, self.impl))


class Upsample2x(_ConvLayer):
    """2x upsampling conv (``upsample2x``); params ``kernel (k, k, Cin, Cout)`` (k = 4 for
    ``transpose``, the same as flax ``nn.ConvTranspose``; 3 for ``resize``) and ``bias``."""

    mode: str = "transpose"

    @nn.compact
    def __call__(self, x):
        return self._apply(x, UPSAMPLE_KERNEL[self.mode], lambda x, k: upsample2x(x, k, self.mode, self.impl))


class _Network(nn.Module):
    """Fields of both networks that are not their architecture: the conv formulation ``impl``
    (``convs.CONV_IMPLS``; every choice computes the same function), the pmap axis of BatchNorm's
    cross-device statistics, and the compute dtype. Set them by keyword."""

    impl: str = "auto"
    axis_name: str | None = None
    dtype: Any = jnp.float32


class Generator(_Network):
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
    upsample: str = "transpose"  # decoder upsampling: transpose (pix2pix) | resize (nearest + 3x3)
    input_skip: bool = False  # full-resolution skip of the input into a final 3x3 conv
    output: str = "direct"  # direct (paper) | residual_average (correction of the average)

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = make_norm(self.norm, train, self.axis_name, self.dtype)
        bias = self.norm != "batch"  # a bias before BatchNorm has no effect (as pix2pix)
        h, w = x.shape[1:3]
        m = 2**self.num_downs
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
        inputs = x

        feats = [min(self.ngf * 2**i, 8 * self.ngf) for i in range(self.num_downs)]
        conv = functools.partial(Conv, kernel_size=4, strides=2, padding=1, impl=self.impl, dtype=self.dtype)
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
        last = dict(name="residual", kernel_init=nn.initializers.zeros_init()) if residual else {}
        for level in reversed(range(self.num_downs)):
            if level < self.num_downs - 1:
                x = jnp.concatenate([skips[level], x], axis=-1)
            x = nn.relu(x)
            out_features = feats[level - 1] if level > 0 else (self.ngf if self.input_skip else 1)
            final = level == 0 and not self.input_skip
            x = Upsample2x(
                out_features,
                mode=self.upsample,
                use_bias=bias or level == 0,
                impl=self.impl,
                dtype=self.dtype,
                **(last if final else {}),
            )(x)
            if level > 0:
                x = norm()(x)
        if self.input_skip:
            x = jnp.concatenate([nn.relu(x), inputs.astype(x.dtype)], axis=-1)
            x = Conv(1, kernel_size=3, padding=1, impl=self.impl, dtype=self.dtype, **last)(x)
        x = x.astype(jnp.float32)
        if residual:
            average = jnp.clip(inputs.astype(jnp.float32).mean(axis=-1, keepdims=True), 1 / 512, 1 - 1 / 512)
            x = x + jnp.log(average) - jnp.log1p(-average)
        x = nn.sigmoid(x)
        return x[:, :h, :w, :]


class Discriminator(_Network):
    """PatchGAN. ``(B, H, W, 1)`` in [0, 1] -> ``(B, h, w)`` scores (LSGAN targets 1 real, 0 fake).

    Conv l uses ``layers[l] = (kernel, stride)`` and ``min(ndf * 2**l, 8*ndf)`` features
    (1 for the last), zero padding ``conv_padding(kernel)``, LeakyReLU(0.2) after every conv but
    the last and norm after every conv but the first and the last (pix2pix NLayerDiscriminator).
    """

    layers: tuple[tuple[int, int], ...] = DISCRIMINATOR_PRESETS["pix2pix70"]
    ndf: int = 64
    norm: str = "batch"

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = make_norm(self.norm, train, self.axis_name, self.dtype)
        x = x * 2.0 - 1.0  # centre the input like pix2pix's [-1, 1] images
        n = len(self.layers)
        for i, (k, s) in enumerate(self.layers):
            last = i == n - 1
            normed = 0 < i < n - 1
            x = Conv(
                1 if last else min(self.ndf * 2**i, 8 * self.ndf),
                kernel_size=k,
                strides=s,
                padding=conv_padding(k),
                use_bias=not (normed and self.norm == "batch"),
                impl=self.impl,
                dtype=self.dtype,
            )(x)
            if not last:
                if normed:
                    x = norm()(x)
                x = nn.leaky_relu(x, 0.2)
        return x[..., 0].astype(jnp.float32)
