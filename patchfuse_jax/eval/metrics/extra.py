"""EN, SD, SF, AG, MI, VIF and Qabf: the fusion metrics most papers report beyond the paper's six.

Every metric is ``fn(a, b, f) -> float`` with ``a`` = IR, ``b`` = visible, ``f`` = fused: 2-D
``(H, W)`` arrays of one size on the 0..255 scale (uint8 or float; computed in float64). EN, SD,
SF and AG look at ``f`` only (``a`` and ``b`` are accepted and ignored). A metric returns
``nan`` where it is undefined (and for inputs holding NaN/Inf); it raises ``ValueError`` only
for arrays that are not 2-D, empty, or differ in size.

Reference implementation: Linfeng Tang's MATLAB toolbox "Evaluation-for-Image-Fusion"
(``analysis_Reference.m``), whose per-image TNO values (``Metric_TNO.xlsx``) these functions
reproduce: EN, AG exactly (defaults), MI, VIF and Qabf exactly with ``compat=True`` (the
default), SF up to its old [0, 1] scaling. ``docs/metrics.md`` states every formula, constant,
NaN case and the quirks ``compat`` reproduces:

* ``mi``:   the joint histograms merge gray levels 254 and 255 (``uint8(x) + 1`` saturates
  in the toolbox's ``Hab.m``); the marginal entropies do not.
* ``vif``:  at the finest scale the squares and cross products of the uint8 inputs saturate
  at 255 (``ref.*ref`` on uint8 in ``vifp_mscale.m``).
* ``qabf``: computed on ``x / 255`` with MATLAB ``conv2``'s rounding (a pure horizontal edge
  gets a Sobel x-response of +-1e-17 instead of 0, so its angle is -pi/2 or pi/2 at random),
  and ``G = g_F`` (not 1) where the two gradient strengths are equal.

``compat=False`` gives the textbook definitions (plain joint histograms, VIFp on the float
values, Xydeas-Petrovic Qabf with exact Sobel responses on the 0..255 values).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

__all__ = ["en", "sd", "sf", "ag", "mi", "vif", "qabf", "QABF_CONSTANTS", "VIF_SIGMA_NSQ"]

NAN = float("nan")

#: Xydeas & Petrovic (2000) sigmoid constants, as in every MATLAB Qabf (``analysis_Qabf.m``).
QABF_CONSTANTS = {"L": 1.0, "Tg": 0.9994, "kg": -15.0, "Dg": 0.5, "Ta": 0.9879, "ka": -22.0, "Da": 0.8}

#: HVS noise variance of Sheikh & Bovik's pixel-domain VIF (``vifp_mscale.m``), 0..255 scale.
VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10
_VIF_SCALES = 4


# ----------------------------------------------------------------------------------- inputs


def _gray(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (H, W) array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{name}: image is empty (shape {x.shape})")
    return x


def _finite(*xs: np.ndarray) -> bool:
    return all(not np.issubdtype(x.dtype, np.inexact) or bool(np.isfinite(x).all()) for x in xs)


def _three(a, b, f) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, f = _gray(a, "a (IR)"), _gray(b, "b (visible)"), _gray(f, "f (fused)")
    if not (a.shape == b.shape == f.shape):
        raise ValueError(f"images differ in size: a {a.shape}, b {b.shape}, f {f.shape}")
    return a, b, f


def _levels(x: np.ndarray) -> np.ndarray:
    """Integer gray levels 0..255 (intp): MATLAB ``uint8(x)`` (round half away, saturate)."""
    if x.dtype == np.uint8:
        return x.astype(np.intp)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return np.clip(x.astype(np.int64), 0, 255).astype(np.intp)
    return np.clip(np.floor(x.astype(np.float64) + 0.5), 0, 255).astype(np.intp)


def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram of counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0


# --------------------------------------------------------------------- no-reference metrics


def en(a, b, f) -> float:
    """Entropy (bits) of F's 256-bin gray histogram: ``-sum p_i log2 p_i`` (MATLAB ``entropy``).

    Float input is rounded to levels 0..255 first (half away from zero, clipped).
    """
    f = _gray(f, "f (fused)")
    if not _finite(f):
        return NAN
    return _entropy(np.bincount(_levels(f).ravel(), minlength=256))


def sd(a, b, f) -> float:
    """Standard deviation of F on 0..255, normalised by M*N: ``sqrt(mean((F - mean F)^2))``."""
    f = _gray(f, "f (fused)")
    if not _finite(f):
        return NAN
    x = f.astype(np.float64)
    return float(math.sqrt(np.mean((x - x.mean()) ** 2)))


def sf(a, b, f) -> float:
    """Spatial frequency ``sqrt(RF^2 + CF^2)`` on 0..255.

    ``RF^2 = mean over (M-1) x N of (F[i+1, j] - F[i, j])^2``, ``CF^2 = mean over M x (N-1) of
    (F[i, j+1] - F[i, j])^2`` (Tang's ``SF_evaluation.m``). NaN when H < 2 or W < 2.
    """
    f = _gray(f, "f (fused)")
    if min(f.shape) < 2 or not _finite(f):
        return NAN
    x = f.astype(np.float64)
    return float(math.sqrt(np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2)))


def ag(a, b, f) -> float:
    """Average gradient on 0..255: ``sum sqrt((Gx^2 + Gy^2) / 2) / ((M-1)(N-1))``.

    ``Gx, Gy`` = MATLAB ``gradient(F)``: central differences inside, one-sided at the borders
    (``np.gradient``); the sum runs over all M x N pixels. NaN when H < 2 or W < 2.
    """
    f = _gray(f, "f (fused)")
    if min(f.shape) < 2 or not _finite(f):
        return NAN
    gy, gx = np.gradient(f.astype(np.float64))
    m, n = f.shape
    return float(np.sqrt((gx * gx + gy * gy) / 2.0).sum() / ((m - 1) * (n - 1)))


# ------------------------------------------------------------------------------------- MI


def mi(a, b, f, *, compat: bool = True) -> float:
    """Mutual information ``MI(A, F) + MI(B, F)`` in bits, 256-bin (joint) histograms.

    ``MI(X, F) = H(X) + H(F) - H(X, F)`` on gray levels 0..255 (float input rounded).
    ``compat=True``: the joint histogram counts level 255 as 254 (toolbox ``Hab.m``).
    """
    a, b, f = _three(a, b, f)
    if not _finite(a, b, f):
        return NAN
    la, lb, lf = (_levels(x).ravel() for x in (a, b, f))
    h_f = _entropy(np.bincount(lf, minlength=256))
    jf = np.minimum(lf, 254) if compat else lf
    total = 0.0
    for lx in (la, lb):
        jx = np.minimum(lx, 254) if compat else lx
        h_x = _entropy(np.bincount(lx, minlength=256))
        h_xf = _entropy(np.bincount(jx * 256 + jf, minlength=65536))
        total += h_x + h_f - h_xf
    return float(total)


# ------------------------------------------------------------------------------------ VIF


def _gauss1d(n: int) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', n, n/5)`` (the 2-D kernel is its outer product)."""
    s = n / 5.0
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * s * s))
    return g / g.sum()


