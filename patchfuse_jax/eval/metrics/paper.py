"""The paper's fusion metrics: CC, SCD, FMI_dct, SSIM_a, MS-SSIM (MEF-SSIM) and PSNR.

Every metric is ``fn(a, b, f) -> float`` with ``a`` = IR source, ``b`` = visible source and
``f`` = fused image: 2-D arrays ``(H, W)`` of one size on the 0..255 scale (uint8 or float; all
arithmetic is float64 numpy/scipy, vectorised, nothing compiled per image size). A metric returns
``nan`` where it is undefined (zero variance, image smaller than a window) and never raises for
that; arrays that are not 2-D or differ in shape raise :class:`ValueError`.

Definitions follow the MATLAB code used by the IR/visible fusion literature (Linfeng-Tang's
``Evaluation-for-Image-Fusion`` toolbox and its ancestors); docs/metrics.md ("Paper metrics")
states every convention and its source. In short (r = Pearson correlation over all pixels):

* ``cc``      = r(F, A) + r(F, B)                       (``cc_mean`` = half of it: the toolbox's CC)
* ``scd``     = r(F - B, A) + r(F - A, B)               (Aslantas & Bendes 2015)
* ``fmi_dct`` = fast FMI on orthonormal 2-D DCT features, 3x3 windows (Haghighat et al.)
* ``ssim_a``  = (SSIM(F, A) + SSIM(F, B)) / 2            (MATLAB ``ssim`` defaults on [0, 1])
* ``ms_ssim`` = 3-scale MEF-SSIM of F against the sequence {A, B} (Ma, Zeng & Wang 2015)
* ``psnr``    = 10 log10(255^2 / ((MSE(F, A) + MSE(F, B)) / 2))

The toolbox's PSNR column is ``psnr(a, b, f) + PSNR_TOOLBOX_OFFSET`` (it divides the MSE of
[0, 1] images into 1 and then adds 20 log10(255)).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as _fft
from scipy import ndimage as _ndi

__all__ = ["cc", "cc_mean", "scd", "fmi_dct", "ssim_a", "ms_ssim", "mef_ssim", "psnr", "PSNR_TOOLBOX_OFFSET"]

#: 20 log10(255): what the MATLAB toolbox adds to :func:`psnr` (its PSNR column).
PSNR_TOOLBOX_OFFSET = 20.0 * math.log10(255.0)

_EPS = float(np.finfo(np.float64).eps)  # MATLAB eps

# MATLAB fspecial('gaussian', 11, 1.5) == outer(g, g) with this normalised 1-D g (separable).
_GAUSS_RADIUS = 5
_GAUSS_SIGMA = 1.5


def _gauss1d(radius: int = _GAUSS_RADIUS, sigma: float = _GAUSS_SIGMA) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


_G1 = _gauss1d()
_BOX1 = np.ones(2 * _GAUSS_RADIUS + 1, dtype=np.float64)

# MEF-SSIM multi-scale weights (Ma et al.): [0.0448 0.2856 0.3001] normalised to sum 1.
_MEF_WEIGHTS = np.array([0.0448, 0.2856, 0.3001], dtype=np.float64)
_MEF_WEIGHTS = _MEF_WEIGHTS / _MEF_WEIGHTS.sum()
_MEF_C = (0.03 * 255.0) ** 2


# --------------------------------------------------------------------------------------------
# input handling


def _prep(a, b, f) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = []
    for name, x in (("a (ir)", a), ("b (vis)", b), ("f (fused)", f)):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (H, W) array, got shape {x.shape}")
        out.append(x.astype(np.float64, copy=False))
    if not (out[0].shape == out[1].shape == out[2].shape):
        raise ValueError(f"images differ in shape: a {out[0].shape}, b {out[1].shape}, f {out[2].shape}")
    if out[0].size == 0:
        raise ValueError("images are empty")
    return out[0], out[1], out[2]


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    # einsum, not a BLAS dot: on a busy machine multi-threaded BLAS calls spend longer waking
    # their threads than this single-threaded loop takes (docs/benchmarks.md, 'Measurements
    # behind the code').
    return float(np.einsum("i,i->", x, y))


def _centred(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()).reshape(-1)


def _r(xc: np.ndarray, yc: np.ndarray) -> float:
    """Pearson r of two mean-removed images (MATLAB ``corr2``); nan when either is constant."""
    den = math.sqrt(_dot(xc, xc) * _dot(yc, yc))
    if den == 0.0 or not math.isfinite(den):
        return float("nan")
    return _dot(xc, yc) / den


# --------------------------------------------------------------------------------------------
# CC, SCD, PSNR


def cc(a, b, f) -> float:
    """Correlation coefficient, sum form: r(F, A) + r(F, B) (the paper's values exceed 1).

    nan when F, A or B is constant.
    """
    a, b, f = _prep(a, b, f)
    fc = _centred(f)
    return _r(fc, _centred(a)) + _r(fc, _centred(b))


def cc_mean(a, b, f) -> float:
    """Correlation coefficient, mean form: (r(F, A) + r(F, B)) / 2 -- the MATLAB toolbox's CC."""
    a, b, f = _prep(a, b, f)
    fc = _centred(f)
    return 0.5 * _r(fc, _centred(a)) + 0.5 * _r(fc, _centred(b))


def scd(a, b, f) -> float:
    """Sum of the correlations of differences (Aslantas & Bendes 2015).

    r(F - B, A) + r(F - A, B); nan when a difference or a source is constant (e.g. F == A).
    """
    a, b, f = _prep(a, b, f)
    # (centre the differences themselves: F = B + k must give an exactly constant F - B)
    return _r(_centred(f - b), _centred(a)) + _r(_centred(f - a), _centred(b))


def psnr(a, b, f) -> float:
    """10 log10(255^2 / MSE) with MSE = (MSE(F, A) + MSE(F, B)) / 2 on the 0..255 scale.

    ``inf`` when F == A == B. The MATLAB toolbox's PSNR column is this plus
    :data:`PSNR_TOOLBOX_OFFSET` (20 log10 255).
    """
    a, b, f = _prep(a, b, f)
    da = (f - a).reshape(-1)
    db = (f - b).reshape(-1)
    mse = 0.5 * (_dot(da, da) / da.size + _dot(db, db) / db.size)
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0 * 255.0 / mse)


