"""fuse(params, ir, vis, bn=...) and load_checkpoint(workdir)."""

import dataclasses

import numpy as np
import pytest

from patchfuse_jax import fuse, load_checkpoint
from patchfuse_jax.checkpoint import CheckpointError
from patchfuse_jax.fusing.api import generator_fn
from patchfuse_jax.train import loop as trainer
from patchfuse_jax.train.config import Config
from tests.conftest import TINY


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("run"))
    trainer.train_and_evaluate(Config(**{**TINY, "num_steps": 2}), wd, show_progress=False)
    return load_checkpoint(wd)


def test_load_checkpoint_reads_architecture(params):
    arch = params.arch.as_dict()
    assert (arch["num_downs"], arch["ngf"], arch["norm"], params.step) == (2, 4, "batch", 2)
    assert params.config["num_steps"] == 2 and params.config["crop_size"] == [32, 32]


def test_single_pair_dtypes_and_layouts_agree(params):
    rng = np.random.default_rng(0)
    ir8 = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    vis8 = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    out = fuse(params, ir8, vis8)
    assert out.shape == (37, 53) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(fuse(params, ir8 / 255.0, vis8 / 255.0), out, atol=1e-6)
    np.testing.assert_allclose(fuse(params, ir8.astype(np.uint16) * 257, vis8.astype(np.uint16) * 257), out, atol=1e-6)
    np.testing.assert_allclose(fuse(params, ir8[..., None], np.repeat(vis8[..., None], 3, -1)), out, atol=1e-6)


def test_batch_equals_single_calls_and_compiles_once_per_shape(params):
    rng = np.random.default_rng(1)
    ir = rng.random((3, 24, 40)).astype(np.float32)
    vis = rng.random((3, 24, 40, 3)).astype(np.float32)
    fn = generator_fn(params.arch)
    out = fuse(params, ir, vis)
    n = fn._cache_size()
    assert out.shape == (3, 24, 40)
    out2 = fuse(params, ir[::-1].copy(), vis[::-1].copy())
    assert fn._cache_size() == n  # same shape: no new compile
    np.testing.assert_allclose(out2[::-1], out, atol=1e-6)
    single = fuse(params, ir[1], vis[1])
    assert single.shape == (24, 40)


