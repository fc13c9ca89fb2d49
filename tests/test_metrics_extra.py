"""EN, SD, SF, AG, MI, VIF, Qabf (patchfuse_jax.eval.metrics.extra).

* Reference values: Linfeng Tang's MATLAB toolbox (shared/data/peers/tno42/
  reference_metrics_Metric_TNO.csv) and VIFB (shared/data/peers/vifb/vifb_metrics_single.csv);
  skipped when the data is absent. The full VIF/Qabf TNO sweep and the full VIFB sweep are
  ``slow``.
* Constructed images with known answers, tiny images, NaN cases.
* Loop-based float64 references (literal translations of the MATLAB sources) for MI, VIF and
  Qabf, matched to 1e-10 on small images.
"""

from __future__ import annotations

import csv
import functools
import math

import numpy as np
import pytest

from patchfuse_jax.eval.metrics import extra as X
from patchfuse_jax.io import read_image, to_gray
from tests.conftest import shared_data

ALL = ("en", "sd", "sf", "ag", "mi", "vif", "qabf")
C = X.QABF_CONSTANTS


def _rel(v: float, r: float) -> float:
    return abs(v - r) / abs(r)


# ------------------------------------------------------------------ Tang toolbox reference CSV

TANG_METHODS = ("DenseFuse", "FusionGAN", "IFCNN", "RFN-Nest", "SDNet", "U2Fusion")  # in CSV and on disk
TNO_IMAGES = tuple(f"{i:02d}.png" for i in range(1, 43))
# Default subset: images where the toolbox quirks matter most (MI: levels 254/255; Qabf: rounding
# noise up to 3 %, equal gradients) plus two plain ones.
TNO_SUBSET = ("03.png", "07.png", "13.png", "41.png")


@functools.lru_cache(maxsize=None)
def _tang_ref() -> dict:
    path = shared_data("peers", "tno42", "reference_metrics_Metric_TNO.csv")
    with open(path, newline="") as fh:
        return {(r["image"], r["method"], r["metric"]): float(r["value"]) for r in csv.DictReader(fh)}


@functools.lru_cache(maxsize=128)
def _gray_file(path: str) -> np.ndarray:
    return to_gray(read_image(path))


def _tno_triple(image: str, method: str):
    a = _gray_file(str(shared_data("tno", "ir", image)))
    b = _gray_file(str(shared_data("tno", "vis", image)))
    f = _gray_file(str(shared_data("peers", "tno42", method, image)))
    return a, b, f


def _sd_toolbox_uint8(f: np.ndarray) -> float:
    """The CSV's SD column: Tang's SD_evaluation.m run on the uint8 image, where ``F - u`` saturates
    to 0..255 (negatives -> 0, rounded) and ``.^2`` saturates at 255."""
    u = f.astype(np.float64).mean()
    d = np.clip(np.floor(f - u + 0.5), 0, 255)
    return math.sqrt(np.minimum(d * d, 255.0).sum() / f.size)


@pytest.mark.data
@pytest.mark.parametrize("method", TANG_METHODS)
def test_tang_csv_en_mi_ag_sf_sd_all_images(method):
    ref = _tang_ref()
    worst = {}
    for image in TNO_IMAGES:
        a, b, f = _tno_triple(image, method)
        got = {
            "EN": X.en(a, b, f),
            "MI": X.mi(a, b, f),
            "AG": X.ag(a, b, f),  # the AG column is on 0..255: reproduced as is
            "SF": X.sf(a, b, f) / 255.0,  # the SF column is on [0, 1]
            "SD": _sd_toolbox_uint8(f),  # the SD column is a uint8-saturation artefact
        }
        for k, v in got.items():
            worst[k] = max(worst.get(k, 0.0), _rel(v, ref[(image, method, k)]))
    assert worst["EN"] < 1e-10 and worst["MI"] < 1e-10, worst
    assert worst["AG"] < 1e-10 and worst["SF"] < 1e-10 and worst["SD"] < 1e-12, worst


def _check_vif_qabf(images, method):
    ref = _tang_ref()
    for image in images:
        a, b, f = _tno_triple(image, method)
        for key, fn in (("VIF", X.vif), ("Qabf", X.qabf)):
            r = ref[(image, method, key)]
            assert _rel(fn(a, b, f), r) < 1e-4, (image, method, key, fn(a, b, f), r)


