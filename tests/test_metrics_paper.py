"""Tests of patchfuse_jax.eval.metrics.paper: CC, CC_mean, SCD, FMI_dct, SSIM_a, MS-SSIM, PSNR.

* Reproduction of the MATLAB toolbox values in peers/tno42/reference_metrics_Metric_TNO.csv
  (CC = cc_mean, SCD, PSNR, MSE) and of VIFB's SSIM column (the shared SSIM core).
* Slow, loop-based, straightforward float64 references (written from fmi.m / mef_ssim.m /
  MATLAB ssim, not from the vectorised code) that the vectorised metrics must match to 1e-10.
* Constructed cases with known answers, NaN cases, tiny images, symmetries.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import math
import pathlib

import numpy as np
import pytest
from scipy.fft import dctn

from patchfuse_jax.io import read_image, to_gray
from tests.conftest import shared_data


def _load_paper():
    try:
        return importlib.import_module("patchfuse_jax.eval.metrics.paper")
    except ImportError:  # package __init__ not importable yet (sibling modules missing)
        root = pathlib.Path(__file__).resolve().parents[1]
        path = root / "patchfuse_jax" / "metrics" / "paper.py"
        spec = importlib.util.spec_from_file_location("_paper_metrics_standalone", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


paper = _load_paper()
EPS = np.finfo(np.float64).eps
ALL = ("cc", "cc_mean", "scd", "fmi_dct", "ssim_a", "ms_ssim", "psnr")


def _rel(x, y):
    return abs(x - y) / max(abs(y), 1e-300)


def _images(h, w, seed, kind="mixed"):
    """Random 0..255 integer-valued test images (float64): a, b and a fused-like f."""
    rng = np.random.default_rng(seed)
    if kind == "smooth":  # correlated, structured sources (structure consistency R near 1)
        yy, xx = np.mgrid[0:h, 0:w]
        base = 127 + 80 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
        a = np.clip(np.round(base + rng.normal(0, 8, (h, w))), 0, 255)
        b = np.clip(np.round(0.6 * base + 40 + rng.normal(0, 8, (h, w))), 0, 255)
    else:
        a = rng.integers(0, 256, (h, w)).astype(np.float64)
        b = rng.integers(0, 256, (h, w)).astype(np.float64)
    f = np.clip(np.round(0.5 * a + 0.5 * b + rng.normal(0, 20, (h, w))), 0, 255)
    if kind == "flat":  # constant blocks in every image (zero-variance windows)
        a[: h // 2, : w // 2] = 40
        b[: h // 2, :] = 200
        f[h // 3 :, : w // 3] = 90
    return a, b, f


# ---------------------------------------------------------------------------------------------
# Loop references


def ref_corr2(x, y):
    x = x - x.mean()
    y = y - y.mean()
    return float(np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y)))


def _ref_patch_nmi(x, y):
    """fmi.m's per-window NMI of source patch x and fused patch y (3x3 raw features)."""
    if np.array_equal(x, y):
        return 1.0

    def norm(p):
        mx, mn = p.max(), p.min()
        return np.ones((3, 3)) if mx == mn else (p - mn) / (mx - mn)

    ap = norm(x).flatten(order="F")  # MATLAB aSub(:)
    fp = norm(y).flatten(order="F")
    ap = ap / ap.sum()
    fp = fp / fp.sum()
    ac = np.cumsum(ap)
    fc = np.cumsum(fp)
    at = ap - ap.mean()
    ft = fp - fp.mean()
    s = float(np.sum(at * ft))
    c = 0.0 if s == 0 else s / math.sqrt(np.sum(at * at) * np.sum(ft * ft))
    pos = np.arange(1, 10)
    a_sd = math.sqrt(max(np.sum(pos**2 * ap) - np.sum(pos * ap) ** 2, 0.0))
    f_sd = math.sqrt(max(np.sum(pos**2 * fp) - np.sum(pos * fp) ** 2, 0.0))
    if c >= 0:
        bound = lambda u, v: 0.5 * (u + v - abs(u - v))  # Frechet upper: min(u, v)
    else:
        bound = lambda u, v: 0.5 * (u + v - 1 + abs(u + v - 1))  # lower: max(u + v - 1, 0)
    if c == 0 or a_sd == 0 or f_sd == 0:
        phi = 0.0
    else:
        cov = sum(bound(fc[i], ac[j]) - fc[i] * ac[j] for i in range(9) for j in range(9))
        phi = c / (cov / (f_sd * a_sd))
    fc0 = np.concatenate([[0.0], fc])
    ac0 = np.concatenate([[0.0], ac])
    joint_entropy = 0.0
    for i in range(1, 10):
        for j in range(1, 10):
            u = (
                bound(fc0[i], ac0[j])
                - bound(fc0[i - 1], ac0[j])
                - bound(fc0[i], ac0[j - 1])
                + bound(fc0[i - 1], ac0[j - 1])
            )
            jp = phi * u + (1 - phi) * fp[i - 1] * ap[j - 1]
            if jp != 0:
                joint_entropy += -jp * math.log2(abs(jp))  # real(-jp * log2(jp))
    ha = -sum(p * math.log2(p) for p in ap if p != 0)
    hf = -sum(p * math.log2(p) for p in fp if p != 0)
    mi = ha + hf - joint_entropy
    return 0.0 if mi == 0 else 2 * mi / (ha + hf)


