"""The one-program training step: updates all three networks, metrics, determinism, one compile."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from patchfuse_jax.train import data
from patchfuse_jax.train.config import Config
from patchfuse_jax.train.state import create_train_state
from patchfuse_jax.train.step import train_step
from tests.conftest import TINY

EXPECTED = {
    "loss_g",
    "loss_d_ir",
    "loss_d_vis",
    "l_ssim",
    "l_mse",
    "adv_ir",
    "adv_vis",
    "w_mean",
    "d_ir_real",
    "d_ir_fake",
    "d_vis_real",
    "d_vis_fake",
    "grad_norm_g",
    "grad_norm_d_ir",
    "grad_norm_d_vis",
}


def _batch(cfg, step):
    src = data.make_source("synthetic", synthetic_hw=cfg.synthetic_size, synthetic_pairs=cfg.synthetic_pairs)
    b = data.sample_batch(src, seed=cfg.seed, step=step, batch_size=cfg.batch_size, crop_hw=cfg.crop_size)
    return {k: jnp.asarray(v) for k, v in b.items()}


def _changed(a, b):
    return [bool(jnp.any(x != y)) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]


@pytest.fixture(scope="module")
def cfg():
    return Config(**TINY)


def test_step_updates_all_networks_and_reports_metrics(cfg):
    state = create_train_state(cfg)
    before = jax.device_get(state)
    step = jax.jit(functools.partial(train_step, cfg=cfg), donate_argnums=0)
    state, m = step(state, _batch(cfg, 0))
    assert set(m) == EXPECTED
    assert all(np.isfinite(float(v)) for v in m.values())
    assert int(state.step) == 1
    for net in ("g", "d_ir", "d_vis"):
        assert all(_changed(getattr(before, net).params, getattr(state, net).params)), net
    assert any(_changed(before.g.batch_stats, state.g.batch_stats))
    assert any(_changed(before.d_ir.batch_stats, state.d_ir.batch_stats))
    # Donated: the old state's buffers were reused, and a second call does not recompile.
    state, m = step(state, _batch(cfg, 1))
    assert step._cache_size() == 1


def test_step_is_deterministic(cfg):
    step = jax.jit(functools.partial(train_step, cfg=cfg))
    outs = []
    for _ in range(2):
        state = create_train_state(cfg)
        for s in range(2):
            state, m = step(state, _batch(cfg, s))
        outs.append((jax.device_get(m), jax.device_get(state.g.params)))
    assert outs[0][0] == outs[1][0]
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(outs[0][1]), jax.tree_util.tree_leaves(outs[1][1]))
    )


@pytest.mark.parametrize("mode", ["none", "d", "g", "dg"])
def test_weight_modes_change_only_their_terms(cfg, mode):
    """W enters D_ir's loss only for d/dg and G's IR adversarial term only for g/dg."""
    import dataclasses

    c = dataclasses.replace(cfg, weight_mode=mode)
    state = create_train_state(c)
    _, m = jax.jit(functools.partial(train_step, cfg=c))(state, _batch(c, 0))
    ref = dataclasses.replace(cfg, weight_mode="none")
    _, m0 = jax.jit(functools.partial(train_step, cfg=ref))(create_train_state(ref), _batch(ref, 0))
    d_differs = abs(float(m["loss_d_ir"]) - float(m0["loss_d_ir"])) > 1e-6
    assert d_differs == (mode in ("d", "dg"))
    assert float(m["loss_d_vis"]) == pytest.approx(float(m0["loss_d_vis"]), rel=1e-5)


@pytest.mark.parametrize(
    "flag,term",
    [
        ("detail_weight", "l_detail"),
        ("ir_intensity_weight", "l_int"),
        ("contrast_weight", "l_con"),
        ("cc_weight", "l_cc"),
        ("global_contrast_weight", "l_gcon"),
    ],
)
def test_extra_weights_add_their_term_to_the_generator_loss(cfg, flag, term):
    """--detail_weight / --ir_intensity_weight / --contrast_weight / --cc_weight /
    --global_contrast_weight = w: metrics gain the term and
    loss_g grows by exactly w * term (same initial state and batch; the discriminator updates do
    not depend on it)."""
    import dataclasses

    c = dataclasses.replace(cfg, **{flag: 3.0}, contrast_window=5)
    _, m = jax.jit(functools.partial(train_step, cfg=c))(create_train_state(c), _batch(c, 0))
    _, m0 = jax.jit(functools.partial(train_step, cfg=cfg))(create_train_state(cfg), _batch(cfg, 0))
    assert set(m) == EXPECTED | {term} and float(m[term]) > 0
    assert float(m["loss_d_ir"]) == pytest.approx(float(m0["loss_d_ir"]), rel=1e-6)
    assert float(m["loss_g"]) == pytest.approx(float(m0["loss_g"]) + 3.0 * float(m[term]), rel=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU compiler options")
def test_compiled_step_uses_the_step_compiler_options(cfg):
    """``Parallel.compile_step`` compiles with ``STEP_COMPILER_OPTIONS`` on CPU (copy insertion
    with region analysis: fewer buffer copies than a plain jit) and gives the same result."""
    from patchfuse_jax.nn import convs
    from patchfuse_jax.train.parallel import STEP_COMPILER_OPTIONS, Parallel

    assert convs.cpu_compiler_options(STEP_COMPILER_OPTIONS) == STEP_COMPILER_OPTIONS
    par = Parallel(cfg)
    plain = jax.jit(functools.partial(train_step, cfg=cfg), donate_argnums=0)
    batch = _batch(cfg, 0)
    results, copies = [], []
    for step in (par.compile_step(cfg), plain):
        state = create_train_state(cfg)
        compiled = step.lower(state, batch).compile()
        copies.append(compiled.as_text().count(" copy("))
        results.append(jax.device_get(compiled(state, batch)))
    assert copies[0] < copies[1]
    for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
