"""patchfuse_jax.eval.significance against hand-computed values."""

import math

import numpy as np
import pytest

from patchfuse_jax.eval import significance as sig


def test_sign_test_exact_binomial():
    assert sig.sign_test([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # 5 of 5 positive
    assert sig.sign_test([-1] * 6) == pytest.approx(2 / 64)
    assert sig.sign_test([1] * 8 + [-1] * 2) == pytest.approx(2 * 56 / 1024)  # (1 + 10 + 45) / 2^10
    assert sig.sign_test([1, -1, 2, 0, np.nan]) == 1.0  # zeros, NaN dropped: n 3, k 1
    assert sig.sign_test([0, 0]) == 1.0 and sig.sign_test([]) == 1.0


def test_bootstrap_interval_resamples_clusters():
    assert sig.bootstrap_ci([0.5] * 7) == (0.5, 0.5)
    lo, hi = sig.bootstrap_ci([0.0, 1.0], n_boot=2000)  # means 0, 0.5, 1 with prob 1/4, 1/2, 1/4
    assert (lo, hi) == (0.0, 1.0)
    # Two clusters {1, 1, 1} and {-5}: resampled means 1, -0.5 ((3 - 5) / 4) or -5.
    lo, hi = sig.bootstrap_ci([1, 1, 1, -5], clusters=["a", "a", "a", "b"], n_boot=2000)
    assert (lo, hi) == (-5.0, 1.0)
    assert sig.bootstrap_ci([1, 2, 3], n_boot=500, seed=3) == sig.bootstrap_ci([1, 2, 3], n_boot=500, seed=3)
    assert all(math.isnan(x) for x in sig.bootstrap_ci([np.nan]))
    with pytest.raises(ValueError):
        sig.bootstrap_ci([1, 2], clusters=[0])


def test_paired_matches_seed_and_image_and_directions():
    a = {(s, f"p{i}"): 1.0 + 0.1 * i + s for s in range(3) for i in range(4)}
    b = {k: v - 0.5 for k, v in a.items()}
    b[(0, "p0")] = a[(0, "p0")] + 1.0  # one pair the other way
    b[(9, "p0")] = 0.0  # no partner in a: not paired
    c = sig.paired(a, b, n_boot=1000)
    assert c["n"] == 12 and (c["n_pos"], c["n_neg"]) == (11, 1)
    assert c["mean_diff"] == pytest.approx((11 * 0.5 - 1.0) / 12)
    assert c["p_sign"] == pytest.approx(2 * (1 + 12) / 2**12)
    assert c["ci"][0] <= c["mean_diff"] <= c["ci"][1]
    assert sig.direction(c) == 1
    assert sig.direction(sig.paired(b, a, n_boot=1000)) == -1
    assert sig.direction({"n": 12, "n_pos": 11, "n_neg": 1, "p_sign": 0.006, "ci": (-0.1, 0.4)}) == 0
    assert sig.direction({"n": 5, "n_pos": 5, "n_neg": 0, "p_sign": 0.0625, "ci": (0.1, 0.4)}) == 0
    assert sig.paired({}, b)["n"] == 0


def test_verdict_needs_a_majority_of_metrics():
    assert sig.verdict([1, 1, 1, 1, 0, -1]) == "holds"
    assert sig.verdict([1, 1, 1, 0, 0, 0]) == "cannot tell"
    assert sig.verdict([-1, -1, -1, -1, 0, 0]) == "does not hold"
    assert sig.verdict([]) == "no data"
    assert sig.pairs_needed([1.0, 2.0, 3.0]) == pytest.approx((1.959964 + 0.841621) ** 2 / 4)
    assert sig.pairs_needed([1.0, -1.0]) == math.inf and math.isnan(sig.pairs_needed([1.0]))


def test_box_mean_and_local_contrast_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert np.allclose(sig.box_mean(x, 3), 2.5)  # every window covers the whole image
    assert np.allclose(sig.box_mean(x, 2), [[2.5, 3.0], [3.5, 4.0]])  # window rows/cols i .. i + 1
    assert np.allclose(sig.box_mean(x, 1), x)
    assert np.allclose(sig.local_contrast(x, 3), np.std(x))
    assert np.allclose(sig.local_contrast(np.full((5, 6), 0.3)), 0.0)


def test_warm_mask_is_the_top_of_pixel_weight_map():
    import jax.numpy as jnp

    from patchfuse_jax.train.weightmap import pixel_weight_map

    rng = np.random.default_rng(0)
    ir = rng.random((40, 52)) * 0.3
    ir[5:15, 30:44] += 0.6
    for size in (9, 10):
        w = np.asarray(pixel_weight_map(jnp.asarray(ir[None, ..., None], jnp.float32), size))[0, ..., 0]
        p = sig.box_mean(ir, size)  # the same windows before the per-image stretch
        stretched = np.clip((p - p.mean()) / (p.max() - p.mean()), 0, 1)
        assert np.allclose(w, stretched, atol=1e-5)
        m = sig.warm_mask(ir, size)
        assert m.sum() == pytest.approx(0.1 * ir.size, abs=2) and m[5:15, 30:44].mean() > 0.9


def test_weight_effect_ratios():
    rng = np.random.default_rng(1)
    ir = rng.random((32, 48))
    ir[:10, :10] += 2.0
    ir /= ir.max()
    assert sig.weight_effect(ir, ir, 9) == pytest.approx({"intensity": 1.0, "contrast": 1.0})
    assert sig.weight_effect(ir, 0.5 * ir, 9) == pytest.approx({"intensity": 0.5, "contrast": 0.5})
    e = sig.weight_effect(ir, np.full_like(ir, 0.25), 9)
    m = sig.warm_mask(ir, 9)
    assert e["contrast"] == 0.0 and e["intensity"] == pytest.approx(0.25 / ir[m].mean())
    with pytest.raises(ValueError):
        sig.weight_effect(ir, ir[:-1], 9)