@pytest.mark.data
@pytest.mark.parametrize("method", TANG_METHODS)
def test_tang_csv_vif_qabf_subset(method):
    _check_vif_qabf(TNO_SUBSET, method)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("method", TANG_METHODS)
def test_tang_csv_vif_qabf_all_images(method):
    _check_vif_qabf([i for i in TNO_IMAGES if i not in TNO_SUBSET], method)


@pytest.mark.data
def test_tang_csv_needs_compat_quirks():
    """compat=False (textbook) misses the CSV where the quirks bite."""
    ref = _tang_ref()
    a, b, f = _tno_triple("41.png", "IFCNN")  # IFCNN copies the visible edges: Qabf off by 3 %
    assert _rel(X.qabf(a, b, f, compat=False), ref[("41.png", "IFCNN", "Qabf")]) > 0.02
    assert _rel(X.vif(a, b, f, compat=False), ref[("41.png", "IFCNN", "VIF")]) > 0.05
    a, b, f = _tno_triple("03.png", "SDNet")  # sources and fused hold levels 254 and 255
    assert _rel(X.mi(a, b, f, compat=False), ref[("03.png", "SDNet", "MI")]) > 0.01


# --------------------------------------------------------------------------------- VIFB CSV

# The SwinFusion and YDTR files in peers/vifb are not the ones VIFB scored (even EN differs).
VIFB_SKIP = ("SwinFusion", "YDTR")
VIFB_DEFAULT_METHODS = ("IFCNN",)


@functools.lru_cache(maxsize=None)
def _vifb_ref() -> dict:
    path = shared_data("peers", "vifb", "vifb_metrics_single.csv")
    with open(path, newline="") as fh:
        return {(r["image"], r["method"], r["metric"]): float(r["value"]) for r in csv.DictReader(fh)}


