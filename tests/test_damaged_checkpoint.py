"""A damaged latest checkpoint (its files emptied): training resumes from the newest readable
one, load_checkpoint(workdir) loads it, each with one warning naming the damaged step; none
readable: one error line."""

import logging
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from patchfuse_jax import load_checkpoint, workdir
from patchfuse_jax.checkpoint import CheckpointError, Checkpoints
from patchfuse_jax.train import loop as trainer
from patchfuse_jax.train.config import Config
from tests.conftest import REPO, TINY

CFG = Config(**{**TINY, "num_steps": 4, "checkpoint_every": 2})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir trained to step 4 with checkpoints at steps 2 and 4."""
    wd = str(tmp_path_factory.mktemp("run") / "w")
    trainer.train_and_evaluate(CFG, wd, show_progress=False)
    return wd


def _copy_with_damaged(src, dst, steps):
    shutil.copytree(src, dst)
    for step in steps:
        for root, _, files in os.walk(os.path.join(dst, "checkpoints", str(step))):
            for f in files:
                open(os.path.join(root, f), "w").close()  # every file of the step emptied
    return dst


def _resume_to_step_6_past_damaged_step_4(wd, caplog):
    with caplog.at_level(logging.WARNING, logger="patchfuse_jax"):
        state = trainer.train_and_evaluate(
            Config(**{**TINY, "num_steps": 6, "checkpoint_every": 2}), wd, show_progress=False
        )
    assert int(state.step) == 6
    lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and "step 4 is damaged" in lines[0]


def test_resume_falls_back_to_the_newest_readable_step(trained, tmp_path, caplog):
    wd = _copy_with_damaged(trained, str(tmp_path / "w"), [4])
    _resume_to_step_6_past_damaged_step_4(wd, caplog)
    # Set aside, never deleted; the resumed run saved step 4 again and went on to 6.
    assert os.listdir(os.path.join(wd, workdir.DAMAGED)) == ["4"]
    assert (
        os.path.getsize(next(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(wd, workdir.DAMAGED)) for f in fs))
        == 0
    )
    ckpts = Checkpoints(wd, read_only=True)
    assert sorted(ckpts.manager.all_steps()) == [2, 4, 6]
    ckpts.close()


def test_load_checkpoint_skips_the_damaged_step_with_one_warning(trained, tmp_path):
    wd = _copy_with_damaged(trained, str(tmp_path / "w"), [4])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        params = load_checkpoint(wd)
    assert params.step == 2
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "step 4 is damaged; loaded step 2" in msgs[0]
    assert os.path.isdir(os.path.join(wd, "checkpoints", "4"))  # loading never moves anything


def test_no_readable_checkpoint_is_one_line(trained, tmp_path):
    wd = _copy_with_damaged(trained, str(tmp_path / "w"), [2, 4])
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_checkpoint(wd)
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            f"--workdir={wd}",
            "--data_dir=synthetic",
            "--num_downs=2",
            "--ngf=4",
            "--ndf=4",
            "--d_arch=4s2,4s2,4s1",
            "--crop_size=32x32",
            "--batch_size=2",
            "--synthetic_size=40x48",
            "--synthetic_pairs=6",
            "--num_steps=6",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if "error" in ln.lower() and "no readable checkpoint" in ln]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-1500:]


def test_fusing_users_see_no_orbax_warnings(trained, capfd):
    load_checkpoint(trained)
    assert "read only" not in capfd.readouterr().err


def test_resume_falls_back_when_only_the_array_data_is_damaged(trained, tmp_path, caplog):
    wd = str(tmp_path / "w")
    shutil.copytree(trained, wd)
    for root, _, files in os.walk(os.path.join(wd, "checkpoints", "4", "state")):
        if os.path.basename(root) == "d":  # array chunks gone; config and tree metadata intact
            for f in files:
                os.remove(os.path.join(root, f))
    _resume_to_step_6_past_damaged_step_4(wd, caplog)
    assert os.listdir(os.path.join(wd, workdir.DAMAGED)) == ["4"]
