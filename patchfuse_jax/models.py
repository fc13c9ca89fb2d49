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


def make_norm(norm: str, train: bool, axis_name: str | None) -> Callable[..., nn.Module]:
    """BatchNorm (running stats in ``batch_stats``; synced over ``axis_name``) or InstanceNorm."""
    if norm == "batch":
        # PyTorch defaults (momentum 0.1 == flax momentum 0.9, eps 1e-5), as in pix2pix.
        return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5, axis_name=axis_name)
    if norm == "instance":
        return functools.partial(nn.InstanceNorm, epsilon=1e-5)
    raise ValueError(f"--norm={norm!r}: expected 'batch' or 'instance'")


# Sub-pixel form of a 4x4 stride-2 'SAME' transposed conv. Along one axis the transposed conv
# gives y[2q] = k[0] x[q-1] + k[2] x[q] and y[2q+1] = k[1] x[q] + k[3] x[q+1], i.e. a 3-tap
# correlation over x[q-1..q+1] per output phase: _PHASE_TAPS[phase][tap] = kernel index or -1.
_PHASE_TAPS = ((0, 2, -1), (-1, 1, 3))


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
    """``(4, 4, Cin, Cout)`` transposed-conv kernel -> ``(3, 3, Cin, 4*Cout)`` conv kernel whose
    output channels are ordered (row phase, column phase, Cout)."""
    cin, cout = kernel.shape[2:]
    padded = jnp.concatenate([kernel, jnp.zeros((1, 4, cin, cout), kernel.dtype)], 0)
    padded = jnp.concatenate([padded, jnp.zeros((5, 1, cin, cout), kernel.dtype)], 1)  # index -1 -> 0
    idx = np.asarray(_PHASE_TAPS)  # (phase, tap)
    k = padded[idx[:, None, :, None], idx[None, :, None, :]]  # (r, c, a, b, Cin, Cout)
    return k.transpose(2, 3, 4, 0, 1, 5).reshape(3, 3, cin, 4 * cout)


class Upsample2x(nn.Module):
    """4x4 stride-2 transposed conv (flax ``nn.ConvTranspose(..., padding='SAME')``, same
    parameters ``kernel (4, 4, Cin, Cout)`` and ``bias``): doubles H and W.

    Computed as a 3x3 conv with 4*Cout outputs followed by depth-to-space, which is the same
    function (tested) and much faster under XLA:CPU than the dilated-input transposed conv."""
    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, self.features))
        y = lax.conv_general_dilated(x.astype(self.dtype), subpixel_kernel(kernel).astype(self.dtype),
                                     (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        b, h, w, _ = y.shape
        y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(b, 2 * h, 2 * w, self.features)
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
    """
    num_downs: int = 8
    ngf: int = 64
    norm: str = "batch"
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = make_norm(self.norm, train, self.axis_name)
        bias = self.norm != "batch"  # a bias before BatchNorm has no effect (as pix2pix)
        h, w = x.shape[1:3]
        m = 2 ** self.num_downs
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")

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
        for level in reversed(range(self.num_downs)):
            if level < self.num_downs - 1:
                x = jnp.concatenate([skips[level], x], axis=-1)
            x = nn.relu(x)
            out_features = feats[level - 1] if level > 0 else 1
            x = Upsample2x(out_features, use_bias=bias or level == 0, dtype=self.dtype)(x)
            if level > 0:
                x = norm()(x)
        x = nn.sigmoid(x.astype(jnp.float32))
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
        norm = make_norm(self.norm, train, self.axis_name)
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
