"""Warm-target contrast and visible texture kept: what a viewer of a fused IR/visible image
looks for, measured directly (issue 20). Not among the field's 14 metrics; ``evaluate.py
--metrics=all,target`` reports them beside those.

Inputs as every metric here: ``a`` = IR, ``b`` = visible, ``f`` = fused, gray ``(H, W)`` on 0..255.

* **Warm target** of an image pair: the IR pixels at or above the IR image's 98th percentile
  (the top 2 %); its **surroundings**: the ring of pixels 5 to 15 px (chessboard distance) away
  from the target. A pair *has a warm target* when the target is at least
  ``MIN_IR_CONTRAST`` = 10 gray levels warmer than its ring in the IR image.
* ``target_contrast(a, b, f)``: the fused image's target-to-ring contrast as a fraction of the
  IR image's, ``(mean_f(T) - mean_f(R)) / (mean_a(T) - mean_a(R))``; NaN without a warm target.
  1 = the target stands out as much as in the IR image; Average fusion keeps about half.
* ``texture_kept(a, b, f)``: ``median(sd_7(f)) / median(sd_7(b))``, ``sd_7`` the standard
  deviation over 7x7 windows, medians over the whole image: the fraction of the visible image's
  local contrast the fused image keeps.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TOP_FRACTION = 0.02
RING = (5, 15)  # px from the target, inclusive
MIN_IR_CONTRAST = 10.0  # gray levels (0..255)


def warm_target(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(target, ring)`` boolean masks of the IR image ``a``, or None without a warm target."""
    a = np.asarray(a, np.float64)
    target = a >= np.quantile(a, 1.0 - TOP_FRACTION)
    near = ndimage.binary_dilation(target, np.ones((3, 3), bool), iterations=RING[0] - 1)
    far = ndimage.binary_dilation(target, np.ones((3, 3), bool), iterations=RING[1])
    ring = far & ~near
    if not ring.any() or target.all():
        return None
    if a[target].mean() - a[ring].mean() < MIN_IR_CONTRAST:
        return None
    return target, ring


def target_contrast(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    masks = warm_target(a)
    if masks is None:
        return float("nan")
    t, r = masks
    a, f = np.asarray(a, np.float64), np.asarray(f, np.float64)
    return float((f[t].mean() - f[r].mean()) / (a[t].mean() - a[r].mean()))


def box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``x`` ``(H, W)`` over the ``size x size`` window centred on each pixel (rows
    ``i - (size-1)//2 .. i + size//2``), pixels outside the image not counted: ``(H, W)``."""
    x = np.asarray(x, np.float64)
    lo, hi = (size - 1) // 2, size // 2
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # s[i, j] = sum of x[:i, :j]
    h, w = x.shape
    r0, r1 = np.clip(np.arange(h) - lo, 0, h), np.clip(np.arange(h) + hi + 1, 0, h)
    c0, c1 = np.clip(np.arange(w) - lo, 0, w), np.clip(np.arange(w) + hi + 1, 0, w)
    total = s[r1][:, c1] - s[r0][:, c1] - s[r1][:, c0] + s[r0][:, c0]
    return total / np.outer(r1 - r0, c1 - c0)


def local_contrast(x: np.ndarray, size: int = 7) -> np.ndarray:
    """Standard deviation of ``x`` ``(H, W)`` over the ``size x size`` window on each pixel (as
    :func:`box_mean`): ``(H, W)``."""
    x = np.asarray(x, np.float64)
    return np.sqrt(np.maximum(box_mean(x * x, size) - box_mean(x, size) ** 2, 0.0))


def local_sd(x: np.ndarray, size: int = 7) -> np.ndarray:
    """Standard deviation over each ``size x size`` window inside the image (valid positions):
    ``(H - size + 1, W - size + 1)``."""
    lo, hi = (size - 1) // 2, size // 2
    h, w = np.shape(x)
    return local_contrast(x, size)[lo : h - hi, lo : w - hi]


def texture_kept(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    ref = np.median(local_sd(b))
    return float(np.median(local_sd(f)) / ref) if ref > 0 else float("nan")
