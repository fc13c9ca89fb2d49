"""Classical IR + visible fusion baselines, so result tables have references without other repos.

Every baseline is ``fn(ir, vis) -> fused`` on gray ``float64 (H, W)`` arrays in [0, 1] and returns
``float64 (H, W)`` in [0, 1] (clipped).

* ``average``: ``(ir + vis) / 2``.
* ``maximum``: pixel-wise ``max(ir, vis)``.
* ``laplacian_pyramid``: Burt & Adelson (1983) Laplacian pyramid; detail levels by max-abs
  selection, base (coarsest Gaussian level) by averaging.
* ``guided_filter_fusion``: GFF of Li, Kang & Hu, "Image fusion with guided filtering",
  IEEE TIP 22(7), 2013, with the paper's parameters (r1=45, eps1=0.3, r2=7, eps2=1e-6).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Burt-Adelson 5-tap generating kernel with a = 0.4: [1/4 - a/2, 1/4, a, 1/4, 1/4 - a/2].
_BA_KERNEL = np.array([0.05, 0.25, 0.4, 0.25, 0.05])


def _check(ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ir = np.asarray(ir, dtype=np.float64)
    vis = np.asarray(vis, dtype=np.float64)
    if ir.ndim != 2 or ir.shape != vis.shape:
        raise ValueError(f"baselines need two gray (H, W) images of one size, got {ir.shape} and {vis.shape}")
    return ir, vis


def average(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Mean of the two sources, ``(H, W)`` float64 in [0, 1]."""
    ir, vis = _check(ir, vis)
    return np.clip((ir + vis) / 2.0, 0.0, 1.0)