def _valid_t(x: np.ndarray, g: np.ndarray, step: int = 1) -> np.ndarray:
    """``filter2(outer(g, g), X, 'valid')(1:step:end, 1:step:end)`` of each ``X = x[k]``, transposed.

    Separable, and the result comes back with its two image axes swapped (both passes then
    filter the contiguous axis); callers only sum over the maps, so orientation is immaterial.
    """
    n = g.size
    h = n // 2
    rows, cols = x.shape[-2:]
    if rows < n or cols < n:
        return np.zeros(x.shape[:-2] + (0, 0))
    y = correlate1d(x, g, axis=-1, mode="constant")[..., h : cols - h : step]
    y = np.ascontiguousarray(np.swapaxes(y, -1, -2))
    return correlate1d(y, g, axis=-1, mode="constant")[..., h : rows - h : step]


def _vif_terms(x: np.ndarray, f: np.ndarray, g: np.ndarray, saturate: bool):
    """Per-source (num, den) sums of one VIFp scale; ``x``: (k, H, W) sources, ``f``: (H, W)."""
    k = x.shape[0]
    maps = np.empty((3 * k + 2,) + f.shape)  # x, f, x*x, f*f, x*f
    maps[:k] = x
    maps[k] = f
    np.multiply(x, x, out=maps[k + 1 : 2 * k + 1])
    np.multiply(f, f, out=maps[2 * k + 1])
    np.multiply(x, f, out=maps[2 * k + 2 :])
    if saturate:  # uint8 .* uint8 in MATLAB saturates at 255
        np.minimum(maps[k + 1 :], 255.0, out=maps[k + 1 :])
    m = _valid_t(maps, g)
    mu1, mu2 = m[:k], m[k]
    s1 = m[k + 1 : 2 * k + 1]  # sigma1_sq (sources), in place
    s1 -= mu1 * mu1
    np.maximum(s1, 0.0, out=s1)
    s2 = m[2 * k + 1]  # sigma2_sq (fused)
    s2 -= mu2 * mu2
    np.maximum(s2, 0.0, out=s2)
    s12 = m[2 * k + 2 :]  # sigma12
    s12 -= mu1 * mu2
    eps = _VIF_EPS
    gain = s1 + eps
    np.divide(s12, gain, out=gain)  # g = sigma12 / (sigma1_sq + eps)
    sv = gain * s12
    np.subtract(s2, sv, out=sv)  # sv_sq = sigma2_sq - g sigma12
    # vifp_mscale.m then sets g = 0 where sigma1_sq < eps, sigma2_sq < eps or g < 0 (and
    # sigma1_sq = 0 where sigma1_sq < eps), and clamps sv_sq to >= eps. A zero gain adds
    # log10(1) = 0 to num whatever sv_sq is, so only the pixels kept below contribute.
    keep1 = s1 >= eps
    keep = keep1 & (s2 >= eps) & (gain > 0)
    t = gain * gain
    t *= s1
    np.maximum(sv, eps, out=sv)
    sv += VIF_SIGMA_NSQ
    t /= sv  # g^2 sigma1_sq / (sv_sq + sigma_n^2)
    t[~keep] = 0.0
    t += 1.0
    num = np.log10(t, out=t).sum(axis=(-2, -1))
    s1[~keep1] = 0.0
    s1 /= VIF_SIGMA_NSQ
    s1 += 1.0
    den = np.log10(s1, out=s1).sum(axis=(-2, -1))
    return num, den