def _ref_fmi_c(x, y):
    def norm(p):
        mx, mn = p.max(), p.min()
        return np.ones((3, 3)) if mx == mn else (p - mn) / (mx - mn)

    ap = norm(x).flatten(order="F")
    fp = norm(y).flatten(order="F")
    ap, fp = ap / ap.sum(), fp / fp.sum()
    return float(np.sum((ap - ap.mean()) * (fp - fp.mean())))


def ref_fmi_dct(a, b, f, count_signs=False):
    fa, fb, ff = (dctn(x / 255.0, norm="ortho") for x in (a, b, f))
    m, n = a.shape
    vals, signs = [], [0, 0]
    for p in range(1, m - 1):
        for q in range(1, n - 1):
            sa, sb, sf = (x[p - 1 : p + 2, q - 1 : q + 2] for x in (fa, fb, ff))
            vals.append(0.5 * (_ref_patch_nmi(sa, sf) + _ref_patch_nmi(sb, sf)))
            if count_signs:
                for s in (sa, sb):
                    c = _ref_fmi_c(s, sf)
                    signs[0] += c < 0
                    signs[1] += c > 0
    return (float(np.mean(vals)), signs) if count_signs else float(np.mean(vals))


def _fspecial_gauss(size=11, sigma=1.5):
    x = np.arange(size) - (size - 1) / 2
    xx, yy = np.meshgrid(x, x)
    h = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    h[h < EPS * h.max()] = 0
    return h / h.sum()


def _filter2_same_replicate(img, h):
    r = h.shape[0] // 2
    p = np.pad(img, r, mode="edge")
    out = np.zeros_like(img)
    for u in range(h.shape[0]):
        for v in range(h.shape[1]):
            out += h[u, v] * p[u : u + img.shape[0], v : v + img.shape[1]]
    return out


def ref_matlab_ssim(x, y):
    """MATLAB ssim(x, y) for double images in [0, 1]: 2-D window, explicit shifted sums."""
    h = _fspecial_gauss()
    mx, my = _filter2_same_replicate(x, h), _filter2_same_replicate(y, h)
    sx = _filter2_same_replicate(x * x, h) - mx**2
    sy = _filter2_same_replicate(y * y, h) - my**2
    sxy = _filter2_same_replicate(x * y, h) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    return float(np.mean(num / ((mx**2 + my**2 + c1) * (sx + sy + c2))))