# --------------------------------------------------------------------------------------------
# SSIM_a (MATLAB ssim defaults)


def _valid_filter(stack: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of each ``stack[k]`` with ``outer(w1, w1)``."""
    r = (w1.size - 1) // 2
    out = _ndi.correlate1d(stack, w1, axis=1, mode="nearest")[:, r : stack.shape[1] - r, :]
    return _ndi.correlate1d(out, w1, axis=2, mode="nearest")[:, :, r : stack.shape[2] - r]


def _ssim_mean(x: np.ndarray, y: np.ndarray, data_range: float, padding: str) -> float:
    """Mean SSIM map of ``x`` vs ``y`` (Wang et al. 2004, exponents 1), 11x11 Gaussian(1.5).

    ``padding='replicate'``: MATLAB ``ssim`` (map of the image's size, edges replicated);
    ``padding='valid'``: Wang's ``ssim_index.m`` / VIFB (map over windows that fit).
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = ``data_range``.
    """
    stack = np.stack([x, y, x * x, y * y, x * y])
    if padding == "replicate":
        m = _ndi.correlate1d(stack, _G1, axis=1, mode="nearest")
        m = _ndi.correlate1d(m, _G1, axis=2, mode="nearest")
    elif padding == "valid":
        m = _valid_filter(stack, _G1)
    else:
        raise ValueError(f"padding must be 'replicate' or 'valid', got {padding!r}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx, my = m[0], m[1]
    mxy = mx * my
    mx2 = mx * mx
    my2 = my * my
    num = (2.0 * mxy + c1) * (2.0 * (m[4] - mxy) + c2)
    den = (mx2 + my2 + c1) * ((m[2] - mx2) + (m[3] - my2) + c2)
    return float(np.mean(num / den))


def ssim_a(a, b, f) -> float:
    """(SSIM(F, A) + SSIM(F, B)) / 2 with MATLAB ``ssim`` defaults.

    Images are scaled to [0, 1] (the toolbox passes ``im2double`` images); 11x11 Gaussian
    window (sigma 1.5), replicate padding, a map of the image's size, C1 = 0.01^2,
    C2 = 0.03^2, score = mean of the map. Defined for any size (also images smaller than the
    window, as in MATLAB) and for constant images.
    """
    a, b, f = _prep(a, b, f)
    f = f / 255.0
    return 0.5 * (_ssim_mean(f, a / 255.0, 1.0, "replicate") + _ssim_mean(f, b / 255.0, 1.0, "replicate"))


# --------------------------------------------------------------------------------------------
# MEF-SSIM / MS-SSIM (Ma, Zeng & Wang 2015)


def _mef_ssim_scale(x1: np.ndarray, x2: np.ndarray, f: np.ndarray) -> float:
    """Single-scale MEF-SSIM of ``f`` against sources ``x1, x2`` (all at least 11x11).

    Vectorised form of Ma's ``mef_ssim.m``: the per-pixel desired patch is never formed; its
    Gaussian variance and covariance with F follow from the windowed (co)variances of the
    sources, because it is a linear combination of the mean-removed source patches.
    """
    n = float(_BOX1.size**2)  # 121 pixels per window
    wsize = float(_BOX1.size)
    # Box sums (exact for integer / dyadic data): S_k = sum x_k, S_kl = sum x_k x_l.
    box = _valid_filter(np.stack([x1, x2, x1 * x1, x2 * x2, x1 * x2]), _BOX1)
    s1, s2 = box[0], box[1]
    q11 = (n * box[2] - s1 * s1) / n  # sum (x1 - mu1)^2
    q22 = (n * box[3] - s2 * s2) / n
    q12 = (n * box[4] - s1 * s2) / n  # sum (x1 - mu1)(x2 - mu2)
    norm1 = np.sqrt(np.maximum(q11, 0.0))  # || x_k - mu_k ||
    norm2 = np.sqrt(np.maximum(q22, 0.0))
    ed1 = norm1 + 0.001
    ed2 = norm2 + 0.001
    # Structure consistency R = ||sum_k (x_k - mu_k)|| / sum_k ||x_k - mu_k||.
    num = np.sqrt(np.maximum(q11 + q22 + 2.0 * q12, 0.0))
    rr = (num + _EPS) / (norm1 + norm2 + _EPS)
    rr[rr > 1.0] = 1.0 - _EPS
    rr[rr < 0.0] = _EPS
    p = np.tan(np.pi / 2.0 * rr)
    p[p > 10.0] = 10.0
    w1 = (ed1 / wsize) ** p + _EPS
    w2 = (ed2 / wsize) ** p + _EPS
    wsum = w1 + w2
    al1 = (w1 / wsum) / ed1  # desired patch = s * sum_k al_k (x_k - mu_k)
    al2 = (w2 / wsum) / ed2
    raw2 = al1 * al1 * q11 + al2 * al2 * q22 + 2.0 * al1 * al2 * q12
    raw = np.sqrt(np.maximum(raw2, 0.0))
    max_ed = np.maximum(ed1, ed2)
    pos = raw > 0.0
    s = np.zeros_like(raw)
    s[pos] = max_ed[pos] / raw[pos]
    # Gaussian-window (co)variances.
    g = _valid_filter(np.stack([x1, x2, f, x1 * x1, x2 * x2, x1 * x2, f * f, x1 * f, x2 * f]), _G1)
    m1, m2, mf = g[0], g[1], g[2]
    g11 = g[3] - m1 * m1
    g22 = g[4] - m2 * m2
    g12 = g[5] - m1 * m2
    gff = np.maximum(g[6] - mf * mf, 0.0)
    g1f = g[7] - m1 * mf
    g2f = g[8] - m2 * mf
    sig_r = s * s * np.maximum(al1 * al1 * g11 + al2 * al2 * g22 + 2.0 * al1 * al2 * g12, 0.0)
    sig_rf = s * (al1 * g1f + al2 * g2f)
    q = (2.0 * sig_rf + _MEF_C) / (sig_r + gff + _MEF_C)
    return float(np.mean(q))


def _center(x: np.ndarray) -> np.ndarray:
    # Covariances are shift-invariant; an integer shift keeps integer data exact and makes
    # the E[xy] - E[x]E[y] cancellations smaller.
    return x - float(np.round(np.mean(x)))


def mef_ssim(a, b, f) -> float:
    """Single-scale MEF-SSIM (Ma et al. 2015) of ``f`` against {a, b}; nan below 11x11."""
    a, b, f = _prep(a, b, f)
    if min(a.shape) < _BOX1.size:
        return float("nan")
    return _mef_ssim_scale(_center(a), _center(b), _center(f))


def _down2(x: np.ndarray) -> np.ndarray:
    """MATLAB ``imfilter(x, ones(2)/4, 'symmetric', 'same')`` then ``(1:2:end, 1:2:end)``.

    Output pixel (i, j) = mean of x[2i:2i+2, 2j:2j+2], an odd last row/column repeating itself.
    """
    h, w = x.shape
    if h % 2 or w % 2:
        x = np.pad(x, ((0, h % 2), (0, w % 2)), mode="edge")
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(a, b, f) -> float:
    """Multi-scale MEF-SSIM (Ma, Zeng & Wang 2015), the fusion toolboxes' "MS-SSIM".

    {A, B} is the source sequence and F the fused image, on 0..255 (C = (0.03 * 255)^2).
    3 scales, weights [0.0448 0.2856 0.3001] / sum; 11x11 Gaussian(1.5) window over the 'valid'
    region; between scales a symmetric-padded 2x2 mean filter and x2 decimation;
    score = prod_l Q_l ** w_l. nan when min(H, W) < 44 (the coarsest scale would be smaller than
    the window; MATLAB returns -Inf) or when a scale score is negative.
    """
    a, b, f = _prep(a, b, f)
    levels = _MEF_WEIGHTS.size
    if min(a.shape) / 2 ** (levels - 1) < _BOX1.size:
        return float("nan")
    a, b, f = _center(a), _center(b), _center(f)
    qs = []
    for lev in range(levels):
        if lev:
            a, b, f = _down2(a), _down2(b), _down2(f)
        qs.append(_mef_ssim_scale(a, b, f))
    qs = np.asarray(qs)
    if np.any(qs < 0) or not np.all(np.isfinite(qs)):
        return float("nan")
    return float(np.prod(qs**_MEF_WEIGHTS))


# --------------------------------------------------------------------------------------------
# FMI_dct (fast FMI, Haghighat & Razian 2014)

# Windows per chunk; both pairs (A, F) and (B, F) go through one pass, so the (17, 2 * chunk)
# temporaries stay ~280 kB: much larger ones make glibc malloc return memory to the OS and
# page-fault it back on every temporary, several times slower (docs/benchmarks.md,
# 'Measurements behind the code').
_FMI_CHUNK = 1024
_POS = np.arange(1.0, 10.0)  # window positions 1..9 (column-major in the 3x3 patch)
_STEPS = 17  # cells on a monotone staircase through a 9x9 grid
_MIN_BOUND_CORR = 1e-6  # |correlation of the Frechet bound| below this: phi = 0 (see _nmi)


def _window_index(w: int, start: int, stop: int) -> np.ndarray:
    """Flat indices ``(9, n)`` into an image of width ``w`` of the 3x3 windows number
    ``start..stop-1`` (row-major over window positions); row k = MATLAB's ``patch(:)(k + 1)``
    (column-major inside the patch)."""
    win = np.arange(start, stop)
    r = win // (w - 2)
    base = win + 2 * r  # r * w + c with c = win - r * (w - 2)
    off = np.array([dr * w + dc for dc in range(3) for dr in range(3)])
    return off[:, None] + base[None, :]


# Position (1-based) of each row of a source's stacked (20, n) arrays: rows 0-8 are the pdf in
# order, rows 10-18 reversed (for the lower Frechet bound); rows 9 and 19 are pads.
_POS20 = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=np.float64)


class _Marginal:
    """Per-window pdf over the 9 positions of ``x`` ``(9, n)``, and what :func:`_nmi` needs.

    ``pdf``, ``logpdf`` (0 where pdf == 0) and ``cdf`` are ``(10, n)``, or ``(20, n)`` with
    ``stacked`` (sources): rows 10-18 then hold the reversed pdf and its cdf. Pad rows 9 / 19
    have pdf 0 and cdf +inf; the merge walk in :func:`_nmi` steps onto them once a cdf is
    exhausted (their interval lengths are rounding noise, as in fmi.m's 81-cell sums).
    """

    def __init__(self, x: np.ndarray | None, stacked: bool = False):
        if x is None:
            return
        n = x.shape[1]
        rows = 20 if stacked else 10
        mn = x.min(axis=0)
        rng = x.max(axis=0) - mn
        const = rng == 0
        z = (x - mn) / (rng + const)
        if const.any():
            z[:, const] = 1.0
        pdf = np.zeros((rows, n))
        p9 = pdf[:9]
        np.divide(z, z.sum(axis=0), out=p9)
        logpdf = np.zeros((rows, n))
        lp = logpdf[:9]
        np.log(p9 + (p9 == 0), out=lp)
        # (einsum: no temporaries, and no multi-threaded BLAS)
        self.entropy = -np.einsum("ij,ij->j", p9, lp)  # nats (NMI is a ratio: any base)
        self.mean_pos = np.einsum("i,ij->j", _POS, p9)
        var = np.einsum("i,ij->j", _POS * _POS, p9) - self.mean_pos**2
        self.sd = np.sqrt(np.maximum(var, 0.0))
        self.centred = p9 - p9.sum(axis=0) / 9.0
        self.ss = np.einsum("ij,ij->j", self.centred, self.centred)
        cdf = np.empty((rows, n))
        cdf[0] = p9[0]
        for r in range(1, 9):  # (np.cumsum along axis 0 is slow)
            np.add(cdf[r - 1], p9[r], out=cdf[r])
        cdf[9] = np.inf
        if stacked:
            pdf[10:19] = p9[::-1]
            logpdf[10:19] = lp[::-1]
            cdf[10] = p9[8]
            for r in range(1, 9):
                np.add(cdf[9 + r], p9[8 - r], out=cdf[10 + r])
            cdf[19] = np.inf
        self.pdf, self.logpdf, self.cdf = pdf, logpdf, cdf

    def twice(self) -> "_Marginal":
        """The same windows twice (columns ``[0..n) + [0..n)``), to pair with two sources."""
        out = _Marginal(None)
        for k, v in vars(self).items():
            setattr(out, k, np.concatenate([v, v], axis=-1))
        return out


def _nmi(ma: _Marginal, mf: _Marginal) -> np.ndarray:
    """Per-window normalised MI of two marginal pdfs joined by the Nelsen/Frechet mixture.

    The joint pdf is phi * (Frechet bound coupling) + (1 - phi) * (product); phi = c / corr_bound
    with c the Pearson correlation of the two pdf vectors; the upper (comonotone) bound when
    c >= 0, the lower (countermonotone) one when c < 0, which is the upper bound of (f, reversed
    a) with a's positions mirrored. A bound coupling lives on a monotone staircase of at most 17
    cells (the merge of the two cdfs), so the joint entropy is the product part's entropy in
    closed form plus corrections on those cells: the numbers of fmi.m's 81-cell sums, to
    rounding. Masks are arithmetic (np.where on random patterns is slow).
    """
    n = ma.centred.shape[1]
    cnum = np.einsum("ij,ij->j", ma.centred, mf.centred)
    zero_c = cnum == 0
    c = cnum / (np.sqrt(ma.ss * mf.ss) + zero_c)  # fmi.m: c = 0 when the numerator is 0
    neg = c < 0
    # Merge walk over cells (i, j): interval (previous end, min(F_i, A_j)], then advance the
    # smaller cdf. Flat indices row * n + column; i + j = k at step k.
    idx_f = np.empty((_STEPS, n), dtype=np.intp)
    idx_f[0] = np.arange(n)
    # idx_a[k] = idx_a[0] + k * n - (idx_f[k] - idx_f[0]); reversed rows (+10 n) when c < 0.
    idx_a = (idx_f[0] + (idx_f[0] + neg * (10 * n)))[None, :] + (np.arange(_STEPS) * n)[:, None]
    ends = np.empty((_STEPS, n))
    fc = mf.cdf.reshape(-1)
    ac = ma.cdf.reshape(-1)
    for k in range(_STEPS):
        np.subtract(idx_a[k], idx_f[k], out=idx_a[k])
        fi = fc.take(idx_f[k])
        aj = ac.take(idx_a[k])
        np.minimum(fi, aj, out=ends[k])
        if k + 1 < _STEPS:
            np.add(idx_f[k], (fi <= aj) * n, out=idx_f[k + 1])
    lens = ends
    lens[1:] -= ends[:-1].copy()
    # Covariance of the bound coupling (Hoeffding) -> its correlation -> phi.
    exy = np.einsum("ij,ij->j", lens, (idx_f // n + 1.0) * _POS20.take(idx_a // n))
    cov = exy - mf.mean_pos * ma.mean_pos
    sdp = mf.sd * ma.sd
    sd_zero = sdp == 0
    corr_bound = cov / (sdp + sd_zero)
    # fmi.m: phi = 0 when c == 0 or a pdf is one-hot (sd == 0). Also when |corr_bound| < 1e-6:
    # only near-one-hot pdfs (off-mode mass ~1e-12, from DCT rounding noise around exact
    # zeros) get there, where fmi.m's own phi is rounding noise and the exact NMI ~ 0.
    degenerate = zero_c | sd_zero | (np.abs(corr_bound) < _MIN_BOUND_CORR)
    phi = c / (corr_bound + degenerate) * ~degenerate
    om = 1.0 - phi
    log_om = np.log(np.abs(om + (om == 0)))
    hsum = ma.entropy + mf.entropy
    # Entropy of the product part over all cells, sum_ij g((1 - phi) f_i a_j) with
    # g(x) = -x log|x| (MATLAB's real(-x log2 x), also for the negative entries phi > 1 can
    # give), plus the staircase cells' corrections g(joint) - g((1 - phi) f_i a_j).
    background = om * (hsum - log_om)
    om_prod = mf.pdf.reshape(-1).take(idx_f)
    om_prod *= ma.pdf.reshape(-1).take(idx_a)
    om_prod *= om
    log_prod = mf.logpdf.reshape(-1).take(idx_f)
    log_prod += ma.logpdf.reshape(-1).take(idx_a)
    log_prod += log_om
    joint = phi * lens
    joint += om_prod
    ajoint = np.abs(joint)
    ajoint += ajoint == 0
    np.log(ajoint, out=ajoint)
    corrections = np.einsum("ij,ij->j", om_prod, log_prod) - np.einsum("ij,ij->j", joint, ajoint)
    mi = hsum - (background + corrections)
    undefined = (mi == 0) | (hsum == 0)
    return 2.0 * mi / (hsum + undefined) * ~undefined


def fmi_dct(a, b, f) -> float:
    """Feature mutual information on DCT features, fast FMI (Haghighat & Razian 2014).

    Features: orthonormal 2-D DCT-II of each whole image (MATLAB ``dct2``); every 3x3 window
    that fits; per window (NMI(A, F) + NMI(B, F)) / 2 where NMI = 2 MI / (H_a + H_f) of the
    Nelsen/Frechet-mixture joint of the windows' min-max-normalised pdfs, 1 when the raw
    feature patches are identical, 0 when MI = 0; result = mean over windows. nan below 3x3
    and when an image is constant.
    """
    a, b, f = _prep(a, b, f)
    h, w = a.shape
    if h < 3 or w < 3:
        return float("nan")
    if any(float(np.ptp(x)) == 0.0 for x in (a, b, f)):
        # A constant image's DCT is 0 apart from the DC term: its window pdfs would be made of
        # floating-point rounding noise (fmi.m then returns noise or NaN).
        return float("nan")
    # The toolbox passes im2double images: [0, 1] (NMI is scale invariant; this matches rounding).
    fa = _fft.dctn(a / 255.0, type=2, norm="ortho").reshape(-1)
    fb = _fft.dctn(b / 255.0, type=2, norm="ortho").reshape(-1)
    ff = _fft.dctn(f / 255.0, type=2, norm="ortho").reshape(-1)
    count = (h - 2) * (w - 2)
    total = 0.0
    # (Only pathological windows -- a bound correlation of exactly 0 -- can divide by zero;
    # they give nan, as in MATLAB, and the registry reports it.)
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, count, _FMI_CHUNK):
            idx = _window_index(w, start, min(count, start + _FMI_CHUNK))
            xs = np.concatenate([fa.take(idx), fb.take(idx)], axis=1)  # A windows, B windows
            xf = ff.take(idx)
            nmi = _nmi(_Marginal(xs, stacked=True), _Marginal(xf).twice())
            same = np.all(xs == np.concatenate([xf, xf], axis=1), axis=0)
            total += float(np.sum(np.where(same, 1.0, nmi))) * 0.5
    return total / count