def vif(a, b, f, *, compat: bool = True) -> float:
    """Fusion VIF: ``VIFp(A, F) + VIFp(B, F)``, Sheikh & Bovik's 4-scale pixel-domain VIF.

    Per scale s = 1..4: Gaussian window ``n = 2^(5-s) + 1``, sigma ``n/5``; for s > 1 both images
    are first filtered ('valid') and decimated by 2. ``VIFp = sum num / sum den`` over scales
    (``vifp_mscale.m``, sigma_n^2 = 2). NaN when a source has no variance in any window (den = 0),
    e.g. a constant source or an image smaller than 17 x 17; coarser scales drop out silently
    below 41 x 41 (as in MATLAB). ``compat=True``: inputs are uint8 levels and their squares and
    products saturate at 255 at scale 1 (the toolbox passes uint8 images).
    """
    a, b, f = _three(a, b, f)
    if not _finite(a, b, f):
        return NAN
    if compat:
        a, b, f = (_levels(x).astype(np.float64) for x in (a, b, f))
    cur = np.stack([np.asarray(x, dtype=np.float64) for x in (a, b, f)])
    num = np.zeros(2)
    den = np.zeros(2)
    for scale in range(1, _VIF_SCALES + 1):
        n = 2 ** (_VIF_SCALES - scale + 1) + 1
        g = _gauss1d(n)
        if scale > 1:
            cur = _valid_t(cur, g, step=2)
        if min(cur.shape[-2:]) < n:
            break  # this and every coarser scale is empty
        dn, dd = _vif_terms(cur[:2], cur[2], g, saturate=compat and scale == 1)
        num += dn
        den += dd
    if np.any(den == 0):
        return NAN
    return float((num / den).sum())