def ref_mef_ssim(seq, f):
    """mef_ssim.m (Ma et al.) line by line: per-pixel loops, 'valid' region."""
    window = _fspecial_gauss()
    s1, s2, s3 = seq.shape
    ws, bd = 11, 5
    sw = np.ones((ws, ws)) / ws**2
    hh, ww = s1 - 2 * bd, s2 - 2 * bd
    mu = np.zeros((hh, ww, s3))
    ed = np.zeros((hh, ww, s3))
    for k in range(s3):
        img = seq[:, :, k]
        for i in range(hh):
            for j in range(ww):
                blk = img[i : i + ws, j : j + ws]
                mu[i, j, k] = np.sum(sw * blk)
                var = np.sum(sw * blk * blk) - mu[i, j, k] ** 2
                ed[i, j, k] = math.sqrt(max(ws * ws * var, 0)) + 0.001
    big_r = np.zeros((hh, ww))
    for i in range(hh):
        for j in range(ww):
            vecs = seq[i : i + ws, j : j + ws, :].reshape(ws * ws, s3, order="F")
            den = sum(np.linalg.norm(vecs[:, k] - mu[i, j, k]) for k in range(s3))
            sv = vecs.sum(axis=1)
            num = np.linalg.norm(sv - sv.mean())
            big_r[i, j] = (num + EPS) / (den + EPS)
    big_r[big_r > 1] = 1 - EPS
    big_r[big_r < 0] = EPS
    p = np.tan(np.pi / 2 * big_r)
    p[p > 10] = 10
    wmap = (ed / ws) ** p[:, :, None] + EPS
    wmap = wmap / wmap.sum(axis=2, keepdims=True)
    max_ed = ed.max(axis=2)
    big_c = (0.03 * 255) ** 2
    q = np.zeros((hh, ww))
    for i in range(hh):
        for j in range(ww):
            blocks = seq[i : i + ws, j : j + ws, :]
            rb = np.zeros((ws, ws))
            for k in range(s3):
                rb = rb + wmap[i, j, k] * (blocks[:, :, k] - mu[i, j, k]) / ed[i, j, k]
            nr = np.linalg.norm(rb)
            if nr > 0:
                rb = rb / nr * max_ed[i, j]
            fb = f[i : i + ws, j : j + ws]
            m1, m2 = np.sum(window * rb), np.sum(window * fb)
            v1 = np.sum(window * (rb - m1) ** 2)
            v2 = np.sum(window * (fb - m2) ** 2)
            v12 = np.sum(window * (rb - m1) * (fb - m2))
            q[i, j] = (2 * v12 + big_c) / (v1 + v2 + big_c)
    return float(q.mean())


def _ref_down(x):
    # imfilter(x, ones(2)/4, 'symmetric', 'same'): centre (1,1) -> x(i..i+1, j..j+1); then 1:2:end
    xp = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    d = 0.25 * xp[:-1, :-1] + 0.25 * xp[1:, :-1] + 0.25 * xp[:-1, 1:] + 0.25 * xp[1:, 1:]
    return d[0::2, 0::2]


def ref_ms_ssim(a, b, f):
    w = np.array([0.0448, 0.2856, 0.3001])
    w = w / w.sum()
    q = []
    for lev in range(3):
        if lev:
            a, b, f = _ref_down(a), _ref_down(b), _ref_down(f)
        q.append(ref_mef_ssim(np.stack([a, b], axis=2), f))
    return float(np.prod(np.array(q) ** w))


# ---------------------------------------------------------------------------------------------
# Vectorised == loop reference


@pytest.mark.parametrize("seed,kind", [(0, "mixed"), (1, "smooth"), (2, "flat"), (3, "mixed")])
def test_fmi_dct_matches_loop_reference(seed, kind):
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(16, 25, size=2))
    a, b, f = _images(h, w, seed, kind)
    ref, signs = ref_fmi_dct(a, b, f, count_signs=True)
    assert _rel(paper.fmi_dct(a, b, f), ref) < 1e-10
    if kind == "mixed":  # both Frechet bounds (c < 0 and c > 0) are exercised
        assert signs[0] > 0 and signs[1] > 0


