"""The fast form of the decoder's upsampling equals XLA's plain ops (float64, 1e-10), forward
and gradients, and the networks keep their parameter trees (old checkpoints stay loadable)."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax import lax

from patchfuse_jax import models
from patchfuse_jax.models import Generator, resolve_impl, upsample2x

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _rand(key, shape):
    return jax.random.normal(jax.random.key(key), shape, jnp.float64)


def _check_same_function(f_fast, f_ref, *args):
    """Forward values and the gradients (w.r.t. every argument) of a random projection agree."""
    np.testing.assert_allclose(np.asarray(f_fast(*args)), np.asarray(f_ref(*args)), **TOL)
    proj = _rand(99, f_ref(*args).shape)
    g_fast = jax.grad(lambda *a: jnp.sum(f_fast(*a) * proj), argnums=tuple(range(len(args))))(*args)
    g_ref = jax.grad(lambda *a: jnp.sum(f_ref(*a) * proj), argnums=tuple(range(len(args))))(*args)
    assert jax.tree_util.tree_structure(g_fast) == jax.tree_util.tree_structure(g_ref)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


@pytest.fixture(params=["matmul", "conv"])
def both_forms(request, monkeypatch):
    """Runs a test with the small-input matmul form and with the 2x2-conv form."""
    monkeypatch.setattr(models, "MATMUL_MAX_POSITIONS", 10**9 if request.param == "matmul" else 0)


@pytest.mark.parametrize("hw", [(5, 7), (8, 8), (1, 3)])
def test_phase_upsampling_equals_transposed_conv(x64, both_forms, hw):
    """Against lax.conv_transpose (test_models checks Upsample2x against flax ConvTranspose)."""
    x, w = _rand(0, (2, *hw, 3)), _rand(1, (4, 4, 3, 5))
    ref = lambda x, w: lax.conv_transpose(x, w, (2, 2), "SAME",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _check_same_function(lambda x, w: upsample2x(x, w, "transpose", "fast"), ref, x, w)


@pytest.mark.parametrize("hw", [(5, 7), (8, 8), (1, 3)])
def test_phase_upsampling_equals_resize_then_conv(x64, both_forms, hw):
    x, w = _rand(0, (2, *hw, 3)), _rand(1, (3, 3, 3, 5))

    def ref(x, w):  # jax.image's nearest resize, then a plain 3x3 'SAME' conv
        up = jax.image.resize(x, (x.shape[0], 2 * hw[0], 2 * hw[1], 3), "nearest")
        return lax.conv_general_dilated(up, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    _check_same_function(lambda x, w: upsample2x(x, w, "resize", "fast"), ref, x, w)
    _check_same_function(lambda x, w: upsample2x(x, w, "resize", "xla"), ref, x, w)


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_generator_fast_equals_xla(x64, both_forms, upsample):
    """Whole U-Net (train-mode BatchNorm): same output and parameter gradients either way, and
    the same parameter tree (names and shapes)."""
    x = jax.random.uniform(jax.random.key(0), (2, 20, 24, 2), jnp.float64)
    fast = Generator(num_downs=3, ngf=4, upsample=upsample, impl="fast", dtype=jnp.float64)
    ref = Generator(num_downs=3, ngf=4, upsample=upsample, impl="xla", dtype=jnp.float64)
    v = fast.init(jax.random.key(1), x, train=False)
    v_ref = ref.init(jax.random.key(1), x, train=False)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(v_ref)

    def f(model):
        return lambda p: model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0]

    _check_same_function(f(fast), f(ref), v["params"])


def test_parameter_names_are_those_of_flax_conv():
    """Checkpoints written before the rewrite (flax nn.Conv / Upsample2x names) still load."""
    g = Generator(num_downs=3, ngf=4)
    v = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)), train=False))
    names = sorted(v["params"])
    assert names == sorted([f"Conv_{i}" for i in range(3)] + [f"Upsample2x_{i}" for i in range(3)]
                           + ["BatchNorm_0", "BatchNorm_1", "BatchNorm_2"])
    assert v["params"]["Conv_0"]["kernel"].shape == (4, 4, 2, 4)
    assert v["params"]["Upsample2x_0"]["kernel"].shape == (4, 4, 16, 8)


def test_auto_picks_fast_on_cpu_and_rejects_unknown():
    assert resolve_impl("auto") == ("fast" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match="--conv_impl"):
        resolve_impl("banana")