# ----------------------------------------------------------------------------------- Qabf


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``conv2(x, h3, 'same')``, ``conv2(x, h1, 'same')`` (zero padding), h3 = [-1 0 1; -2 0 2;
    -1 0 1], h1 = [1 2 1; 0 0 0; -1 -2 -1]; terms summed in MATLAB's order (kernel entries
    column-major), which fixes the rounding of the float [0, 1] responses bit for bit."""
    p = np.pad(x, 1)
    rows, cols = x.shape

    def s(di: int, dj: int) -> np.ndarray:  # x(i + di, j + dj), zero outside
        return p[1 + di : 1 + di + rows, 1 + dj : 1 + dj + cols]

    sx = np.negative(s(1, 1))
    sx -= 2.0 * s(0, 1)
    sx -= s(-1, 1)
    sx += s(1, -1)
    sx += 2.0 * s(0, -1)
    sx += s(-1, -1)
    sy = s(1, 1) - s(-1, 1)
    sy += 2.0 * s(1, 0)
    sy -= 2.0 * s(-1, 0)
    sy += s(1, -1)
    sy -= s(-1, -1)
    return sx, sy


def _strength_angle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sx, sy = _sobel(x)
    g = np.sqrt(sx * sx + sy * sy)
    nz = sx != 0
    ang = np.full(x.shape, np.pi / 2)
    np.arctan(np.divide(sy, sx, out=np.zeros_like(sy), where=nz), out=ang, where=nz)
    return g, ang


def _edge_preservation(g_x, a_x, g_f, a_f, compat: bool) -> np.ndarray:
    c = QABF_CONSTANTS
    ratio = np.ones_like(g_x)
    big = g_x > g_f
    small = g_x < g_f
    np.divide(g_f, g_x, out=ratio, where=big)
    np.divide(g_x, g_f, out=ratio, where=small)
    if compat:  # analysis_Qabf.m: "if gA == gF, GAF = gF"
        eq = ~(big | small)
        ratio[eq] = g_f[eq]
    # Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da))), A = 1 - |a_x - a_f| / (pi/2);
    # in place, operation for operation as in analysis_Qabf.m.
    q = ratio
    q -= c["Dg"]
    q *= c["kg"]
    np.exp(q, out=q)
    q += 1.0
    np.divide(c["Tg"], q, out=q)
    o = np.subtract(a_x, a_f)
    np.abs(o, out=o)
    o /= np.pi / 2
    np.subtract(1.0, o, out=o)
    o -= c["Da"]
    o *= c["ka"]
    np.exp(o, out=o)
    o += 1.0
    np.divide(c["Ta"], o, out=o)
    q *= o
    return q


def qabf(a, b, f, *, compat: bool = True) -> float:
    """Xydeas & Petrovic edge preservation ``sum(Q^AF w_A + Q^BF w_B) / sum(w_A + w_B)``.

    Sobel strength ``g = sqrt(sx^2 + sy^2)``, angle ``atan(sy / sx)`` (pi/2 where sx = 0),
    zero padding; ``G^XF = min(g_X, g_F) / max(g_X, g_F)``, ``A^XF = 1 - |a_X - a_F| / (pi/2)``,
    ``Q^XF = Tg / (1 + e^(kg (G - Dg))) * Ta / (1 + e^(ka (A - Da)))``, ``w_X = g_X^L``, constants
    :data:`QABF_CONSTANTS`. NaN when A and B are both all zero (no edge, even at the border).
    ``compat=True``: the toolbox's arithmetic (see the module docstring).
    """
    a, b, f = _three(a, b, f)
    if not _finite(a, b, f):
        return NAN
    if compat:
        a, b, f = (_levels(x) / 255.0 for x in (a, b, f))  # im2double(uint8)
    else:
        a, b, f = (np.asarray(x, dtype=np.float64) for x in (a, b, f))
    g_a, a_a = _strength_angle(a)
    g_b, a_b = _strength_angle(b)
    g_f, a_f = _strength_angle(f)
    q_a = _edge_preservation(g_a, a_a, g_f, a_f, compat)
    q_b = _edge_preservation(g_b, a_b, g_f, a_f, compat)
    L = QABF_CONSTANTS["L"]
    w_a, w_b = (g_a, g_b) if L == 1 else (g_a**L, g_b**L)
    den = float((w_a + w_b).sum())
    if den == 0.0:
        return NAN
    return float((q_a * w_a + q_b * w_b).sum() / den)