def test_fmi_dct_special_inputs_match_loop_reference():
    a, b, f = _images(12, 14, 7)
    cases = {
        "f=a": (a, b, a.copy()),
        "f=b": (a, b, b.copy()),
        "f=mean": (a, b, (a + b) / 2),
        "f=255-a": (a, b, 255 - a),
        "binary": ((a > 128) * 255.0, (b > 100) * 255.0, (f > 120) * 255.0),
        "f=a with one pixel changed": (a, b, a + (np.arange(a.size) == 17).reshape(a.shape)),
    }
    for name, (x, y, z) in cases.items():
        got, ref = paper.fmi_dct(x, y, z), ref_fmi_dct(x, y, z)
        assert abs(got - ref) <= 1e-10 * max(abs(ref), 1.0), name


def test_fmi_dct_constant_image_is_nan():
    # A constant image's DCT is zero apart from DC: fmi.m's window pdfs become rounding noise
    # (it returns noise or NaN); here: NaN.
    a, b, f = _images(12, 14, 7)
    for x, y, z in [
        (a, b, np.full_like(a, 77.0)),
        (np.full_like(a, 10.0), b, f),
        (np.full_like(a, 10.0), np.full_like(a, 100.0), np.full_like(a, 77.0)),
    ]:
        assert math.isnan(paper.fmi_dct(x, y, z))


def test_fmi_dct_near_one_hot_windows_stay_finite():
    # A horizontal ramp: its DCT is (up to rounding noise) non-zero in the first row only, so
    # most windows hold rounding noise and near-one-hot pdfs. No blow-up, no nan.
    a, b, f = _images(16, 18, 8)
    ramp = np.tile(np.arange(18) * 10.0, (16, 1))
    vramp = np.tile(np.arange(16)[:, None] * 12.0, (1, 18))
    for x, y, z in [(ramp, b, f), (a, b, ramp), (ramp, vramp, f), (ramp, vramp, ramp + vramp)]:
        v = paper.fmi_dct(x, y, z)
        assert 0.0 <= v <= 1.0


def test_fmi_dct_chunking_does_not_change_result(monkeypatch):
    a, b, f = _images(23, 19, 11)
    full = paper.fmi_dct(a, b, f)
    monkeypatch.setattr(paper, "_FMI_CHUNK", 7)  # chunks split window rows
    assert abs(paper.fmi_dct(a, b, f) - full) < 1e-13


@pytest.mark.parametrize("seed,kind", [(0, "mixed"), (1, "smooth"), (2, "flat")])
def test_mef_ssim_matches_loop_reference(seed, kind):
    rng = np.random.default_rng(200 + seed)
    h, w = (int(v) for v in rng.integers(16, 25, size=2))
    a, b, f = _images(h, w, seed, kind)
    ref = ref_mef_ssim(np.stack([a, b], axis=2), f)
    assert _rel(paper.mef_ssim(a, b, f), ref) < 1e-10


def test_mef_ssim_identical_sources_and_fractional_values():
    a, b, f = _images(17, 21, 5, "smooth")
    for x, y, z in [(a, a.copy(), f), (a, b, a.copy()), (a / 3.0, b * 0.7, f / 1.3)]:
        assert _rel(paper.mef_ssim(x, y, z), ref_mef_ssim(np.stack([x, y], axis=2), z)) < 1e-10


@pytest.mark.parametrize("shape,kind", [((44, 47), "mixed"), ((49, 45), "smooth")])
def test_ms_ssim_matches_loop_reference(shape, kind):
    a, b, f = _images(*shape, 9, kind)
    assert _rel(paper.ms_ssim(a, b, f), ref_ms_ssim(a, b, f)) < 1e-10


