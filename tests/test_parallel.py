"""Data parallelism on 4 fake CPU devices: pmap == one device on the same global batch.

Tolerances (float32): metrics within 1e-4 relative, parameters within 1e-5 absolute after a
few Adam steps (seen: ~3e-8; summation order differs between the two programs).
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from patchfuse_jax.checkpoint import Checkpoints
from patchfuse_jax.train import data
from patchfuse_jax.train import loop as trainer
from patchfuse_jax.train.config import Config, ConfigError
from patchfuse_jax.train.parallel import Parallel
from patchfuse_jax.train.state import create_train_state
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.skipif(jax.local_device_count() < 4, reason="needs 4 (fake) devices")


def _cfg(**kw):
    return Config(**{**TINY, "batch_size": 4, **kw})


def _run_steps(cfg, n):
    par = Parallel(cfg)
    src = data.make_source("synthetic", synthetic_hw=cfg.synthetic_size, synthetic_pairs=cfg.synthetic_pairs)
    state = par.put_state(jax.device_get(create_train_state(cfg, par.axis_name)))
    step = par.compile_step(cfg)
    out = []
    for s in range(n):
        b = data.sample_batch(
            src,
            seed=cfg.seed,
            step=s,
            batch_size=par.global_batch,
            crop_hw=cfg.crop_size,
            start=par.slice[0],
            stop=par.slice[1],
        )
        state, m = step(state, par.put_batch(b))
        out.append({k: float(np.asarray(v).reshape(-1)[0]) for k, v in par.metrics(m).items()})
    return out, par.host_state(state)


def _assert_close_states(a, b, atol=1e-5):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=atol, rtol=0)


def test_pmap_4x1_matches_one_device_batch_of_4():
    single, s_state = _run_steps(_cfg(parallel="none"), 3)
    multi, m_state = _run_steps(_cfg(parallel="pmap", per_device_batch_size=1), 3)
    assert Parallel(_cfg(parallel="pmap", per_device_batch_size=1)).global_batch == 4
    for a, b in zip(single, multi):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)
    _assert_close_states(s_state, m_state)


def test_batch_size_must_divide_over_devices():
    with pytest.raises(ConfigError, match="per_device_batch_size"):
        Parallel(_cfg(parallel="pmap", batch_size=6))


def test_resume_across_device_counts(tmp_path):
    """Saved on 4 devices, resumed on 1 (and 1 -> 4): same as never switching."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    trainer.train_and_evaluate(_cfg(parallel="pmap", num_steps=2), a, show_progress=False)
    mixed = trainer.train_and_evaluate(_cfg(parallel="none", num_steps=4), a, show_progress=False)
    trainer.train_and_evaluate(_cfg(parallel="none", num_steps=2), b, show_progress=False)
    back = trainer.train_and_evaluate(_cfg(parallel="pmap", num_steps=4), b, show_progress=False)
    _assert_close_states(mixed, back)
    assert Checkpoints(a).latest_step() == 4 and Checkpoints(b).latest_step() == 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_on_four_devices(tmp_path):
    """2 processes x 2 fake devices over localhost (gloo) == 1 process x 4 devices."""
    flags = [f"--{k}={v}" for k, v in TINY.items() if k not in ("crop_size", "synthetic_size")]
    flags += [
        "--crop_size=32x32",
        "--synthetic_size=40x48",
        "--parallel=pmap",
        "--per_device_batch_size=1",
        "--num_steps=3",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    port = _free_port()
    multi = str(tmp_path / "multi")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "train.py"),
                f"--workdir={multi}",
                *flags,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    single = str(tmp_path / "single")
    r = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"--workdir={single}", *flags],
        env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = Checkpoints(multi), Checkpoints(single)
    assert a.latest_step() == b.latest_step() == 3
    _assert_close_states(a.restore_raw(3), b.restore_raw(3))
    with open(os.path.join(multi, "metrics.jsonl")) as f:
        assert len(f.readlines()) == 3  # only process 0 logs
