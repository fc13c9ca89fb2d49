"""The fast conv forms (patchfuse_jax/nn/convs.py) equal XLA's plain ops (float64, 1e-10), forward
and gradients, and the networks keep their parameter trees (old checkpoints stay loadable)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from patchfuse_jax.nn import convs, winograd
from patchfuse_jax.nn.convs import resolve_impl, upsample2x
from patchfuse_jax.nn.models import Conv, Discriminator, Generator

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
    proj = _rand(99, jax.eval_shape(f_ref, *args).shape)
    argnums = tuple(range(len(args)))

    @jax.jit
    def values_and_grads(*a):
        return [(f(*a), jax.grad(lambda *z: jnp.sum(f(*z) * proj), argnums=argnums)(*a)) for f in (f_fast, f_ref)]

    (y_fast, g_fast), (y_ref, g_ref) = values_and_grads(*args)
    np.testing.assert_allclose(np.asarray(y_fast), np.asarray(y_ref), **TOL)
    assert jax.tree_util.tree_structure(g_fast) == jax.tree_util.tree_structure(g_ref)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


FORMS = ("matmul", "conv", "thin", "winograd")


def _use_form(monkeypatch, form):
    """Every form for every size: ``matmul``: small-input upsampling, tiny-output convs (Winograd
    for 4x4 stride 1); ``conv``: the 2x2-conv upsampling form and XLA's convs; ``thin``: the
    thin form for every conv; ``winograd``: Winograd for 4x4 stride 1, the space-to-depth
    Winograd gradients for 4x4 stride 2, per-tap weight gradients for the other kernels, and
    the thin form where it is used (at most 4 output channels), and the 2x2 Winograd gradients
    of the upsampling's conv form."""
    monkeypatch.setattr(convs, "MATMUL_MAX_POSITIONS", 10**9 if form == "matmul" else 0)
    monkeypatch.setattr(convs, "TINY_MAX_POSITIONS", 10**9 if form == "matmul" else 0)
    monkeypatch.setattr(convs, "MATMUL_MIN_CHANNELS", 0 if form in ("matmul", "winograd") else 10**12)
    monkeypatch.setattr(convs, "THIN_MAX_COUT", {"thin": 10**9, "winograd": 4}.get(form, 0))
    monkeypatch.setattr(convs, "THIN_MIN_POSITIONS", 0)


@pytest.fixture(params=FORMS)
def all_forms(request, monkeypatch):
    _use_form(monkeypatch, request.param)


@pytest.fixture(params=[pytest.param("matmul", marks=pytest.mark.slow), "conv", "winograd"])
def network_forms(request, monkeypatch):
    _use_form(monkeypatch, request.param)


@pytest.mark.parametrize("hw", [(5, 7), (8, 8), (1, 3)])
def test_phase_upsampling_equals_transposed_conv(x64, all_forms, hw):
    """Against lax.conv_transpose (test_models checks Upsample2x against flax ConvTranspose)."""
    x, w = _rand(0, (2, *hw, 3)), _rand(1, (4, 4, 3, 5))
    ref = lambda x, w: lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _check_same_function(lambda x, w: upsample2x(x, w, "transpose", "fast"), ref, x, w)


