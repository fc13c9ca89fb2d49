"""The IR weight map W of the paper (Section 3, "weight map"; used in Eq. 2 and Eq. 7).

W has exactly the shape of D_ir's output ``(B, h, w)``. Cell (i, j) pools the IR pixels under
that cell's patch, i.e. rows ``[i*stride - padding, i*stride - padding + size)`` (same for
columns) of ``models.receptive_field(layers)``, clipped to the image:

* ``avg`` (default, paper): mean of the IR pixels inside the image (zero padding not counted);
* ``max``: max of those pixels (paper Table 5);
* ``none``: all ones (the plain dual-PatchGAN baseline).

Scaling (``scale``): ``raw`` keeps pooled intensities in [0, 1] (the paper's description: bright,
warm regions weigh more, dark background less); ``mean1`` divides each image's W by its mean
so the weighted losses keep the scale of the unweighted ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from patchfuse_jax.nn.models import PatchGeometry

POOLINGS = ("avg", "max", "none")
SCALES = ("raw", "mean1")


def _pool_padding(n_in: int, n_out: int, geom: PatchGeometry) -> tuple[int, int]:
    lo = geom.padding
    hi = (n_out - 1) * geom.stride - geom.padding + geom.size - n_in
    return lo, hi


def _pixel_count(n_in: int, n_out: int, geom: PatchGeometry) -> np.ndarray:
    """Pixels of the image under each cell's patch along one axis (static, numpy)."""
    start = np.arange(n_out) * geom.stride - geom.padding
    return (np.minimum(start + geom.size, n_in) - np.maximum(start, 0)).astype(np.float32)


def ir_weight_map(
    ir: jax.Array, out_hw: tuple[int, int], geom: PatchGeometry, pooling: str = "avg", scale: str = "raw"
) -> jax.Array:
    """``ir (B, H, W, 1)`` in [0, 1] -> ``W (B, h, w)``, ``(h, w) = out_hw`` of D_ir.

    Pooling is separable (rows, then columns), so each cell costs ``2 * size`` operations."""
    if pooling not in POOLINGS:
        raise ValueError(f"--weight_pooling={pooling!r}: expected one of {POOLINGS}")
    if scale not in SCALES:
        raise ValueError(f"--weight_scale={scale!r}: expected one of {SCALES}")
    b = ir.shape[0]
    if pooling == "none":
        return jnp.ones((b, *out_hw), jnp.float32)
    x = ir[..., 0].astype(jnp.float32)
    init, op = (-jnp.inf, lax.max) if pooling == "max" else (0.0, lax.add)
    for axis, n_out in ((1, out_hw[0]), (2, out_hw[1])):
        lo, hi = _pool_padding(x.shape[axis], n_out, geom)
        if hi < 0:  # the last patch ends before the image does: drop the unseen pixels
            x = lax.slice_in_dim(x, 0, x.shape[axis] + hi, axis=axis)
            hi = 0
        window, strides, padding = [1, 1, 1], [1, 1, 1], [(0, 0)] * 3
        window[axis], strides[axis], padding[axis] = geom.size, geom.stride, (lo, hi)
        x = lax.reduce_window(x, init, op, window, strides, padding)
    if pooling == "avg":
        count = np.outer(_pixel_count(ir.shape[1], out_hw[0], geom), _pixel_count(ir.shape[2], out_hw[1], geom))
        x = x / count
    assert x.shape[1:] == tuple(out_hw), (x.shape, out_hw)
    if scale == "mean1":
        x = x / (jnp.mean(x, axis=(1, 2), keepdims=True) + 1e-6)
    return lax.stop_gradient(x)


def pixel_weight_map(ir: jax.Array, size: int) -> jax.Array:
    """The paper's W carried to every pixel, for the W-weighted intensity term (not in the paper;
    ``--ir_intensity_weight``, docs/design.md): ``ir (B, H, W, 1)`` in [0, 1] -> ``(B, H, W, 1)``
    in [0, 1].

    Each pixel takes the mean IR intensity of the ``size x size`` window centred on it (the
    average pooling of D_ir's patches, at stride 1; pixels outside the image not counted), then
    is stretched per image to its *relative warmth*
    ``clip((p - mean(p)) / (max(p) - mean(p)), 0, 1)``: 0 for patches no warmer than the image's
    mean, 1 at its warmest patch. The raw pooled intensity is not selective (RoadScene's IR is
    mid-grey almost everywhere); the stretch keeps W's ordering and puts its weight on the warm
    targets the paper has W emphasise."""
    x = ir.astype(jnp.float32)
    lo, hi = (size - 1) // 2, size // 2
    window, pad = (1, size, size, 1), ((0, 0), (lo, hi), (lo, hi), (0, 0))
    total = lax.reduce_window(x, 0.0, lax.add, window, (1, 1, 1, 1), pad)
    # Pixels inside the image per window: static, so numpy (XLA would constant-fold it slowly).
    rows, cols = (np.minimum(np.arange(n) + hi, n - 1) - np.maximum(np.arange(n) - lo, 0) + 1 for n in x.shape[1:3])
    p = total / np.outer(rows, cols).astype(np.float32)[None, :, :, None]
    mean = jnp.mean(p, axis=(1, 2, 3), keepdims=True)
    top = jnp.max(p, axis=(1, 2, 3), keepdims=True)
    return lax.stop_gradient(jnp.clip((p - mean) / jnp.maximum(top - mean, 1e-6), 0.0, 1.0))