def _rgb(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 3 else np.stack([x] * 3, axis=-1)


def _check_vifb(methods):
    """VIFB scores RGB images channel by channel (mean of 3); values stored to 5 significant digits."""
    ref = _vifb_ref()
    images = sorted({k[0] for k in ref})
    n = 0
    for image in images:
        vis = _rgb(read_image(shared_data("peers", "vifb", "inputs", "vis", f"{image}.jpg")))
        ir = _rgb(read_image(shared_data("peers", "vifb", "inputs", "ir", f"{image}.jpg")))
        for m in methods:
            fused = _rgb(read_image(shared_data("peers", "vifb", m, f"{image}_{m}.jpg")))
            ch = [(vis[..., k], ir[..., k], fused[..., k]) for k in range(3)]
            got = {
                "Entropy": np.mean([X.en(*t) for t in ch]),
                "Avg_gradient": np.mean([X.ag(*t) for t in ch]),
                "Variance": np.mean([X.sd(*t) for t in ch]),  # VIFB's "Variance" is the SD
                "Mutinf": math.log(2) * np.mean([X.mi(*t, compat=False) for t in ch]),  # nats
            }
            for k, v in got.items():
                r = ref[(image, m, k)]
                half_digit = 0.5 * 10.0 ** (math.floor(math.log10(abs(r))) - 4)
                assert abs(v - r) <= 1.01 * half_digit, (image, m, k, v, r)
            q = np.mean([X.qabf(*t, compat=False) for t in ch])
            assert _rel(q, ref[(image, m, "Qabf")]) < 1e-3, (image, m, q)  # VIFB: G = g_F * 255 if equal
            n += 1
    assert n > 0


@pytest.mark.data
def test_vifb_csv_subset():
    _check_vifb(VIFB_DEFAULT_METHODS)


@pytest.mark.data
@pytest.mark.slow
def test_vifb_csv_all_methods():
    ref = _vifb_ref()
    methods = sorted({k[1] for k in ref} - set(VIFB_SKIP) - set(VIFB_DEFAULT_METHODS))
    methods = [m for m in methods if shared_data("peers", "vifb").joinpath(m).is_dir()]
    _check_vifb(methods)


# ---------------------------------------------------------------------- loop-based references


def _conv2_same_loops(x: np.ndarray, h) -> np.ndarray:
    """MATLAB conv2(x, h, 'same') for a 3x3 h, kernel entries accumulated column-major."""
    rows, cols = x.shape
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            acc = 0.0
            for l in range(3):
                for k in range(3):
                    ii, jj = i + 1 - k, j + 1 - l
                    if h[k][l] != 0 and 0 <= ii < rows and 0 <= jj < cols:
                        acc = acc + h[k][l] * float(x[ii, jj])
            out[i, j] = acc
    return out


def _qabf_loops(a, b, f, compat: bool) -> float:
    """analysis_Qabf.m, pixel by pixel (compat: x/255 and G = gF where gA == gF)."""
    h1 = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    h3 = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    imgs = [np.asarray(x, dtype=np.float64) / (255.0 if compat else 1.0) for x in (a, b, f)]
    g, al = [], []
    for x in imgs:
        sx, sy = _conv2_same_loops(x, h3), _conv2_same_loops(x, h1)
        gx, ax = np.zeros(x.shape), np.zeros(x.shape)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                gx[i, j] = math.sqrt(sx[i, j] ** 2 + sy[i, j] ** 2)
                ax[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        g.append(gx)
        al.append(ax)
    num = den = 0.0
    for s in (0, 1):
        for i in range(f.shape[0]):
            for j in range(f.shape[1]):
                gs, gf = g[s][i, j], g[2][i, j]
                if gs > gf:
                    G = gf / gs
                elif gs == gf:
                    G = gf if compat else 1.0
                else:
                    G = gs / gf
                A = 1 - abs(al[s][i, j] - al[2][i, j]) / (math.pi / 2)
                Q = (
                    C["Tg"]
                    / (1 + math.exp(C["kg"] * (G - C["Dg"])))
                    * C["Ta"]
                    / (1 + math.exp(C["ka"] * (A - C["Da"])))
                )
                num += Q * gs
                den += gs
    return num / den


def _fspecial_gaussian(n: int) -> np.ndarray:
    s, r = n / 5.0, (n - 1) / 2.0
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    h = np.exp(-(x * x + y * y) / (2 * s * s))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _filter2_valid_loops(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = w.shape[0]
    out = np.zeros((max(x.shape[0] - n + 1, 0), max(x.shape[1] - n + 1, 0)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(w * x[i : i + n, j : j + n])
    return out


def _vifp_loops(ref, dist, saturate: bool) -> float:
    """vifp_mscale.m with full 2-D windows and the masks applied pixel by pixel, in order."""
    ref, dist = np.asarray(ref, np.float64), np.asarray(dist, np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        w = _fspecial_gaussian(2 ** (4 - scale + 1) + 1)
        if scale > 1:
            ref = _filter2_valid_loops(w, ref)[::2, ::2]
            dist = _filter2_valid_loops(w, dist)[::2, ::2]
        rr, dd, rd = ref * ref, dist * dist, ref * dist
        if saturate and scale == 1:
            rr, dd, rd = np.minimum(rr, 255), np.minimum(dd, 255), np.minimum(rd, 255)
        mu1, mu2 = _filter2_valid_loops(w, ref), _filter2_valid_loops(w, dist)
        v1 = _filter2_valid_loops(w, rr) - mu1 * mu1
        v2 = _filter2_valid_loops(w, dd) - mu2 * mu2
        c12 = _filter2_valid_loops(w, rd) - mu1 * mu2
        for i in range(mu1.shape[0]):
            for j in range(mu1.shape[1]):
                s1, s2, s12 = max(v1[i, j], 0.0), max(v2[i, j], 0.0), c12[i, j]
                g = s12 / (s1 + 1e-10)
                sv = s2 - g * s12
                if s1 < 1e-10:
                    g, sv, s1 = 0.0, s2, 0.0
                if s2 < 1e-10:
                    g, sv = 0.0, 0.0
                if g < 0:
                    sv, g = s2, 0.0
                if sv <= 1e-10:
                    sv = 1e-10
                num += math.log10(1 + g * g * s1 / (sv + 2.0))
                den += math.log10(1 + s1 / 2.0)
    return num / den


def _entropy_loops(counts: dict, n: int) -> float:
    return -sum((c / n) * math.log2(c / n) for c in counts.values() if c)


def _mi_loops(a, b, f, compat: bool) -> float:
    """MI_evaluation: H(X) + H(F) - H(X, F), Hab.m's joint histogram (uint8 + 1 saturates)."""

    def hist(x):
        h = {}
        for v in x.ravel().tolist():
            h[v] = h.get(v, 0) + 1
        return h

    total = 0.0
    for x in (a, b):
        joint = {}
        for u, v in zip(x.ravel().tolist(), f.ravel().tolist()):
            if compat:
                u, v = min(u + 1, 255), min(v + 1, 255)
            joint[(u, v)] = joint.get((u, v), 0) + 1
        total += _entropy_loops(hist(x), x.size) + _entropy_loops(hist(f), f.size) - _entropy_loops(joint, x.size)
    return total


def _test_images(shape, seed):
    """Random uint8 triples with flat areas, saturated areas and pure horizontal edges."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = rng.integers(0, 256, shape).astype(np.uint8)
    f = ((a.astype(np.int32) + b) // 2).astype(np.uint8)
    r, c = shape
    a[: r // 3, : c // 3] = 77  # flat
    b[r // 2 :, : c // 2] = 255  # saturated
    f[: r // 3, : c // 3] = 77  # F copies A there: equal gradients
    k = min(4, r)
    f[-k:, :] = np.repeat(rng.integers(0, 256, (k, 1)), c, axis=1).astype(np.uint8)  # horizontal edges
    a[-k:, :] = f[-k:, :] // 2 + 3
    return a, b, f


@pytest.mark.parametrize("compat", [True, False])
@pytest.mark.parametrize("shape,seed", [((9, 11), 0), ((14, 13), 1), ((1, 5), 2), ((3, 3), 3)])
def test_qabf_matches_loop_reference(shape, seed, compat):
    a, b, f = _test_images(shape, seed)
    want = _qabf_loops(a, b, f, compat)
    assert X.qabf(a, b, f, compat=compat) == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_qabf_compat_rounding_noise_is_reproduced():
    """Pure horizontal edges on x/255: sx is +-1e-17, not 0, in MATLAB's summation order."""
    a, b, f = _test_images((14, 13), 1)
    sx, _ = X._sobel(f / 255.0)
    sx_exact, _ = X._sobel(f.astype(np.float64))
    noisy = (sx != 0) & (sx_exact == 0)
    assert noisy.any()
    assert np.array_equal(sx, _conv2_same_loops(f / 255.0, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]))


@pytest.mark.parametrize("compat", [True, False])
@pytest.mark.parametrize("shape,seed", [((45, 48), 0), ((41, 41), 1), ((30, 52), 2)])
def test_vif_matches_loop_reference(shape, seed, compat):
    rng = np.random.default_rng(seed)
    a, b, f = _test_images(shape, seed)
    a = np.where(rng.random(shape) < 0.3, rng.integers(0, 16, shape), a).astype(
        np.uint8
    )  # dark: scale-1 survives saturation
    want = _vifp_loops(a, f, compat) + _vifp_loops(b, f, compat)
    assert X.vif(a, b, f, compat=compat) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("compat", [True, False])
def test_mi_matches_loop_reference(compat):
    a, b, f = _test_images((23, 19), 4)
    assert X.mi(a, b, f, compat=compat) == pytest.approx(_mi_loops(a, b, f, compat), rel=1e-12)


# ------------------------------------------------------------------ constructed, known answers


def _checker(m, n, lo=0, hi=255):
    return np.where((np.arange(m)[:, None] + np.arange(n)[None, :]) % 2 == 0, lo, hi).astype(np.uint8)


def test_constant_images():
    c = np.full((32, 40), 100, np.uint8)
    z = np.zeros((32, 40), np.uint8)
    for fn in (X.en, X.sd, X.sf, X.ag):
        assert fn(c, c, c) == 0.0
    assert X.mi(c, c, c) == 0.0 and X.mi(c, c, c, compat=False) == 0.0
    assert math.isnan(X.vif(c, c, c)) and math.isnan(X.vif(c, c, c, compat=False))  # no source variance
    assert math.isnan(X.qabf(z, z, c)) and math.isnan(X.qabf(z, z, c, compat=False))  # no source edges
    # A constant non-zero image still has edges at the zero-padded border.
    q1 = C["Tg"] / (1 + math.exp(C["kg"] * (1 - C["Dg"])))
    q2 = C["Ta"] / (1 + math.exp(C["ka"] * (1 - C["Da"])))
    assert X.qabf(c, c, c, compat=False) == pytest.approx(q1 * q2, rel=1e-14)


def test_constant_fused_has_zero_information():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (20, 30)).astype(np.uint8)
    b = rng.integers(0, 200, (20, 30)).astype(np.uint8)
    c = np.full((20, 30), 9, np.uint8)
    assert X.en(a, b, c) == 0.0
    assert X.mi(a, b, c) == pytest.approx(0.0, abs=1e-12)
    assert X.vif(a, b, c, compat=False) == pytest.approx(0.0, abs=1e-12)


def test_checkerboard_known_values():
    m, n = 10, 12
    f = _checker(m, n)
    assert X.en(None, None, f) == pytest.approx(1.0, rel=1e-15)
    assert X.sd(None, None, f) == pytest.approx(127.5, rel=1e-15)
    assert X.sf(None, None, f) == pytest.approx(255 * math.sqrt(2), rel=1e-15)
    # Central differences vanish inside; only the one-sided border differences (+-255) remain.
    border = 4 * 255 + 2 * (m - 2 + n - 2) * 255 / math.sqrt(2)
    assert X.ag(None, None, f) == pytest.approx(border / ((m - 1) * (n - 1)), rel=1e-14)


def test_ramp_known_values():
    m, n, step = 7, 16, 5
    f = np.tile(np.arange(n) * step, (m, 1)).astype(np.uint8)  # 0, 5, ..., 75 along each row
    assert X.en(None, None, f) == pytest.approx(math.log2(n), rel=1e-15)
    assert X.sd(None, None, f) == pytest.approx(step * math.sqrt((n * n - 1) / 12), rel=1e-14)
    assert X.sf(None, None, f) == pytest.approx(step, rel=1e-15)
    assert X.ag(None, None, f) == pytest.approx(m * n * step / math.sqrt(2) / ((m - 1) * (n - 1)), rel=1e-14)
    assert X.sf(None, None, f.T) == pytest.approx(step, rel=1e-15)  # SF and AG are isotropic
    assert X.ag(None, None, f.T) == pytest.approx(X.ag(None, None, f), rel=1e-15)


def test_en_two_levels():
    f = np.zeros((8, 8), np.uint8)
    f[:2] = 200  # p = 1/4, 3/4
    assert X.en(None, None, f) == pytest.approx(-(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75)), rel=1e-15)


def test_mi_symmetry_and_self_information():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 250, (30, 33)).astype(np.uint8)
    b = rng.integers(0, 250, (30, 33)).astype(np.uint8)
    f = rng.integers(0, 250, (30, 33)).astype(np.uint8)
    for compat in (True, False):
        assert X.mi(a, b, f, compat=compat) == X.mi(b, a, f, compat=compat)
        assert X.mi(a, a, a, compat=compat) == pytest.approx(2 * X.en(a, a, a), rel=1e-13)
        # F = A: MI(A, F) = H(A)
        assert X.mi(a, b, a, compat=compat) == pytest.approx(
            X.en(a, a, a) + X.mi(b, b, a, compat=compat) / 2, rel=1e-13
        )
        assert X.mi(a, b, f, compat=compat) >= 0


def test_mi_compat_merges_254_and_255_in_the_joint_histogram():
    a = np.array([[254, 255], [254, 255]], np.uint8)  # H(A) = 1 bit
    assert X.mi(a, a, a, compat=False) == pytest.approx(2.0)
    assert X.mi(a, a, a) == pytest.approx(4.0)  # H(A, A) counted as 0 bits: 1 + 1 - 0 per pair
    c = np.full((2, 2), 255, np.uint8)
    assert X.mi(a, a, c) == pytest.approx(2.0)  # a constant F "shares" one bit with each source


def test_vif_identity_and_tiny_images():
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, (48, 50)).astype(np.uint8)
    b = rng.integers(0, 256, (48, 50)).astype(np.uint8)
    for compat in (True, False):
        assert X.vif(a, a, a, compat=compat) == pytest.approx(2.0, rel=1e-8)
        assert X.vif(a, b, a, compat=compat) == pytest.approx(1.0 + X.vif(b, b, a, compat=compat) / 2, rel=1e-8)
    # Fewer than 17 x 17 pixels: no valid scale-1 window, VIF undefined; 17 x 17: one scale only.
    assert math.isnan(X.vif(a[:16, :40], b[:16, :40], a[:16, :40]))
    assert math.isnan(X.vif(a[:8, :8], b[:8, :8], b[:8, :8]))
    assert np.isfinite(X.vif(a[:17, :17], b[:17, :17], b[:17, :17], compat=False))


def test_qabf_identity():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 11, (20, 24)).astype(np.uint8)  # weak edges (< 0.5 on [0, 1]), as in real images
    b = rng.integers(0, 11, (20, 24)).astype(np.uint8)
    q1 = C["Tg"] / (1 + math.exp(C["kg"] * (1 - C["Dg"])))
    q2 = C["Ta"] / (1 + math.exp(C["ka"] * (1 - C["Da"])))
    assert X.qabf(a, a, a, compat=False) == pytest.approx(q1 * q2, rel=1e-14)
    # compat: "G = gF" on [0, 1] where gA == gF, so copying a source scores far lower.
    assert X.qabf(a, b, a) < 0.5 * X.qabf(a, b, a, compat=False)
    assert 0.0 <= X.qabf(a, b, b) <= 1.0


