"""Each loss of the paper (Eq. 2-8) against a hand-computed float64 numpy value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from patchfuse_jax.train import losses

RNG = np.random.default_rng(0)


def _np_ssim(x, y):
    """Reference SSIM of 2-D float64 images in [0, 1]: 11x11 Gaussian(1.5), valid region."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    g /= g.sum()
    win = np.outer(g, g)

    def filt(a):
        h, w = a.shape
        out = np.zeros((h - 10, w - 10))
        for i in range(h - 10):
            for j in range(w - 10):
                out[i, j] = np.sum(a[i : i + 11, j : j + 11] * win)
        return out

    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return m.mean()


def test_lsgan_d_loss_weighted_and_unweighted():
    d_real = RNG.normal(size=(2, 5, 6))
    d_fake = RNG.normal(size=(2, 5, 6))
    w = RNG.random((2, 5, 6))
    want_w = 0.5 * np.mean(w * (d_real - 1) ** 2) + 0.5 * np.mean(w * d_fake**2)  # Eq. 2
    want = 0.5 * np.mean((d_real - 1) ** 2) + 0.5 * np.mean(d_fake**2)  # Eq. 3
    got_w = losses.lsgan_d_loss(jnp.asarray(d_real), jnp.asarray(d_fake), jnp.asarray(w))
    got = losses.lsgan_d_loss(jnp.asarray(d_real), jnp.asarray(d_fake))
    np.testing.assert_allclose(float(got_w), want_w, rtol=1e-6)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    assert abs(want - want_w) > 1e-3  # the weight map matters


def test_lsgan_d_loss_perfect_discriminator_is_zero():
    ones, zeros = jnp.ones((1, 3, 3)), jnp.zeros((1, 3, 3))
    assert float(losses.lsgan_d_loss(ones, zeros)) == 0.0
    assert float(losses.lsgan_d_loss(zeros, ones)) == pytest.approx(1.0)


def test_lsgan_g_loss():
    d_fake = RNG.normal(size=(3, 4, 4))
    w = RNG.random((3, 4, 4))
    np.testing.assert_allclose(
        float(losses.lsgan_g_loss(jnp.asarray(d_fake), jnp.asarray(w))), 0.5 * np.mean(w * (d_fake - 1) ** 2), rtol=1e-6
    )  # Eq. 7
    np.testing.assert_allclose(
        float(losses.lsgan_g_loss(jnp.asarray(d_fake))), 0.5 * np.mean((d_fake - 1) ** 2), rtol=1e-6
    )  # Eq. 8


def test_content_loss_matches_numpy_ssim_and_mse():
    f = RNG.random((2, 20, 24, 1))
    ir = np.clip(f + 0.2 * RNG.normal(size=f.shape), 0, 1)
    vis = RNG.random((2, 20, 24, 1))
    l_ssim, l_mse = losses.content_loss(*(jnp.asarray(a, jnp.float32) for a in (f, ir, vis)))
    s_ir = np.mean([_np_ssim(f[b, ..., 0], ir[b, ..., 0]) for b in range(2)])
    s_vis = np.mean([_np_ssim(f[b, ..., 0], vis[b, ..., 0]) for b in range(2)])
    np.testing.assert_allclose(float(l_ssim), 1 - (s_ir + s_vis) / 2, atol=2e-5)
    np.testing.assert_allclose(float(l_mse), (np.mean((f - ir) ** 2) + np.mean((f - vis) ** 2)) / 2, rtol=1e-5)


def test_content_loss_zero_when_sources_equal_fused():
    x = jnp.asarray(RNG.random((1, 16, 16, 1)), jnp.float32)
    l_ssim, l_mse = losses.content_loss(x, x, x)
    assert abs(float(l_ssim)) < 1e-5 and float(l_mse) == 0.0


def test_generator_loss_eq6():
    got = losses.generator_loss(0.3, 0.02, 0.4, 0.6, gamma=0.1, lam=0.5)
    assert float(got) == pytest.approx(0.3 + 0.02 + 0.1 * 0.4 + 0.5 * 0.6)


