"""Paired significance tests and the weight map's own effect (issue 21), plain numpy.

* :func:`sign_test`: two-sided exact binomial sign test of paired differences (zeros dropped).
* :func:`bootstrap_ci`: percentile bootstrap interval of the mean paired difference, resampling
  whole clusters (e.g. test images, each with its seeds' differences) with a fixed seed.
* :func:`paired`: both, for the differences of two runs' per-image values matched by
  ``(seed, image)``.
* :func:`weight_effect`: on the pixels where the paper's W is in its top 10 %, the fused image's
  mean intensity and mean local contrast relative to the IR image's.
* :func:`verdict`: a claim's verdict from its per-metric comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from patchfuse_jax.eval.metrics.target import box_mean, local_contrast

ALPHA = 0.05
N_BOOT = 10000
BOOT_SEED = 0
TOP = 0.10  # W's top fraction of pixels: the warm region
CONTRAST_WINDOW = 7  # local contrast: standard deviation over 7x7 windows (as --contrast_window)


# ----------------------------------------------------------------------------- tests
def sign_test(diffs) -> float:
    """Two-sided exact sign-test p-value of the differences ``diffs`` (any shape; zeros and NaN
    dropped): ``min(1, 2 P(Binomial(n, 1/2) <= min(n+, n-)))``; 1.0 when nothing is left."""
    d = np.asarray(diffs, np.float64).ravel()
    d = d[np.isfinite(d) & (d != 0)]
    n = int(d.size)
    if n == 0:
        return 1.0
    k = int(min((d > 0).sum(), (d < 0).sum()))
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


def bootstrap_ci(
    diffs, clusters=None, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of the mean of ``diffs`` (1-D). ``clusters``
    (same length; e.g. the test image of each difference): whole clusters are resampled with
    replacement, so differences that share an image are not counted as independent; None: each
    difference is its own cluster. NaN differences are dropped; ``(nan, nan)`` when none is left."""
    d = np.asarray(diffs, np.float64).ravel()
    c = np.arange(d.size) if clusters is None else np.asarray(clusters).ravel()
    if c.shape != d.shape:
        raise ValueError(f"bootstrap_ci: {d.size} differences but {c.size} cluster labels")
    ok = np.isfinite(d)
    d, c = d[ok], c[ok]
    if d.size == 0:
        return math.nan, math.nan
    _, idx = np.unique(c, return_inverse=True)
    sums, counts = np.bincount(idx, weights=d), np.bincount(idx).astype(np.float64)
    g = sums.size
    pick = np.random.default_rng(seed).integers(0, g, size=(n_boot, g))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def paired(a: dict, b: dict, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict:
    """Paired comparison of ``a`` and ``b``: ``{(seed, image): value}`` each; keys in both are
    paired (image i of seed s of A with image i of seed s of B), differences ``a - b``.

    Returns ``{n, mean_diff, n_pos, n_neg, p_sign, ci}``; the bootstrap resamples images (each
    with all its seeds' differences)."""
    keys = sorted(
        k
        for k in set(a) & set(b)
        if a[k] is not None and b[k] is not None and math.isfinite(a[k]) and math.isfinite(b[k])
    )
    d = np.array([a[k] - b[k] for k in keys], np.float64)
    lo, hi = bootstrap_ci(d, [k[1] for k in keys], n_boot, seed) if keys else (math.nan, math.nan)
    return {
        "n": len(keys),
        "mean_diff": float(d.mean()) if keys else math.nan,
        "n_pos": int((d > 0).sum()),
        "n_neg": int((d < 0).sum()),
        "p_sign": sign_test(d),
        "ci": (lo, hi),
    }


def direction(cmp: dict, alpha: float = ALPHA) -> int:
    """+1 (A significantly higher), -1 (significantly lower) or 0: the sign test's p < ``alpha``
    and the bootstrap interval excludes 0 on the same side; 0 otherwise."""
    lo, hi = cmp["ci"]
    if cmp["n"] == 0 or not cmp["p_sign"] < alpha or not (math.isfinite(lo) and math.isfinite(hi)):
        return 0
    if cmp["n_pos"] > cmp["n_neg"] and lo > 0:
        return 1
    if cmp["n_neg"] > cmp["n_pos"] and hi < 0:
        return -1
    return 0


def verdict(directions) -> str:
    """``holds`` when A is significantly better (direction +1, all metrics higher-is-better) on a
    majority of the metrics, ``does not hold`` when significantly worse on a majority, ``cannot
    tell`` otherwise (no comparisons: ``no data``)."""
    d = list(directions)
    if not d:
        return "no data"
    if sum(x > 0 for x in d) > len(d) / 2:
        return "holds"
    if sum(x < 0 for x in d) > len(d) / 2:
        return "does not hold"
    return "cannot tell"


def pairs_needed(diffs) -> float:
    """Paired samples for 80 % power at two-sided 0.05 (normal approximation):
    ``(z_0.975 + z_0.8)^2 / (mean / sd)^2``; inf when the mean difference is 0, NaN for < 2."""
    d = np.asarray(diffs, np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    sd, mean = float(d.std(ddof=1)), float(abs(d.mean()))
    if mean == 0:
        return math.inf
    return float((1.959964 + 0.841621) ** 2 * (sd / mean) ** 2)


# ----------------------------------------------------------------------------- W's effect
def warm_mask(ir: np.ndarray, size: int, top: float = TOP) -> np.ndarray:
    """Boolean ``(H, W)``: the pixels whose W is at or above W's ``1 - top`` quantile. W at a pixel
    is the paper's weight: the mean IR intensity over the ``size x size`` patch centred on it
    (``size`` = D_ir's receptive field, 65 for paper65) — :func:`patchfuse_jax.train.weightmap.
    pixel_weight_map` before its per-image stretch, which keeps the order of the top pixels."""
    w = box_mean(ir, size)
    return w >= np.quantile(w, 1.0 - top)


def weight_effect(ir: np.ndarray, fused: np.ndarray, size: int, top: float = TOP) -> dict[str, float]:
    """``ir``, ``fused``: ``(H, W)`` in [0, 1] (or both 0..255). On the warm region
    (:func:`warm_mask`): ``intensity`` = mean fused / mean IR intensity there; ``contrast`` = mean
    7x7 local std of the fused image / of the IR image there. 1 = as in the IR image; NaN when
    the IR denominator is 0."""
    ir, fused = np.asarray(ir, np.float64), np.asarray(fused, np.float64)
    if ir.shape != fused.shape or ir.ndim != 2:
        raise ValueError(f"weight_effect: ir {ir.shape} and fused {fused.shape} must be equal (H, W)")
    m = warm_mask(ir, size, top)
    ii, ci = ir[m].mean(), local_contrast(ir, CONTRAST_WINDOW)[m].mean()
    return {
        "intensity": float(fused[m].mean() / ii) if ii > 0 else math.nan,
        "contrast": float(local_contrast(fused, CONTRAST_WINDOW)[m].mean() / ci) if ci > 0 else math.nan,
    }