@pytest.mark.parametrize("shape", [(16, 16), (19, 23), (8, 8), (3, 5)])
def test_ssim_a_matches_matlab_ssim_reference(shape):
    a, b, f = _images(*shape, 4)
    ref = 0.5 * (ref_matlab_ssim(f / 255, a / 255) + ref_matlab_ssim(f / 255, b / 255))
    assert _rel(paper.ssim_a(a, b, f), ref) < 1e-10


def test_cc_scd_psnr_match_direct_formulas():
    a, b, f = _images(20, 30, 6)
    ra, rb = np.corrcoef(f.ravel(), a.ravel())[0, 1], np.corrcoef(f.ravel(), b.ravel())[0, 1]
    assert _rel(paper.cc(a, b, f), ra + rb) < 1e-12
    assert _rel(paper.cc_mean(a, b, f), (ra + rb) / 2) < 1e-12
    assert _rel(paper.scd(a, b, f), ref_corr2(f - b, a) + ref_corr2(f - a, b)) < 1e-12
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2
    assert _rel(paper.psnr(a, b, f), 10 * math.log10(255**2 / mse)) < 1e-12


# ---------------------------------------------------------------------------------------------
# Constructed cases with known answers


def test_fused_equals_a_source():
    a, b, _ = _images(48, 50, 12, "smooth")
    r_ab = ref_corr2(a, b)
    assert _rel(paper.cc(a, b, a), 1 + r_ab) < 1e-12
    assert _rel(paper.cc_mean(a, b, a), (1 + r_ab) / 2) < 1e-12
    assert math.isnan(paper.scd(a, b, a))  # F - A == 0: correlation undefined
    assert math.isnan(paper.scd(a, b, b))
    assert math.isnan(paper.scd(a, b, b + 10.5))  # F - B constant
    mse_ab = np.mean((a - b) ** 2)
    assert _rel(paper.psnr(a, b, a), 10 * math.log10(255**2 / (mse_ab / 2))) < 1e-12
    assert _rel(paper.ssim_a(a, b, a), 0.5 * (1 + ref_matlab_ssim(a / 255, b / 255))) < 1e-10
    # FMI: NMI(A, F) = 1 in every window, so the score is (1 + mean NMI(B, A)) / 2 < 1.
    v = paper.fmi_dct(a, b, a)
    assert 0.5 < v < 1
    assert _rel(paper.fmi_dct(b, a, a), v) < 1e-12


def test_fused_equals_both_sources():
    a, _, _ = _images(48, 52, 13, "smooth")
    assert paper.fmi_dct(a, a, a) == 1.0
    assert _rel(paper.ssim_a(a, a, a), 1.0) < 1e-12
    assert paper.psnr(a, a, a) == math.inf
    assert _rel(paper.cc(a, a, a), 2.0) < 1e-12
    # Desired structure == the source's (up to the +0.001 in the norms): MEF-SSIM ~ 1.
    assert abs(paper.ms_ssim(a, a, a) - 1.0) < 1e-6
    assert abs(paper.mef_ssim(a, a, a) - 1.0) < 1e-6


def test_fused_is_source_mean():
    a, b, _ = _images(46, 50, 14)
    f = (a + b) / 2
    assert _rel(paper.scd(a, b, f), ref_corr2((a - b) / 2, a) + ref_corr2((b - a) / 2, b)) < 1e-12
    # MSE(F, A) = MSE(F, B) = MSE(A, B) / 4
    assert _rel(paper.psnr(a, b, f), 10 * math.log10(255**2 * 4 / np.mean((a - b) ** 2))) < 1e-12
    r = ref_corr2(f, a) + ref_corr2(f, b)
    assert _rel(paper.cc(a, b, f), r) < 1e-12
    assert 0 < paper.ms_ssim(a, b, f) < 1
    assert 0 < paper.fmi_dct(a, b, f) < 1