def test_tiny_8x8_behaviour():
    rng = np.random.default_rng(8)
    a, b, f = (rng.integers(0, 256, (8, 8)).astype(np.uint8) for _ in range(3))
    for name in ("en", "sd", "sf", "ag", "mi", "qabf"):
        assert np.isfinite(getattr(X, name)(a, b, f)), name
    assert math.isnan(X.vif(a, b, f))
    one = np.full((1, 1), 50, np.uint8)
    assert X.en(one, one, one) == 0.0 and X.sd(one, one, one) == 0.0 and X.mi(one, one, one) == 0.0
    for name in ("sf", "ag", "vif", "qabf"):  # no neighbour: SF/AG undefined; 1x1 Sobel is 0
        assert math.isnan(getattr(X, name)(one, one, one)), name


def test_float_input_equals_uint8_input():
    a, b, f = _test_images((45, 47), 9)
    fa, fb, ff = (x.astype(np.float64) for x in (a, b, f))
    for name in ALL:
        fn = getattr(X, name)
        assert fn(fa, fb, ff) == fn(a, b, f), name
    # compat quantises float input to uint8 levels (the toolbox reads 8-bit files).
    assert X.vif(a, b, ff + 0.3) == X.vif(a, b, f)
    assert X.qabf(a, b, ff - 0.4) == X.qabf(a, b, f)
    assert X.vif(a, b, ff + 0.3, compat=False) != X.vif(a, b, f, compat=False)


