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
import numpy as np
import jax.numpy as jnp
from jax import lax

from patchfuse_jax.models import PatchGeometry

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


def ir_weight_map(ir: jax.Array, out_hw: tuple[int, int], geom: PatchGeometry,
                  pooling: str = "avg", scale: str = "raw") -> jax.Array:
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
        count = np.outer(_pixel_count(ir.shape[1], out_hw[0], geom),
                         _pixel_count(ir.shape[2], out_hw[1], geom))
        x = x / count
    assert x.shape[1:] == tuple(out_hw), (x.shape, out_hw)
    if scale == "mean1":
        x = x / (jnp.mean(x, axis=(1, 2), keepdims=True) + 1e-6)
    return lax.stop_gradient(x)