@pytest.mark.parametrize("hw", [(5, 7), (8, 8), (1, 3)])
def test_phase_upsampling_equals_resize_then_conv(x64, all_forms, hw):
    x, w = _rand(0, (2, *hw, 3)), _rand(1, (3, 3, 3, 5))

    def ref(x, w):  # jax.image's nearest resize, then a plain 3x3 'SAME' conv
        up = jax.image.resize(x, (x.shape[0], 2 * hw[0], 2 * hw[1], 3), "nearest")
        return lax.conv_general_dilated(up, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    _check_same_function(lambda x, w: upsample2x(x, w, "resize", "fast"), ref, x, w)
    _check_same_function(lambda x, w: upsample2x(x, w, "resize", "xla"), ref, x, w)


@pytest.mark.parametrize(
    "k,s,p,hw",
    [(4, 2, 1, (9, 6)), (4, 1, 1, (7, 8)), (5, 2, 2, (9, 9)), (3, 2, 1, (6, 5)), (4, 2, 1, (2, 2)), (3, 1, 1, (1, 4))],
)
def test_strided_conv_equals_xla(x64, all_forms, k, s, p, hw):
    """Odd and even sizes, strides 1 and 2, sizes where the stride leaves input rows unread."""
    x, w = _rand(0, (2, *hw, 3)), _rand(1, (k, k, 3, 4))
    ref = lambda x, w: lax.conv_general_dilated(
        x, w, (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    _check_same_function(lambda x, w: convs.conv2d(x, w, s, p, "fast"), ref, x, w)
    _check_same_function(lambda x, w: convs.conv2d(x, w, s, p, "xla"), ref, x, w)


@pytest.mark.parametrize("m,r", sorted(winograd.POINTS))
@pytest.mark.parametrize(
    "pad,hw,batch", [(1, (9, 11), 1), (1, (8, 7), 2), (0, (6, 6), 1), (2, (5, 8), 1), (1, (2, 3), 1)]
)
def test_winograd_conv_equals_xla(x64, m, r, pad, hw, batch):
    """F(mxm, rxr): output sizes not a multiple of m (the last tiles cropped), pads 0-2."""
    x, w = _rand(0, (batch, *hw, 3)), _rand(1, (r, r, 3, 5))
    ref = lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    _check_same_function(lambda x, w: winograd.conv_winograd(x, w, pad, m), ref, x, w)


@pytest.mark.parametrize(
    "k,pad,hw", [(4, 1, (9, 6)), (4, 1, (8, 8)), (4, 0, (7, 6)), (4, 2, (10, 9)), (8, 3, (12, 13))]
)
def test_space_to_depth_conv_equals_strided_conv(x64, k, pad, hw):
    """Odd padded sizes (an unread last row/column), kernels 4 (r = 2) and 8 (r = 4)."""
    x, w = _rand(0, (2, *hw, 3)), _rand(1, (k, k, 3, 4))
    ref = lambda x, w: lax.conv_general_dilated(
        x, w, (2, 2), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    _check_same_function(lambda x, w: winograd.space_to_depth_conv(x, w, pad), ref, x, w)


@pytest.mark.parametrize("m,bound", [(2, 1e-5), (4, 2e-5)])
def test_winograd_float32_error_is_bounded(m, bound):
    """At the discriminators' width (Cin = 256) the float32 error relative to the largest value
    stays below ``bound``, values and gradients, against float64. Measured: direct conv 1e-6,
    F(2x2, 4x4) 3e-6, F(4x4, 4x4) 7e-6 (docs/design.md)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 20, 22, 256)), rng.standard_normal((4, 4, 256, 8)) * 0.05
    dy = rng.standard_normal((1, 19, 21, 8))
    ref = lambda x, w: lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    with jax.enable_x64(True):
        y64, vjp64 = jax.vjp(ref, jnp.asarray(x), jnp.asarray(w))
        g64 = vjp64(jnp.asarray(dy))
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    y32, vjp32 = jax.vjp(lambda x, w: winograd.conv_winograd(x, w, 1, m), f32(x), f32(w))
    assert y32.dtype == jnp.float32
    for got, want in zip((y32, *vjp32(f32(dy))), (y64, *g64)):
        got, want = np.asarray(got, np.float64), np.asarray(want)
        assert np.abs(got - want).max() / np.abs(want).max() < bound


@pytest.mark.parametrize("m,r", sorted(winograd.POINTS))
def test_winograd_transforms_compute_the_correlation(m, r):
    """The generated 1-D A^T, G, B^T give y_i = sum_k d_(i+k) g_k exactly (float64, 1e-12);
    F(2, 2)'s input and output transforms are sums and differences only."""
    at, g, bt = (np.asarray(t) for t in winograd.transforms(m, r))
    assert at.shape == (m, m + r - 1) and g.shape == (m + r - 1, r) and bt.shape == (m + r - 1,) * 2
    rng = np.random.default_rng(m * 10 + r)
    for _ in range(5):
        d, k = rng.standard_normal(m + r - 1), rng.standard_normal(r)
        want = [d[i : i + r] @ k for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), want, rtol=1e-12, atol=1e-12)
    if (m, r) == (2, 2):
        assert set(np.unique(np.concatenate([at.ravel(), bt.ravel()]))) <= {-1.0, 0.0, 1.0}


def test_winograd_forms_only_where_chosen():
    """Float 4x4 convs with big kernels only; bfloat16 keeps the direct forms."""
    x, w = jnp.zeros((1, 32, 32, 256)), jnp.zeros((4, 4, 256, 512))
    assert convs._is_winograd(x, w, 1) and convs._is_space_to_depth(x, w, 2, 1)
    assert not convs._is_winograd(x, w, 2)
    assert not convs._is_winograd(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), 1)
    assert not convs._is_space_to_depth(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), 2, 1)
    assert not convs._is_winograd(x, jnp.zeros((3, 3, 256, 512)), 1)
    assert not convs._is_space_to_depth(x, jnp.zeros((3, 3, 256, 512)), 2, 1)
    assert not convs._is_space_to_depth(x[:, :8, :8], w, 2, 1)  # tiny output: the matmul form


@pytest.mark.parametrize("cin", [32, 64])
def test_per_tap_weight_gradient_where_chosen(x64, cin):
    """At the default thresholds a stride-2 conv with ``Cin * Cout >= WEIGHT_GRAD_MIN_CHANNELS``
    (the paper discriminators' 3x3 64 -> 128 layer) takes per-tap weight gradients (one matmul
    per tap), a smaller one XLA's conv gradients (no matmul); both equal XLA's."""
    x, w = _rand(0, (1, 9, 8, cin)), _rand(1, (3, 3, cin, 128))
    per_tap = cin * 128 >= convs.WEIGHT_GRAD_MIN_CHANNELS
    assert per_tap == (cin == 64) and not convs._is_big(w)
    fast = lambda x, w: convs.conv2d(x, w, 2, 1, "fast")
    grads = jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(jnp.sin(fast(x, w))), (0, 1)))(x, w)
    assert str(grads).count("dot_general") == (9 if per_tap else 0)
    _check_same_function(fast, lambda x, w: convs.conv2d(x, w, 2, 1, "xla"), x, w)