def test_bad_inputs_have_clear_errors(params):
    with pytest.raises(ValueError, match="differ in size"):
        fuse(params, np.zeros((10, 12), np.uint8), np.zeros((10, 13), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse(params, np.full((10, 12), 2.0), np.zeros((10, 12)))
    with pytest.raises(TypeError, match="load_checkpoint"):
        fuse({"params": {}}, np.zeros((10, 12)), np.zeros((10, 12)))
    with pytest.raises(ValueError, match="bn='batch'.*'running'.*'image'"):
        fuse(params, np.zeros((10, 12)), np.zeros((10, 12)), bn="batch")


def test_load_checkpoint_of_empty_workdir(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_checkpoint(tmp_path)


def test_padding_outside_the_jit_is_exact_and_shares_compiles(params):
    """Sizes that pad to the same multiple of 2**num_downs share one program, and the result
    equals the generator applied to the unpadded input."""
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    fn = generator_fn(params.arch, "running")
    ir, vis = rng.random((2, 29, 31)).astype(np.float32), rng.random((2, 29, 31)).astype(np.float32)
    out = fuse(params, ir, vis, bn="running")
    n = fn._cache_size()
    fuse(params, ir[:, :30, :30], vis[:, :30, :30], bn="running")  # pads to the same 32x32
    assert fn._cache_size() == n
    g = params.arch.generator()
    direct = g.apply(params.variables, jnp.stack([ir, vis], -1), train=False)[..., 0]
    np.testing.assert_allclose(out, np.asarray(direct), atol=1e-6)


def test_bn_image_uses_each_images_own_statistics(params):
    """bn="image": train-mode BatchNorm per image, so a batch equals per-image calls (the result
    of one image does not depend on the others); it differs from the running statistics."""
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    ir, vis = rng.random((3, 20, 28)).astype(np.float32), rng.random((3, 20, 28)).astype(np.float32)
    batch = fuse(params, ir, vis, bn="image")
    assert batch.shape == (3, 20, 28) and 0.0 <= batch.min() and batch.max() <= 1.0
    singles = np.stack([fuse(params, ir[i], vis[i], bn="image") for i in range(3)])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    # Changing one image of the batch leaves the others' results unchanged.
    ir2 = ir.copy()
    ir2[0] = 1.0 - ir2[0]
    np.testing.assert_allclose(fuse(params, ir2, vis, bn="image")[1:], batch[1:], atol=1e-5)
    # The same as Flax's train-mode BatchNorm on a batch of one (x padded to 20x28 -> 20x28).
    g = params.arch.generator()
    direct, _ = g.apply(params.variables, jnp.stack([ir[1:2], vis[1:2]], -1), train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(batch[1], np.asarray(direct)[0, ..., 0], atol=1e-5)
    running = fuse(params, ir, vis, bn="running")
    assert np.abs(running - batch).max() > 1e-3
    np.testing.assert_allclose(fuse(params, ir, vis), batch, atol=0)  # the default


def test_default_bn_is_per_image(params):
    rng = np.random.default_rng(5)
    ir, vis = rng.random((20, 24)), rng.random((20, 24))
    np.testing.assert_array_equal(fuse(params, ir, vis), fuse(params, ir, vis, bn="image"))
    assert np.abs(fuse(params, ir, vis) - fuse(params, ir, vis, bn="running")).max() > 1e-4


def test_bn_mode_is_ignored_without_batchnorm():
    """A model trained with norm=instance has no BatchNorm: bn="image" changes nothing."""
    import jax
    import jax.numpy as jnp

    from patchfuse_jax.fusing.saved import make_fuse_params
    from patchfuse_jax.nn.arch import GeneratorArch

    arch = GeneratorArch(num_downs=2, ngf=4, norm="instance")
    variables = arch.generator().init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)), train=False)
    assert not variables.get("batch_stats")
    p = make_fuse_params(variables, arch.as_dict(), step=0)
    rng = np.random.default_rng(4)
    ir, vis = rng.random((2, 12, 16)).astype(np.float32), rng.random((2, 12, 16)).astype(np.float32)
    np.testing.assert_array_equal(fuse(p, ir, vis, bn="image"), fuse(p, ir, vis))
    assert generator_fn(p.arch, "image") is generator_fn(p.arch)  # one program


def test_inference_executables_use_xla_kernels_on_cpu(params):
    """On CPU `fuse` compiles with INFERENCE_COMPILER_OPTIONS (nothing handed to YNNPACK);
    the result equals the default compilation to float32 rounding, in both BatchNorm modes."""
    import jax
    import jax.numpy as jnp

    from patchfuse_jax.nn import convs

    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only compiler options")
    assert convs.inference_compiler_options("auto") == convs.INFERENCE_COMPILER_OPTIONS
    assert convs.inference_compiler_options("xla") is None
    arch = dataclasses.replace(params.arch, ngf=16)  # channels > 16: convolutions YNNPACK would take
    variables = jax.jit(lambda: arch.generator().init(jax.random.key(0), jnp.zeros((1, 32, 32, 2)), train=False))()
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 32, 32, 2)), jnp.float32)

    def ynn_convs(text):
        return sum("__ynn_fusion" in line and "conv" in line for line in text.splitlines())

    def ynn_fusions(text):
        return text.count("__ynn_fusion")

    for bn in ("running", "image"):
        fn = generator_fn(arch, bn)
        ours = fn.lower(variables, x).compile()
        default = jax.jit(fn.__wrapped__).lower(variables, x).compile()
        assert ynn_fusions(ours.as_text()) == 0 < ynn_convs(default.as_text())
        np.testing.assert_allclose(ours(variables, x), default(variables, x), atol=1e-5)
