"""train.py: flags, flagfiles and clear one-line errors (no JAX traceback)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _train(*args, timeout=120):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "flag,needle",
    [
        ("--weight_mode=both", "--weight_mode='both'"),
        ("--weight_pooling=median", "--weight_pooling='median'"),
        ("--crop_size=12xfoo", "--crop_size='12xfoo'"),
        ("--d_arch=7x7", "--d_arch='7x7'"),
        ("--norm=layer", "--norm='layer'"),
    ],
)
def test_bad_flag_values_name_the_flag(tmp_path, flag, needle):
    r = _train(f"--workdir={tmp_path}", flag)
    assert r.returncode == 1
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_missing_data_folder_is_named(tmp_path):
    r = _train(f"--workdir={tmp_path}", f"--data_dir={tmp_path / 'nowhere'}")
    assert r.returncode == 1
    assert "nowhere" in r.stderr and "Traceback" not in r.stderr


def test_crop_larger_than_padded_image(tmp_path):
    r = _train(f"--workdir={tmp_path}", "--data_dir=synthetic", "--synthetic_size=32x32", "--crop_size=128x128")
    assert r.returncode == 1
    assert "crop" in r.stderr and "Traceback" not in r.stderr


def test_unknown_flag_is_refused(tmp_path):
    r = _train(f"--workdir={tmp_path}", "--no_such_flag=1")
    assert r.returncode != 0 and "no_such_flag" in r.stderr


def test_every_shipped_flagfile_parses():
    """Each configs/**/*.flags builds a valid Config (no training), parsed in one process."""
    files = sorted(str(f) for f in (REPO / "configs").rglob("*.flags"))
    assert len(files) >= 3
    code = (
        "import sys\n"
        "from absl import flags\n"
        "import train\n"
        "for f in sys.argv[1:]:\n"
        "    flags.FLAGS.unparse_flags()\n"
        "    flags.FLAGS(['train.py', '--workdir=x', '--flagfile=' + f])\n"
        "    print(f, train.config_from_flags().weight_mode)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == len(files)


def test_misaligned_pair_stops_before_training_naming_both_files(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    root = tmp_path / "pairs"
    for sub in ("ir", "vis"):
        (root / sub).mkdir(parents=True)
    for stem, (h_ir, h_vis) in {"a": (40, 40), "b": (40, 44)}.items():
        iio.imwrite(root / "ir" / f"{stem}.png", np.zeros((h_ir, 40), np.uint8))
        iio.imwrite(root / "vis" / f"{stem}.png", np.zeros((h_vis, 40, 3), np.uint8))
    r = _train(f"--workdir={tmp_path / 'run'}", f"--data_dir={root}", "--crop_size=32x32")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "b.png" in r.stderr and "40x40" in r.stderr and "44x40" in r.stderr


def test_sigterm_saves_a_checkpoint_like_ctrl_c(tmp_path):
    """`kill` (SIGTERM, what schedulers send) stops train.py with a checkpoint of the work done."""
    import signal
    import time

    wd = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    p = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--flagfile=configs/demo.flags",
            f"--workdir={wd}",
            "--num_steps=100000",
            "--log_every=1",
            "--checkpoint_every=100000",
            "--sample_every=100000",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not (wd / "metrics.jsonl").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.5)
        assert (wd / "metrics.jsonl").exists(), p.stderr.read() if p.poll() is not None else "no metrics"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err[-2000:]
    assert "saved checkpoint" in err
    assert any(name.isdigit() for name in os.listdir(wd / "checkpoints"))