def test_conv_module_is_flax_conv():
    """Same parameter names, shapes, initial values and outputs as flax ``nn.Conv``."""
    x = jax.random.uniform(jax.random.key(0), (2, 9, 10, 3))
    ours, theirs = (
        Conv(5, kernel_size=4, strides=2, padding=1),
        nn.Conv(5, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1))),
    )
    v, v_ref = ours.init(jax.random.key(1), x), theirs.init(jax.random.key(1), x)
    for a, b in zip(jax.tree_util.tree_leaves_with_path(v), jax.tree_util.tree_leaves_with_path(v_ref)):
        assert a[0] == b[0] and a[1].shape == b[1].shape
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
    np.testing.assert_allclose(np.asarray(ours.apply(v, x)), np.asarray(theirs.apply(v, x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("d_arch", ["pix2pix70", "paper65"])
def test_discriminator_fast_equals_xla(x64, network_forms, d_arch):
    from patchfuse_jax.nn.models import DISCRIMINATOR_PRESETS

    x = jax.random.uniform(jax.random.key(0), (2, 40, 36, 1), jnp.float64)
    layers = DISCRIMINATOR_PRESETS[d_arch]
    fast = Discriminator(layers=layers, ndf=4, impl="fast", dtype=jnp.float64)
    ref = Discriminator(layers=layers, ndf=4, impl="xla", dtype=jnp.float64)
    v = fast.init(jax.random.key(1), x, train=False)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(ref.init(jax.random.key(1), x, train=False))

    def f(model):  # parameters and input both get gradients (the G step differentiates the input)
        return lambda p, x: model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0]

    _check_same_function(f(fast), f(ref), v["params"], x)


@pytest.mark.parametrize(
    "form,upsample,input_skip",
    [
        ("conv", "resize", False),
        ("conv", "transpose", True),
        ("winograd", "transpose", False),
        pytest.param("matmul", "transpose", False, marks=pytest.mark.slow),
        pytest.param("conv", "transpose", False, marks=pytest.mark.slow),
        pytest.param("matmul", "resize", False, marks=pytest.mark.slow),
        pytest.param("matmul", "transpose", True, marks=pytest.mark.slow),
    ],
)
def test_generator_fast_equals_xla(x64, monkeypatch, form, upsample, input_skip):
    """Whole U-Net (train-mode BatchNorm): same output and parameter gradients either way, and
    the same parameter tree (names and shapes)."""
    _use_form(monkeypatch, form)
    x = jax.random.uniform(jax.random.key(0), (2, 20, 24, 2), jnp.float64)
    fast = Generator(num_downs=3, ngf=4, upsample=upsample, input_skip=input_skip, impl="fast", dtype=jnp.float64)
    ref = Generator(num_downs=3, ngf=4, upsample=upsample, input_skip=input_skip, impl="xla", dtype=jnp.float64)
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
    assert names == sorted(
        [f"Conv_{i}" for i in range(3)]
        + [f"Upsample2x_{i}" for i in range(3)]
        + ["BatchNorm_0", "BatchNorm_1", "BatchNorm_2"]
    )
    assert v["params"]["Conv_0"]["kernel"].shape == (4, 4, 2, 4)
    assert v["params"]["Upsample2x_0"]["kernel"].shape == (4, 4, 16, 8)


def test_auto_picks_fast_on_cpu_and_rejects_unknown():
    assert resolve_impl("auto") == ("fast" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match="--conv_impl"):
        resolve_impl("banana")