def test_scale_behaviour():
    a, b, f = _test_images((45, 47), 10)
    fa, fb, ff = (x.astype(np.float64) for x in (a, b, f))
    assert X.sd(None, None, 0.5 * ff) == pytest.approx(0.5 * X.sd(None, None, ff), rel=1e-14)
    assert X.sf(None, None, 0.5 * ff) == pytest.approx(0.5 * X.sf(None, None, ff), rel=1e-14)
    assert X.ag(None, None, 0.5 * ff) == pytest.approx(0.5 * X.ag(None, None, ff), rel=1e-14)


def test_returns_python_float_and_bounds():
    a, b, f = _test_images((45, 47), 11)
    for name in ALL:
        v = getattr(X, name)(a, b, f)
        assert type(v) is float, name
        assert v >= 0, name
    for compat in (True, False):
        assert 0 <= X.qabf(a, b, f, compat=compat) <= 1


def test_bad_input():
    z = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="2-D"):
        X.en(z, z, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        X.mi(z, np.zeros((8, 9), np.uint8), z)
    nan = np.full((20, 20), np.nan)
    zz = np.zeros((20, 20))
    for name in ALL:
        assert math.isnan(getattr(X, name)(zz, zz, nan)), name
    with pytest.raises(ValueError, match="empty"):
        X.en(None, None, np.zeros((0, 5)))