def test_constant_images():
    a, b, f = _images(48, 48, 15)
    c = np.full_like(a, 100.0)
    assert math.isnan(paper.cc(a, b, c)) and math.isnan(paper.cc_mean(a, b, c))
    assert math.isnan(paper.cc(c, b, f))
    assert math.isnan(paper.scd(c, b, f))  # r(F - B, A) with constant A
    c2 = np.full_like(a, 50.0)
    assert _rel(paper.psnr(c, c, c2), 10 * math.log10(255**2 / 2500)) < 1e-12
    # All constant: SSIM is the luminance term only; MEF-SSIM is C / C = 1; FMI: identical raw
    # patches give 1.
    l_term = (2 * (100 / 255) * (50 / 255) + 1e-4) / ((100 / 255) ** 2 + (50 / 255) ** 2 + 1e-4)
    assert _rel(paper.ssim_a(c, c, c2), l_term) < 1e-12
    assert _rel(paper.ssim_a(c, c, c), 1.0) < 1e-15
    assert paper.ms_ssim(c, c, c) == 1.0
    assert paper.ms_ssim(c, c2, c) == 1.0
    assert math.isnan(paper.fmi_dct(c, c, c))
    for name in ALL:  # constant fused image: a number or nan, never an exception
        v = getattr(paper, name)(a, b, c)
        assert isinstance(v, float)
    # Constant F against structured sources: desired structure has energy, F has none.
    assert 0 < paper.ms_ssim(a, b, c) < 1


def test_tiny_images():
    a, b, f = _images(8, 8, 16)
    for name in ("cc", "cc_mean", "scd", "psnr", "ssim_a", "fmi_dct"):
        assert math.isfinite(getattr(paper, name)(a, b, f)), name
    assert _rel(paper.fmi_dct(a, b, f), ref_fmi_dct(a, b, f)) < 1e-10
    assert math.isnan(paper.mef_ssim(a, b, f))  # smaller than the 11x11 window
    assert math.isnan(paper.ms_ssim(a, b, f))  # coarsest scale smaller than the window
    a43, b43, f43 = _images(43, 60, 17)  # min side 43 < 4 * 11
    assert math.isnan(paper.ms_ssim(a43, b43, f43))
    assert math.isfinite(paper.ms_ssim(*_images(44, 60, 17)))
    a2, b2, f2 = _images(2, 9, 18)
    assert math.isnan(paper.fmi_dct(a2, b2, f2))
    assert math.isfinite(paper.fmi_dct(*_images(3, 3, 18)))
    one = np.array([[5.0]])
    assert math.isfinite(paper.ssim_a(one, one, one + 1))


def test_symmetries_and_invariances():
    a, b, f = _images(48, 53, 19, "smooth")
    for name in ALL:  # A and B play symmetric roles in every metric
        fn = getattr(paper, name)
        assert _rel(fn(b, a, f), fn(a, b, f)) < 1e-12, name
    # CC is invariant to positive affine maps of F and flips sign with a negative one.
    assert _rel(paper.cc(a, b, 0.5 * f + 10), paper.cc(a, b, f)) < 1e-12
    assert _rel(paper.cc(a, b, 255 - f), -paper.cc(a, b, f)) < 1e-12
    # FMI_dct: the DCT is linear and the window normalisation is affine-invariant.
    assert _rel(paper.fmi_dct(a, b, 2.0 * f), paper.fmi_dct(a, b, f)) < 1e-10
    # SSIM is symmetric in its two arguments.
    assert _rel(paper.ssim_a(f, f, a), ref_matlab_ssim(a / 255, f / 255)) < 1e-10


def test_dtype_and_input_checks():
    a, b, f = _images(48, 50, 20)
    a8, b8, f8 = (x.astype(np.uint8) for x in (a, b, f))
    for name in ALL:
        fn = getattr(paper, name)
        v = fn(a8, b8, f8)
        assert isinstance(v, float)
        assert _rel(v, fn(a, b, f)) < 1e-14, name
    with pytest.raises(ValueError, match="shape"):
        paper.cc(a, b, f[:-1])
    with pytest.raises(ValueError, match="2-D"):
        paper.ssim_a(a, b, np.stack([f, f, f], axis=-1))


