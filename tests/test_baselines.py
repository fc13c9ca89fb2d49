"""Classical fusion baselines: ranges, exact cases, guided filter against a loop reference."""

import numpy as np
import pytest

from patchfuse_jax.eval import baselines as bl


def _pair(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((h, w)), rng.random((h, w))


@pytest.mark.parametrize("name", sorted(bl.BASELINES))
def test_shape_dtype_and_range(name):
    ir, vis = _pair()
    f = bl.BASELINES[name](ir, vis)
    assert f.shape == ir.shape and f.dtype == np.float64
    assert np.all(np.isfinite(f)) and f.min() >= 0.0 and f.max() <= 1.0


@pytest.mark.parametrize("name", sorted(bl.BASELINES))
def test_rejects_mismatched_sizes(name):
    with pytest.raises(ValueError, match="one size"):
        bl.BASELINES[name](np.zeros((8, 8)), np.zeros((8, 9)))


def test_average_and_max_exact():
    ir, vis = _pair()
    np.testing.assert_array_equal(bl.average(ir, vis), (ir + vis) / 2)
    np.testing.assert_array_equal(bl.maximum(ir, vis), np.maximum(ir, vis))


@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (9, 300), (5, 5)])
def test_laplacian_pyramid_identity(shape):
    img = np.random.default_rng(1).random(shape)
    np.testing.assert_allclose(bl.laplacian_pyramid(img, img), img, atol=1e-12)
    pyr = bl.laplacian_pyramid_decompose(img, bl.max_levels(shape))
    np.testing.assert_allclose(bl.laplacian_pyramid_reconstruct(pyr), img, atol=1e-12)


def test_laplacian_pyramid_levels_capped():
    assert bl.max_levels((64, 64)) == 3  # 64 -> 32 -> 16 -> 8
    assert bl.max_levels((7, 100)) == 0
    assert len(bl.laplacian_pyramid_decompose(np.zeros((64, 64)), 3)) == 4


def test_laplacian_pyramid_keeps_strongest_detail():
    ir = np.full((64, 64), 0.5)
    vis = ir.copy()
    ir[30:34, 30:34] = 1.0  # a small bright target only in IR
    f = bl.laplacian_pyramid(ir, vis)
    assert f[31, 31] > 0.9  # max-abs selection keeps its contrast (average would give 0.75)


def _guided_filter_loop(I, p, r, eps):
    h, w = I.shape

    def win(y, x):
        return slice(max(0, y - r), min(h, y + r + 1)), slice(max(0, x - r), min(w, x + r + 1))

    a, b = np.zeros_like(I), np.zeros_like(I)
    for y in range(h):
        for x in range(w):
            wi, wp = I[win(y, x)], p[win(y, x)]
            mu, pm = wi.mean(), wp.mean()
            a[y, x] = ((wi * wp).mean() - mu * pm) / (wi.var() + eps)
            b[y, x] = pm - a[y, x] * mu
    q = np.zeros_like(I)
    for y in range(h):
        for x in range(w):
            q[y, x] = a[win(y, x)].mean() * I[y, x] + b[win(y, x)].mean()
    return q


@pytest.mark.parametrize("r,eps", [(1, 1e-3), (2, 0.05), (20, 0.3)])
def test_guided_filter_matches_loop_reference(r, eps):
    I, p = _pair(7, 9, seed=3)
    np.testing.assert_allclose(bl.guided_filter(I, p, r, eps), _guided_filter_loop(I, p, r, eps), rtol=1e-9, atol=1e-10)


def test_box_sum_matches_loop():
    x = np.arange(20.0).reshape(4, 5)
    ref = np.array([[x[max(0, i - 1) : i + 2, max(0, j - 1) : j + 2].sum() for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(bl.box_sum(x, 1), ref)


def test_gff_identical_inputs_returns_input():
    img = _pair(48, 64, seed=5)[0]
    np.testing.assert_allclose(bl.guided_filter_fusion(img, img), img, atol=1e-9)


def test_gff_favours_the_salient_source_locally():
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    checker = 0.5 + 0.3 * np.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)
    ir = np.full((h, w), 0.5)
    vis = np.full((h, w), 0.5)
    left, right = (slice(16, 80), slice(8, 56)), (slice(16, 80), slice(72, 120))
    ir[left] = checker[left]  # texture only in IR on the left
    vis[right] = checker[right]  # texture only in vis on the right
    f = bl.guided_filter_fusion(ir, vis)
    inner_l, inner_r = (slice(32, 64), slice(20, 44)), (slice(32, 64), slice(84, 108))
    err = lambda a, region: np.abs(f[region] - a[region]).mean()
    # Average fusion would be equally far (0.15) from both sources; GFF follows the textured one.
    assert err(ir, inner_l) < 0.03 < 0.1 < err(vis, inner_l)
    assert err(vis, inner_r) < 0.03 < 0.1 < err(ir, inner_r)


@pytest.mark.data
@pytest.mark.parametrize("stem", ["carLight", "carShadow", "elecbike"])
def test_gff_matches_vifb_reference_outputs(stem):
    """VIFB's GFF outputs (authors' MATLAB code, RGB JPEG): ours on the lumas is within ~1 gray level."""
    from conftest import shared_data
    from patchfuse_jax import io

    vifb = shared_data("peers", "vifb")
    ir = io.load_gray(vifb / "inputs" / "ir" / f"{stem}.jpg").astype(np.float64)
    vis = io.load_gray(vifb / "inputs" / "vis" / f"{stem}.jpg").astype(np.float64)
    ref = io.load_gray(vifb / "GFF" / f"{stem}_GFF.jpg").astype(np.float64)
    ours = bl.guided_filter_fusion(ir, vis)
    assert np.abs(ours - ref).mean() * 255 < 1.0  # Average/LP are 15-20 gray levels away
    assert np.abs(bl.average(ir, vis) - ref).mean() * 255 > 10.0
