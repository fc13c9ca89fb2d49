"""Generator and discriminator: shapes, ranges, and the receptive field measured by gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from patchfuse_jax.nn.models import (
    DISCRIMINATOR_PRESETS,
    Discriminator,
    Generator,
    parse_discriminator_layers,
    receptive_field,
)


@pytest.mark.parametrize("preset,size", [("pix2pix70", 70), ("paper65", 65)])
def test_presets_report_their_patch_size(preset, size):
    assert receptive_field(DISCRIMINATOR_PRESETS[preset]).size == size


@pytest.mark.parametrize("spec", ["pix2pix70", "paper65", "4s2,4s1,4s1", "3s2,5s2,4s1"])
def test_receptive_field_measured_from_gradients(spec):
    """The input pixels that influence one output cell span exactly the reported patch.

    BatchNorm in eval mode is a per-pixel affine map, so the gradient of one output cell is
    non-zero exactly on its patch (LeakyReLU never zeroes a gradient)."""
    layers = parse_discriminator_layers(spec)
    geom = receptive_field(layers)
    d = Discriminator(layers=layers, ndf=4, norm="batch")
    n = geom.size + 6 * geom.stride + 2 * geom.padding
    x = jax.random.uniform(jax.random.key(1), (1, n, n, 1))
    variables = d.init(jax.random.key(0), x, train=False)
    i = 3
    g = jax.grad(lambda x: d.apply(variables, x, train=False)[0, i, i])(x)
    g = np.abs(np.asarray(g[0, :, :, 0]))
    rows = np.nonzero(g.sum(axis=1))[0]
    cols = np.nonzero(g.sum(axis=0))[0]
    assert rows[-1] - rows[0] + 1 == geom.size
    assert cols[-1] - cols[0] + 1 == geom.size
    assert rows[0] == i * geom.stride - geom.padding  # where the patch starts
    assert cols[0] == i * geom.stride - geom.padding


@pytest.mark.parametrize("input_skip", [False, True])
@pytest.mark.parametrize("hw", [(32, 32), (37, 50), (8, 200)])
def test_generator_any_size_output_in_unit_range(hw, input_skip):
    g = Generator(num_downs=3, ngf=4, input_skip=input_skip)
    x = jax.random.uniform(jax.random.key(0), (2, *hw, 2))
    variables = g.init(jax.random.key(1), x, train=False)
    y = g.apply(variables, x, train=False)
    assert y.shape == (2, *hw, 1)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_generator_uses_skip_connections_at_full_resolution():
    """Changing one input pixel changes the output there (the skip path keeps detail)."""
    g = Generator(num_downs=3, ngf=4, norm="instance")
    x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 2))
    variables = g.init(jax.random.key(1), x, train=False)
    jac = jax.grad(lambda x: g.apply(variables, x, train=False)[0, 10, 10, 0])(x)
    assert float(jnp.abs(jac[0, 10, 10]).sum()) > 0


def test_bad_discriminator_spec_names_flag():
    with pytest.raises(ValueError, match="--d_arch"):
        parse_discriminator_layers("4x2,banana")


@pytest.mark.parametrize("impl", ["fast", "xla"])
@pytest.mark.parametrize("hw", [(5, 7), (8, 8)])
def test_upsample2x_equals_flax_conv_transpose(hw, impl):
    """Upsample2x (both formulations) computes exactly nn.ConvTranspose(4x4, stride 2, 'SAME')
    with the same parameters."""
    import flax.linen as nn

    from patchfuse_jax.nn.models import Upsample2x

    jax.config.update("jax_enable_x64", True)
    try:
        x = jax.random.normal(jax.random.key(0), (2, *hw, 3), jnp.float64)
        up = Upsample2x(5, impl=impl, dtype=jnp.float64)
        variables = up.init(jax.random.key(1), x)
        variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)  # non-zero bias too
        ref = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME", dtype=jnp.float64, param_dtype=jnp.float64)
        want = ref.apply(variables, x)
        got = up.apply(variables, x)
        assert got.shape == want.shape == (2, 2 * hw[0], 2 * hw[1], 5)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_input_skip_reaches_the_output_through_one_3x3_conv():
    """With input_skip the last layer is a 3x3 conv over [decoder features, IR, visible]."""
    g = Generator(num_downs=3, ngf=4, norm="instance", input_skip=True)
    x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 2))
    v = g.init(jax.random.key(1), x, train=False)
    assert v["params"]["Conv_3"]["kernel"].shape == (3, 3, 4 + 2, 1)
    assert v["params"]["Upsample2x_2"]["kernel"].shape[-1] == 4  # ngf features, not the output
    # Zeroing the input rows of the final kernel changes the output: the input is used directly.
    k = v["params"]["Conv_3"]["kernel"]
    cut = jax.tree_util.tree_map(lambda a: a, v)
    cut["params"]["Conv_3"]["kernel"] = k.at[:, :, 4:].set(0.0)
    assert float(jnp.abs(g.apply(v, x, train=False) - g.apply(cut, x, train=False)).max()) > 1e-4