def test_nan_cases_emit_no_warnings(recwarn):
    a, b, f = _images(48, 48, 21)
    c = np.full_like(a, 3.0)
    for name in ALL:
        getattr(paper, name)(a, b, a)
        getattr(paper, name)(c, c, f)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# ---------------------------------------------------------------------------------------------
# Reproduction of published MATLAB toolbox values

TNO_METHODS = ("DenseFuse", "FusionGAN", "IFCNN", "RFN-Nest", "SDNet", "U2Fusion")


def _gray(path):
    return to_gray(read_image(path)).astype(np.float64)


@pytest.mark.data
def test_tno42_reference_csv_cc_scd_psnr():
    """The toolbox's CC is cc_mean, PSNR = psnr + 20 log10(255), MSE on [0, 1]: to 1e-4
    relative (in practice ~1e-13) for every image of every method with fused outputs here."""
    root = shared_data("peers", "tno42")
    tno = shared_data("tno")
    ref = {}
    with open(root / "reference_metrics_Metric_TNO.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            ref[(row["image"], row["method"], row["metric"])] = float(row["value"])
    worst = {}
    checked = 0
    for i in range(1, 43):
        name = f"{i:02d}.png"
        a = _gray(tno / "ir" / name)
        b = _gray(tno / "vis" / name)
        for method in TNO_METHODS:
            fp = root / method / name
            if not fp.exists() or (name, method, "CC") not in ref:
                continue
            f = _gray(fp)
            p = paper.psnr(a, b, f)
            got = {
                "CC": paper.cc_mean(a, b, f),
                "SCD": paper.scd(a, b, f),
                "PSNR": p + paper.PSNR_TOOLBOX_OFFSET,
                "MSE": 10 ** (-p / 10),
            }
            if i <= 3:  # the paper's CC is the sum form
                assert _rel(paper.cc(a, b, f), 2 * got["CC"]) < 1e-12
            for k, v in got.items():
                e = _rel(v, ref[(name, method, k)])
                worst[k] = max(worst.get(k, 0.0), e)
            checked += 1
    assert checked >= 200, checked
    assert max(worst.values()) < 1e-4, worst


@pytest.mark.data
def test_vifb_ssim_column_matches_ssim_core():
    """VIFB's "Ssim" = SSIM_valid(vis, F) + SSIM_valid(IR, F) (Wang's ssim_index: 'valid'
    window, L = 255; per RGB channel, averaged) -- a different definition from SSIM_a, but it
    checks the shared SSIM core (window, constants) against MATLAB output (4 decimals)."""
    root = shared_data("peers", "vifb")
    ref = {}
    with open(root / "vifb_metrics_single.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["metric"] == "Ssim":
                ref[(row["image"], row["method"])] = float(row["value"])
    checked = 0
    for image in ("carLight", "fight", "kettle"):
        vis = read_image(root / "inputs" / "vis" / f"{image}.jpg").astype(np.float64)
        ir = read_image(root / "inputs" / "ir" / f"{image}.jpg").astype(np.float64)
        for method in ("ADF", "CBF", "GFCE", "U2Fusion"):
            fp = root / method / f"{image}_{method}.jpg"
            if (image, method) not in ref or not fp.exists():
                continue
            fu = read_image(fp).astype(np.float64)
            if fu.ndim == 2 or vis.ndim == 2 or ir.ndim == 2:
                continue  # only the all-RGB layout is reproduced here
            v = np.mean(
                [
                    paper._ssim_mean(vis[..., k], fu[..., k], 255.0, "valid")
                    + paper._ssim_mean(ir[..., k], fu[..., k], 255.0, "valid")
                    for k in range(3)
                ]
            )
            assert abs(v - ref[(image, method)]) <= 5.1e-5, (image, method, v)
            checked += 1
    assert checked >= 6