def test_detail_loss_against_numpy_float64():
    """L_detail = 1/2 sum_d mean| |grad_d f| - max(|grad_d ir|, |grad_d vis|) |, in float64."""
    rng = np.random.default_rng(0)
    f, ir, vis = (rng.uniform(size=(2, 9, 11, 1)) for _ in range(3))
    want = 0.0
    for axis in (2, 1):
        gf, gi, gv = (np.abs(np.diff(a, axis=axis)) for a in (f, ir, vis))
        want += 0.5 * np.mean(np.abs(gf - np.maximum(gi, gv)))
    jax.config.update("jax_enable_x64", True)
    try:
        got = float(losses.detail_loss(*(jnp.asarray(a) for a in (f, ir, vis))))
    finally:
        jax.config.update("jax_enable_x64", False)
    assert got == pytest.approx(want, rel=1e-12)


def test_detail_loss_is_zero_for_the_stronger_source_and_positive_for_average():
    ir = jnp.asarray(np.random.default_rng(1).uniform(size=(1, 16, 16, 1)), jnp.float32)
    flat = jnp.full_like(ir, 0.5)
    assert float(losses.detail_loss(ir, ir, flat)) == 0.0
    assert float(losses.detail_loss(0.5 * (ir + flat), ir, flat)) > 0.05


def _np_local_std(x, size):
    h, w = x.shape
    out = np.zeros((h - size + 1, w - size + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = x[i : i + size, j : j + size].std()
    return out


def test_contrast_loss_against_numpy():
    f, a, b = (RNG.random((2, 12, 14, 1)) for _ in range(3))
    want = np.mean(
        [
            np.abs(
                _np_local_std(f[k, ..., 0], 7)
                - np.maximum(_np_local_std(a[k, ..., 0], 7), _np_local_std(b[k, ..., 0], 7))
            )
            for k in range(2)
        ]
    )
    got = losses.contrast_loss(*(jnp.asarray(x, jnp.float32) for x in (f, a, b)))
    np.testing.assert_allclose(float(got), want, atol=2e-5)  # float32 box sums; sqrt(var + 1e-6)


def test_contrast_loss_is_zero_at_the_stronger_source_and_not_at_the_average():
    a = RNG.random((1, 16, 16, 1))
    b = 0.2 * RNG.random((1, 16, 16, 1))  # flatter everywhere: a is the stronger source
    to = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    assert float(losses.contrast_loss(to(a), to(a), to(b))) < 1e-4
    assert float(losses.contrast_loss(to((a + b) / 2), to(a), to(b))) > 0.05


def test_ir_intensity_loss_weights_the_warm_pixels():
    f, ir = RNG.random((2, 8, 9, 1)), RNG.random((2, 8, 9, 1))
    w = RNG.random((2, 8, 9, 1))
    want = np.sum(w * np.abs(f - ir)) / np.sum(w)
    got = losses.ir_intensity_loss(jnp.asarray(f), jnp.asarray(ir), jnp.asarray(w))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # Where w is zero the fused value does not matter; where it is one, f must equal ir.
    w = np.zeros_like(w)
    w[:, :4] = 1.0
    g = f.copy()
    g[:, :4] = ir[:, :4]
    assert float(losses.ir_intensity_loss(jnp.asarray(g), jnp.asarray(ir), jnp.asarray(w))) == 0.0


def test_correlation_loss_against_numpy_and_invariant_to_contrast():
    f, a, b = (RNG.random((2, 9, 11, 1)) for _ in range(3))
    want = 1 - 0.5 * np.mean(
        [
            np.corrcoef(f[k].ravel(), a[k].ravel())[0, 1] + np.corrcoef(f[k].ravel(), b[k].ravel())[0, 1]
            for k in range(2)
        ]
    )
    to = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = losses.correlation_loss(to(f), to(a), to(b))
    np.testing.assert_allclose(float(got), want, atol=1e-6)
    stretched = 0.5 + 1.7 * (f - 0.5)  # a contrast stretch keeps the correlations
    np.testing.assert_allclose(float(losses.correlation_loss(to(stretched), to(a), to(b))), want, atol=1e-6)
    assert float(losses.correlation_loss(to(a), to(a), to(a))) == pytest.approx(0.0, abs=1e-6)


def test_global_contrast_loss_against_numpy():
    f, a, b = (RNG.random((3, 8, 10, 1)) for _ in range(3))
    b *= 0.3
    want = np.mean([abs(f[k].std() - max(a[k].std(), b[k].std())) for k in range(3)])
    got = losses.global_contrast_loss(*(jnp.asarray(x) for x in (f, a, b)))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    assert float(losses.global_contrast_loss(*(jnp.asarray(x) for x in (a, a, b)))) == pytest.approx(0, abs=1e-7)
