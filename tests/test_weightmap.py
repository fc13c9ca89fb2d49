"""The IR weight map W: shape of D_ir's output, and each cell pools exactly its patch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from patchfuse_jax.nn.models import DISCRIMINATOR_PRESETS, Discriminator, receptive_field
from patchfuse_jax.train.weightmap import ir_weight_map


def _d_out_hw(layers, h, w):
    d = Discriminator(layers=layers, ndf=2)
    x = jnp.zeros((1, h, w, 1))
    out = jax.eval_shape(lambda: d.init_with_output(jax.random.key(0), x, train=False)[0])
    return out.shape[1:]


def _brute(ir, out_hw, geom, op):
    h, w = ir.shape
    out = np.zeros(out_hw)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            r0, c0 = i * geom.stride - geom.padding, j * geom.stride - geom.padding
            patch = ir[max(r0, 0) : min(r0 + geom.size, h), max(c0, 0) : min(c0 + geom.size, w)]
            out[i, j] = op(patch)
    return out


@pytest.mark.parametrize("preset", sorted(DISCRIMINATOR_PRESETS))
@pytest.mark.parametrize("hw", [(64, 64), (70, 100), (256, 512), (91, 77)])
def test_weight_map_shape_and_values(preset, hw):
    layers = DISCRIMINATOR_PRESETS[preset]
    geom = receptive_field(layers)
    out_hw = _d_out_hw(layers, *hw)
    ir = np.random.default_rng(1).random(hw)
    x = jnp.asarray(ir[None, :, :, None], jnp.float32)
    for pooling, op in (("avg", np.mean), ("max", np.max)):
        w = ir_weight_map(x, out_hw, geom, pooling)
        assert w.shape == (1, *out_hw)
        np.testing.assert_allclose(np.asarray(w[0]), _brute(ir, out_hw, geom, op), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(ir_weight_map(x, out_hw, geom, "none")) == 1.0)


def test_mean1_scaling_and_brightness_ordering():
    geom = receptive_field(DISCRIMINATOR_PRESETS["pix2pix70"])
    ir = np.zeros((1, 128, 128, 1), np.float32)
    ir[0, :, 64:] = 1.0  # right half warm
    out_hw = _d_out_hw(DISCRIMINATOR_PRESETS["pix2pix70"], 128, 128)
    w = np.asarray(ir_weight_map(jnp.asarray(ir), out_hw, geom, "avg", "mean1"))
    assert w.mean() == pytest.approx(1.0, rel=1e-4)
    assert w[0, :, -1].min() > w[0, :, 0].max()  # warm cells weigh more


def test_bad_pooling_names_the_flag():
    geom = receptive_field(DISCRIMINATOR_PRESETS["pix2pix70"])
    with pytest.raises(ValueError, match="weight_pooling"):
        ir_weight_map(jnp.zeros((1, 64, 64, 1)), (6, 6), geom, "median")


def test_pixel_weight_map_against_numpy():
    from scipy import ndimage

    from patchfuse_jax.train.weightmap import pixel_weight_map

    x = np.random.default_rng(1).random((2, 20, 30, 1)).astype(np.float32)
    got = np.asarray(pixel_weight_map(jnp.asarray(x), 7))[..., 0]
    for k in range(2):  # window mean over the pixels inside the image, then relative warmth
        s = ndimage.uniform_filter(x[k, ..., 0].astype(np.float64), 7, mode="constant") / ndimage.uniform_filter(
            np.ones((20, 30)), 7, mode="constant"
        )
        want = np.clip((s - s.mean()) / (s.max() - s.mean()), 0, 1)
        np.testing.assert_allclose(got[k], want, atol=1e-5)


def test_pixel_weight_map_marks_the_warm_target():
    from patchfuse_jax.train.weightmap import pixel_weight_map

    ir = np.full((1, 40, 40, 1), 0.3, np.float32)
    ir[0, 15:25, 15:25] = 0.9  # a warm target on a flat background
    w = np.asarray(pixel_weight_map(jnp.asarray(ir), 5))[0, ..., 0]
    assert w[20, 20] == 1.0 and w.max() == 1.0
    assert np.all(w[:5] == 0) and np.all(w[:, :5] == 0)  # background: no warmer than the mean
