"""The training loop: outputs, exact resume, Ctrl-C, non-finite stop, incompatible checkpoints."""

import json
import os

import jax
import numpy as np
import pytest

from patchfuse_jax.checkpoint import CheckpointError, Checkpoints
from patchfuse_jax.train import data
from patchfuse_jax.train import loop as trainer
from patchfuse_jax.train.config import Config
from tests.conftest import TINY


def _cfg(**kw):
    return Config(**{**TINY, **kw})


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _leaves(state):
    return jax.tree_util.tree_leaves(jax.device_get(state))


def test_run_writes_metrics_samples_checkpoints(tmp_path):
    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=3, sample_every=2), wd, show_progress=False)
    rows = _metrics(wd)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("step", "loss_g", "loss_d_ir", "loss_d_vis", "grad_norm_g", "d_ir_real"):
        assert key in rows[0]
    assert sorted(os.listdir(os.path.join(wd, "samples"))) == ["step_0000002.png", "step_0000003.png"]
    assert Checkpoints(wd).latest_step() == 3
    assert json.load(open(os.path.join(wd, "config.json")))["ngf"] == TINY["ngf"]


def test_resume_is_exact(tmp_path):
    """N steps, stop, resume to 2N == 2N steps straight through (CPU, bit-exact)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    trainer.train_and_evaluate(_cfg(num_steps=3), a, show_progress=False)
    resumed = trainer.train_and_evaluate(_cfg(num_steps=6), a, show_progress=False)
    straight = trainer.train_and_evaluate(_cfg(num_steps=6), b, show_progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in rows]
    assert strip(_metrics(a)) == strip(_metrics(b))
    assert all(np.array_equal(x, y) for x, y in zip(_leaves(resumed), _leaves(straight)))


class _InterruptAt(data.Batches):
    stop_at = 3

    def __next__(self):
        if self._next_step == self.stop_at:
            raise KeyboardInterrupt
        return super().__next__()


def test_ctrl_c_saves_checkpoint_and_rerun_continues(tmp_path, monkeypatch):
    wd = str(tmp_path / "run")
    monkeypatch.setattr(data, "Batches", _InterruptAt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(_cfg(num_steps=5), wd, show_progress=False)
    assert Checkpoints(wd).latest_step() == 3
    monkeypatch.undo()
    trainer.train_and_evaluate(_cfg(num_steps=5), wd, show_progress=False)
    assert [r["step"] for r in _metrics(wd)] == [1, 2, 3, 4, 5]


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    wd = str(tmp_path / "run")
    real = data.sample_batch

    def poisoned(source, *, step, **kw):
        b = real(source, step=step, **kw)
        if step == 2:  # the batch of the 3rd step
            b["ir"][:] = np.nan
        return b

    monkeypatch.setattr(data, "sample_batch", poisoned)
    with pytest.raises(trainer.NonFiniteError, match="step 3"):
        trainer.train_and_evaluate(_cfg(num_steps=6, checkpoint_every=2, log_every=4), wd, show_progress=False)
    ckpts = Checkpoints(wd)
    assert ckpts.latest_step() == 2
    restored = ckpts.restore_raw(2)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(restored["g"]["params"]))


def test_incompatible_architecture_is_refused(tmp_path):
    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=1), wd, show_progress=False)
    with pytest.raises(CheckpointError, match="ngf: checkpoint 4 vs now 8"):
        trainer.train_and_evaluate(_cfg(num_steps=2, ngf=8), wd, show_progress=False)


def test_data_error_mid_run_saves_work_done(tmp_path, monkeypatch):
    wd = str(tmp_path / "run")
    real = data.sample_batch

    def failing(source, *, step, **kw):
        if step == 2:
            raise data.DataError("some.png: cannot be read as an image")
        return real(source, step=step, **kw)

    monkeypatch.setattr(data, "sample_batch", failing)
    with pytest.raises(data.DataError, match="some.png"):
        trainer.train_and_evaluate(_cfg(num_steps=5), wd, show_progress=False)
    assert Checkpoints(wd).latest_step() == 2
