"""Shared test fixtures. Tests run on CPU; `SHARED_DATA` points at ../shared/data when present."""

import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Fake 4 CPU devices (before jax is imported) so data-parallel code runs in tests; single-device
# code uses device 0 as usual.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("PATCHFUSE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> pathlib.Path:
    """Path under ../shared/data, skipping the calling test when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture
def shared():
    return shared_data


def _enable_compilation_cache():
    """Tests build the same tiny programs many times; a disk cache compiles each once."""
    import tempfile

    import jax

    cache = os.environ.get("PATCHFUSE_TEST_JAX_CACHE") or os.path.join(
        tempfile.gettempdir(), "patchfuse_jax_test_cache"
    )
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


_enable_compilation_cache()

# A tiny architecture shared by the training tests (one compile per shape, cached).
TINY = dict(
    num_downs=2,
    ngf=4,
    ndf=4,
    d_arch="4s2,4s2,4s1",
    crop_size=(32, 32),
    batch_size=2,
    synthetic_size=(40, 48),
    synthetic_pairs=6,
    learning_rate=1e-3,
    log_every=1,
    sample_every=1000,
    checkpoint_every=1000,
)


def tiny_model_export(folder, norm: str, seed: int, step: int):
    """A tiny random generator (2 levels, ngf 4) exported to ``folder/tiny.msgpack``:
    ``(path, FuseParams)``."""
    import jax
    import jax.numpy as jnp

    from patchfuse_jax.fusing.saved import export_generator, make_fuse_params
    from patchfuse_jax.nn.models import Generator

    arch = dict(num_downs=2, ngf=4, norm=norm)
    variables = Generator(**arch).init(jax.random.key(seed), jnp.zeros((1, 8, 8, 2)), train=False)
    params = make_fuse_params(variables, arch, step=step)
    path = os.path.join(str(folder), "tiny.msgpack")
    export_generator(params, path)
    return path, params
