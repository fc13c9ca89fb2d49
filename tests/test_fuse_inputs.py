"""fuse() for real inputs: colour, every layout, 16-bit IR normalisation, tiles."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from patchfuse_jax import fuse, io
from patchfuse_jax.fusing import layouts, tiling
from patchfuse_jax.fusing.api import generator_fn
from patchfuse_jax.fusing.saved import make_fuse_params
from patchfuse_jax.nn.models import Generator

ARCH = dict(num_downs=3, ngf=4, norm="batch", upsample="transpose", input_skip=False)


@pytest.fixture(scope="module")
def params():
    variables = Generator(**ARCH).init(jax.random.key(3), jnp.zeros((1, 8, 8, 2)), train=False)
    return make_fuse_params(variables, ARCH)


def _rgb(rng, h=21, w=34):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- colour conversion ---------------------------------------------------------------------------


def test_ycbcr_known_values_and_round_trip():
    ycc = io.rgb_to_ycbcr(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(
        ycc, [[1.0, 0.0, 0.0], [0.114, 0.5, -0.114 / 1.402], [0.299, -0.299 / 1.772, 0.5]], atol=1e-15
    )
    x = np.random.default_rng(0).random((40, 3))
    np.testing.assert_allclose(io.ycbcr_to_rgb(io.rgb_to_ycbcr(x)), x, atol=1e-14)
    np.testing.assert_allclose(io.rgb_to_ycbcr(x)[:, 0], io.luma_bt601(x), atol=1e-15)


def test_float32_colour_conversion_equals_the_float64_reference():
    """fuse's colour path (layouts._chroma, layouts.to_rgb: float32, in row blocks) is within
    1e-6 of io.rgb_to_ycbcr / io.ycbcr_to_rgb (float64), for uint8, uint16 and float input."""
    rng = np.random.default_rng(5)
    for rgb, unit in (
        (rng.integers(0, 256, (150, 37, 3), dtype=np.uint8), 255.0),
        (rng.integers(0, 65536, (70, 41, 3), dtype=np.uint16), 65535.0),
        (rng.random((67, 23, 3)).astype(np.float32), 1.0),
    ):
        ycc = io.rgb_to_ycbcr(rgb / unit)
        chroma = layouts._chroma(rgb, "vis")
        assert chroma.shape == (2,) + rgb.shape[:2] and chroma.dtype == np.float32
        np.testing.assert_allclose(chroma.transpose(1, 2, 0), ycc[..., 1:], atol=1e-6)
        y = rng.random(rgb.shape[:2])
        want = io.ycbcr_to_rgb(np.concatenate([y[..., None], ycc[..., 1:]], -1)).clip(0, 1)
        got = layouts.to_rgb(y[None].astype(np.float32), chroma[None])[0]
        assert got.dtype == np.float32 and got.min() >= 0.0 and got.max() <= 1.0
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_color_output_keeps_visible_chroma_and_gray_fused_luma(params):
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (21, 34), dtype=np.uint8)
    vis = _rgb(rng)
    gray = fuse(params, ir, vis)
    out = fuse(params, ir, vis, color=True)
    assert out.shape == (21, 34, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    ycc_out, ycc_in = io.rgb_to_ycbcr(out), io.rgb_to_ycbcr(vis / 255.0)
    # Where no channel was clipped, chroma is the input's and luma the gray fuse (float32 output).
    unclipped = (
        io.ycbcr_to_rgb(np.concatenate([gray[..., None], ycc_in[..., 1:]], -1)).clip(0, 1)
        == io.ycbcr_to_rgb(np.concatenate([gray[..., None], ycc_in[..., 1:]], -1))
    ).all(-1)
    assert unclipped.mean() > 0.5
    np.testing.assert_allclose(ycc_out[unclipped][:, 1:], ycc_in[unclipped][:, 1:], atol=1e-6)
    np.testing.assert_allclose(ycc_out[unclipped][:, 0], gray[unclipped], atol=1e-6)


def test_color_with_gray_visible_gives_gray(params):
    rng = np.random.default_rng(1)
    ir, vis = rng.random((16, 24)), rng.random((16, 24))
    out = fuse(params, ir, vis, color=True)
    assert out.shape == (16, 24)
    np.testing.assert_array_equal(out, fuse(params, ir, vis))
    as_rgb = fuse(params, ir, np.repeat(vis[..., None], 3, -1), color=True)
    assert as_rgb.shape == (16, 24, 3)  # neutral chroma: three equal channels
    np.testing.assert_allclose(as_rgb, np.repeat(out[..., None], 3, -1), atol=1e-6)


def test_color_batch(params):
    rng = np.random.default_rng(2)
    ir = rng.integers(0, 256, (3, 21, 34), dtype=np.uint8)
    vis = np.stack([_rgb(rng) for _ in range(3)])
    out = fuse(params, ir, vis, color=True)
    assert out.shape == (3, 21, 34, 3)
    np.testing.assert_allclose(out[1], fuse(params, ir[1], vis[1], color=True), atol=1e-6)


# --- layouts ---------------------------------------------------------------------------------------


def test_gray_as_rgb_and_rgba_ir_are_one_image(params):
    """TNO stores gray IR as RGB PNG: (H, W, 3) is one image, not a batch of H gray images."""
    rng = np.random.default_rng(3)
    ir = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    vis = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    ref = fuse(params, ir, vis)
    rgb_ir = np.repeat(ir[..., None], 3, -1)
    rgba_ir = np.concatenate([rgb_ir, np.full((20, 30, 1), 255, np.uint8)], -1)
    for layout in (rgb_ir, rgba_ir, ir[..., None]):
        np.testing.assert_array_equal(fuse(params, layout, vis), ref)
    rgba_vis = np.concatenate([np.repeat(vis[..., None], 3, -1), np.zeros((20, 30, 1), np.uint8)], -1)
    np.testing.assert_array_equal(fuse(params, ir, rgba_vis), ref)


def test_lists_and_arrays_are_the_same_batch(params):
    rng = np.random.default_rng(4)
    ir = rng.random((2, 18, 26)).astype(np.float32)
    vis = rng.random((2, 18, 26, 3)).astype(np.float32)
    np.testing.assert_array_equal(fuse(params, list(ir), list(vis)), fuse(params, ir, vis))
    np.testing.assert_array_equal(fuse(params, list(ir[..., None]), vis), fuse(params, ir, vis))
    with pytest.raises(ValueError, match=r"ir\[1\] has shape .* a batch needs equal shapes"):
        fuse(params, [ir[0], ir[1, :10]], list(vis))
    with pytest.raises(ValueError, match="2 IR images but 1 visible"):
        fuse(params, ir, vis[:1])
    with pytest.raises(ValueError, match="ir is one image, so vis must be"):
        fuse(params, ir[0], vis)
    with pytest.raises(ValueError, match="empty input"):
        fuse(params, np.zeros((0, 30)), np.zeros((0, 30)))


def test_16bit_ir_warns_and_normalises(params):
    rng = np.random.default_rng(5)
    counts = rng.integers(7000, 9000, (24, 32)).astype(np.uint16)  # 14-bit camera counts
    vis = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"ir: values span .* under 5% .*uint16.*ir_norm"):
        fuse(params, counts, vis)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fuse(params, counts, vis, ir_norm="minmax")
    c = counts.astype(np.float64)
    stretched = ((c - c.min()) / (c.max() - c.min())).astype(np.float32)
    np.testing.assert_allclose(out, fuse(params, stretched, vis), atol=1e-6)
    lo, hi = np.percentile(c / 65535.0, [2, 98])
    pct = np.clip((c / 65535.0 - lo) / (hi - lo), 0, 1).astype(np.float32)
    np.testing.assert_allclose(
        fuse(params, counts, vis, ir_norm="percentile", percentiles=(2, 98)), fuse(params, pct, vis), atol=1e-5
    )
    with pytest.raises(ValueError, match="ir_norm='auto'"):
        fuse(params, counts, vis, ir_norm="auto")
    with pytest.raises(ValueError, match="percentiles"):
        fuse(params, counts, vis, ir_norm="percentile", percentiles=(99, 1))


def test_normalize_ir_constant_image_is_unchanged():
    x = np.full((4, 5), 0.25, np.float32)
    np.testing.assert_array_equal(layouts.normalize_ir(x, "minmax"), x)
    np.testing.assert_array_equal(layouts.normalize_ir(x, "percentile"), x)


# --- tiles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (64, 32, 0), (33, 32, 15), (20, 32, 8)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
    starts = tiling.tile_starts(size, tile, overlap)
    t = min(tile, size)
    covered = np.zeros(size, int)
    for s in starts:
        covered[s : s + t] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + t == size
    assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))


def test_blending_is_exact_for_a_pixelwise_function():
    rng = np.random.default_rng(6)
    a, b = rng.random((70, 93)).astype(np.float32), rng.random((70, 93)).astype(np.float32)
    out = tiling.fuse_tiled(lambda x, y: 0.3 * x + 0.7 * y, a, b, (32, 40), 10)
    np.testing.assert_allclose(out, 0.3 * a + 0.7 * b, atol=1e-6)


def test_tiled_fuse(params):
    rng = np.random.default_rng(7)
    ir, vis = rng.random((50, 70)), rng.random((50, 70, 3))
    ref = fuse(params, ir, vis, color=True)
    np.testing.assert_allclose(fuse(params, ir, vis, color=True, tile=72, overlap=8), ref, atol=1e-6)
    fn = generator_fn(params.arch)
    out = fuse(params, ir, vis, color=True, tile=24, overlap=4)  # 24: a multiple of 2**3
    n = fn._cache_size()
    fuse(params, ir, vis, color=True, tile=20, overlap=4)  # rounded up to 24: no new program
    assert fn._cache_size() == n
    assert out.shape == ref.shape and np.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1
    assert np.abs(out - ref).mean() < 0.1  # close but not equal: each tile sees less context
    with pytest.raises(ValueError, match="overlap=12 must be"):
        fuse(params, ir, vis, tile=24, overlap=12)
    with pytest.raises(ValueError, match="tile=0"):
        fuse(params, ir, vis, tile=0)