def maximum(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Pixel-wise maximum of the two sources, ``(H, W)`` float64 in [0, 1]."""
    ir, vis = _check(ir, vis)
    return np.clip(np.maximum(ir, vis), 0.0, 1.0)


# ----------------------------------------------------------------------------- Laplacian pyramid
def _blur(x: np.ndarray, k: np.ndarray, mode: str = "mirror") -> np.ndarray:
    """Separable correlation with the 1-D kernel ``k`` along both axes."""
    x = ndimage.correlate1d(x, k, axis=0, mode=mode)
    return ndimage.correlate1d(x, k, axis=1, mode=mode)


def _reduce(g: np.ndarray) -> np.ndarray:
    """Blur with the 5-tap kernel, keep every second pixel: (H, W) -> (ceil(H/2), ceil(W/2))."""
    return _blur(g, _BA_KERNEL)[::2, ::2]


def _expand(g: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-insertion upsampling to ``shape``, then blur with 2x the kernel (interpolation)."""
    up = np.zeros(shape, dtype=np.float64)
    up[::2, ::2] = g
    return _blur(up, 2.0 * _BA_KERNEL)


def laplacian_pyramid_decompose(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` detail (Laplacian) levels, finest first, followed by the Gaussian base."""
    pyr, g = [], np.asarray(img, dtype=np.float64)
    for _ in range(levels):
        small = _reduce(g)
        pyr.append(g - _expand(small, g.shape))
        g = small
    pyr.append(g)
    return pyr


def laplacian_pyramid_reconstruct(pyr: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`laplacian_pyramid_decompose` (exact up to float rounding)."""
    g = pyr[-1]
    for lap in reversed(pyr[:-1]):
        g = lap + _expand(g, lap.shape)
    return g


def max_levels(shape: tuple[int, int], min_size: int = 8) -> int:
    """Most levels whose base is still at least ``min_size`` pixels on its short side."""
    n, side = 0, min(shape)
    while -(-side // 2) >= min_size:
        side = -(-side // 2)
        n += 1
    return n


def laplacian_pyramid(ir: np.ndarray, vis: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion, ``(H, W)`` float64 in [0, 1].

    ``levels`` detail levels (default 4: the base is 1/16 of the size per side), reduced where
    needed so that the base keeps at least 8 pixels on its short side. Detail coefficients: the
    one of larger magnitude (IR on ties); base: the mean of the two bases.
    """
    ir, vis = _check(ir, vis)
    levels = max(0, min(int(levels), max_levels(ir.shape)))
    pa = laplacian_pyramid_decompose(ir, levels)
    pb = laplacian_pyramid_decompose(vis, levels)
    fused = [np.where(np.abs(a) >= np.abs(b), a, b) for a, b in zip(pa[:-1], pb[:-1])]
    fused.append((pa[-1] + pb[-1]) / 2.0)
    return np.clip(laplacian_pyramid_reconstruct(fused), 0.0, 1.0)


# ----------------------------------------------------------------------------- guided filter / GFF
def _counts(n: int, r: int) -> np.ndarray:
    i = np.arange(n)
    return (np.minimum(i + r, n - 1) - np.maximum(i - r, 0) + 1).astype(np.float64)


def box_sum(x: np.ndarray, r: int) -> np.ndarray:
    """Sum over the ``(2r+1) x (2r+1)`` window around each pixel, truncated at the borders.

    As He et al.'s ``boxfilter.m`` (zero outside the image); ``(H, W)`` -> ``(H, W)``.
    """
    size = 2 * r + 1
    return ndimage.uniform_filter(np.asarray(x, dtype=np.float64), size, mode="constant") * size * size


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Gray guided filter of He, Sun & Tang (ECCV 2010 / TPAMI 2013), ``(H, W)`` -> ``(H, W)``.

    Window ``(2r+1)^2`` truncated at the borders (means over the pixels inside), regulariser ``eps``.
    """
    I = np.asarray(guide, dtype=np.float64)
    p = np.asarray(src, dtype=np.float64)
    n = np.outer(_counts(I.shape[0], r), _counts(I.shape[1], r))

    def mean(x):
        return box_sum(x, r) / n

    mean_i, mean_p = mean(I), mean(p)
    cov_ip = mean(I * p) - mean_i * mean_p
    var_i = mean(I * I) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a) * I + mean(b)


def _gaussian_kernel(r: int, sigma: float) -> np.ndarray:
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


_LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])  # fspecial('laplacian', 0)


def gff_saliency(img: np.ndarray, r: int = 5, sigma: float = 5.0) -> np.ndarray:
    """GFF saliency ``|Laplacian(img)|`` low-passed by a ``(2r+1)^2`` Gaussian of std ``sigma``."""
    h = np.abs(ndimage.correlate(img, _LAPLACIAN, mode="nearest"))
    k = _gaussian_kernel(r, sigma)
    return _blur(h, k, mode="nearest")


def guided_filter_fusion(
    ir: np.ndarray,
    vis: np.ndarray,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
    avg_size: int = 31,
) -> np.ndarray:
    """GFF (Li, Kang & Hu 2013), ``(H, W)`` float64 in [0, 1].

    Base = ``avg_size``^2 mean filter (replicated borders), detail = image - base; saliency =
    Gaussian-smoothed |Laplacian| (r=5, sigma=5); binary weight maps mark the most salient source
    (all tied sources); weights refined by guided filtering with the source as guide, (r1, eps1)
    for the base and (r2, eps2) for the detail, normalised to sum to one; fused = sum of
    weighted bases + sum of weighted details.
    """
    ir, vis = _check(ir, vis)
    srcs = (ir, vis)
    bases = [ndimage.uniform_filter(s, size=avg_size, mode="nearest") for s in srcs]
    details = [s - b for s, b in zip(srcs, bases)]
    sal = np.stack([gff_saliency(s) for s in srcs])
    p = (sal == sal.max(axis=0, keepdims=True)).astype(np.float64)
    wb = np.stack([guided_filter(s, pk, r1, eps1) for s, pk in zip(srcs, p)])
    wd = np.stack([guided_filter(s, pk, r2, eps2) for s, pk in zip(srcs, p)])
    wb, wd = _normalise(wb), _normalise(wd)
    fused = sum(w * b for w, b in zip(wb, bases)) + sum(w * d for w, d in zip(wd, details))
    return np.clip(fused, 0.0, 1.0)


def _normalise(w: np.ndarray) -> np.ndarray:
    """Weights ``(N, H, W)`` scaled to sum to 1 per pixel; equal weights where the sum vanishes."""
    s = w.sum(axis=0, keepdims=True)
    ok = np.abs(s) > 1e-12
    return np.where(ok, w / np.where(ok, s, 1.0), 1.0 / w.shape[0])


BASELINES = {
    "Average": average,
    "Max": maximum,
    "LP": laplacian_pyramid,
    "GFF": guided_filter_fusion,
}
