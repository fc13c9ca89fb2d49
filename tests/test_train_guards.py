"""Guards of train.py / the trainer: flags generated from Config, resuming with changed flags,
unusable workdirs and a metrics.jsonl cut by a crash."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import pytest
from absl import flags

from patchfuse_jax import workdir
from patchfuse_jax.train import loop as trainer
from patchfuse_jax.train.config import (
    RESUME_SAFE_KEYS,
    Config,
    ConfigChangeError,
    ConfigError,
    config_changes,
    config_from_flags,
    define_flags,
    global_batch,
    parse_hw,
)
from tests.conftest import REPO, TINY


def _cfg(**kw):
    return Config(**{**TINY, **kw})


def _flag_values(*argv):
    fv = flags.FlagValues()
    define_flags(fv)
    fv(["train.py", *argv])
    return fv


def _tiny_flags(**kw):
    return [f"--{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in {**TINY, **kw}.items()]


def _train_py(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True, timeout=180, env=env, cwd=REPO
    )


def _json(path):
    with open(path) as f:
        return json.load(f)


# --- Flags generated from Config ---------------------------------------------------------------


def test_every_config_field_is_a_flag_with_its_default_and_help():
    fv = _flag_values()
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(fields) == set(fv)  # one flag per field, nothing else
    for name, f in fields.items():
        flag = fv[name]
        hw = name in ("crop_size", "synthetic_size")
        default = parse_hw(flag.default, name) if hw else flag.default
        assert default == f.default and type(default) is type(f.default), name
        assert flag.help and flag.help == f.metadata["help"], name
    assert config_from_flags(fv) == Config()


def test_flag_types_and_values_reach_the_config():
    cfg = config_from_flags(
        _flag_values("--ngf=8", "--gamma=0.25", "--input_skip", "--crop_size=64x96", "--weight_mode=g")
    )
    assert (cfg.ngf, cfg.gamma, cfg.input_skip, cfg.crop_size, cfg.weight_mode) == (8, 0.25, True, (64, 96), "g")
    with pytest.raises(flags.IllegalFlagValueError):
        _flag_values("--ngf=wide")


def test_flagfile_still_parses_and_command_line_overrides(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = config_from_flags(_flag_values("--flagfile=configs/demo.flags", "--num_steps=7"))
    assert (cfg.ngf, cfg.crop_size, cfg.batch_size, cfg.num_steps) == (16, (64, 64), 4, 7)


def test_help_lists_the_generated_flags():
    r = _train_py("--help")  # absl exits 1 after --help
    for name in ("--gamma", "--crop_size", "--[no]allow_config_change", "--workdir", "--[no]input_skip"):
        assert name in r.stdout, name


# --- Which changes the resume guard reports --------------------------------------------------


def _changes(saved, now):
    return config_changes(saved.to_dict(), now.to_dict())


def test_training_keys_are_reported_and_safe_keys_are_not():
    base = Config()
    assert _changes(base, dataclasses.replace(base, gamma=0.5)) == ["--gamma: 0.1 (workdir) vs 0.5 (now)"]
    assert _changes(base, dataclasses.replace(base, weight_mode="g", crop_size=(128, 128))) == [
        "--weight_mode: 'dg' (workdir) vs 'g' (now)",
        "--crop_size: 256x512 (workdir) vs 128x128 (now)",
    ]
    safe = dict(
        num_steps=5,
        log_every=1,
        checkpoint_every=2,
        sample_every=3,
        keep_checkpoints=1,
        eval_every=4,
        eval_split="val.txt",
        selection="wins_average",
        conv_impl="xla",
        batch_size=2,
        parallel="pmap",
        per_device_batch_size=2,
    )
    assert set(safe) == set(RESUME_SAFE_KEYS)
    assert _changes(base, dataclasses.replace(base, **safe)) == []


def test_num_steps_counts_when_the_learning_rate_schedule_depends_on_it():
    lin = Config(lr_schedule="linear")
    assert _changes(lin, dataclasses.replace(lin, num_steps=20000)) == ["--num_steps: 10000 (workdir) vs 20000 (now)"]


def test_batch_settings_compare_through_the_global_batch():
    one = {**Config(batch_size=8).to_dict(), "global_batch": 8}
    pmap = Config(parallel="pmap", per_device_batch_size=2).to_dict()
    assert global_batch(pmap, 4) == 8 and global_batch(one, 4) == 8
    assert config_changes(one, {**pmap, "global_batch": 8}) == []
    assert config_changes(one, {**pmap, "global_batch": 4}) == [
        "global batch (--batch_size, --parallel, --per_device_batch_size): 8 (workdir) vs 4 (now)"
    ]


def test_keys_missing_from_an_older_config_take_the_default():
    old = Config().to_dict()
    del old["weight_scale"]
    assert config_changes(old, Config().to_dict()) == []
    assert config_changes(old, Config(weight_scale="mean1").to_dict()) == [
        "--weight_scale: 'raw' (workdir) vs 'mean1' (now)"
    ]


# --- Resuming a workdir with changed flags -----------------------------------------------------


def test_changed_training_flag_stops_resume_and_keeps_config_json(tmp_path):
    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=1), wd, show_progress=False)
    with pytest.raises(ConfigChangeError, match=r"--gamma: 0.1 \(workdir\) vs 0.5 \(now\).*allow_config_change"):
        trainer.train_and_evaluate(_cfg(num_steps=2, gamma=0.5), wd, show_progress=False)
    assert _json(os.path.join(wd, "config.json"))["gamma"] == 0.1
    assert not os.path.exists(os.path.join(wd, "config_history.jsonl"))
    assert [r["step"] for r in workdir.read_metrics(wd)] == [1]


def test_train_py_reports_changed_flags_in_one_line(tmp_path):
    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=1), wd, show_progress=False)
    r = _train_py(f"--workdir={wd}", *_tiny_flags(num_steps=2, gamma=0.5, seed=3, log_every=5))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "--gamma: 0.1 (workdir) vs 0.5 (now)" in lines[0]
    assert "--seed: 0 (workdir) vs 3 (now)" in lines[0]
    assert "--allow_config_change" in lines[0] and "log_every" not in lines[0]


def test_allow_config_change_continues_and_keeps_the_history(tmp_path):
    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=1), wd, show_progress=False)
    trainer.train_and_evaluate(_cfg(num_steps=2, gamma=0.5), wd, show_progress=False, allow_config_change=True)
    trainer.train_and_evaluate(_cfg(num_steps=3, gamma=0.5, lam=0.2), wd, show_progress=False, allow_config_change=True)
    now = _json(os.path.join(wd, "config.json"))
    assert (now["gamma"], now["lam"], now["global_batch"]) == (0.5, 0.2, TINY["batch_size"])
    history = workdir.read_jsonl(os.path.join(wd, "config_history.jsonl"))
    assert [(h["from_step"], h["until_step"]) for h in history] == [(0, 1), (1, 2)]
    assert [(h["config"]["gamma"], h["config"]["lam"]) for h in history] == [(0.1, 0.5), (0.5, 0.5)]
    assert [r["step"] for r in workdir.read_metrics(wd)] == [1, 2, 3]
    # The same flags again: nothing changed, nothing recorded.
    trainer.train_and_evaluate(_cfg(num_steps=3, gamma=0.5, lam=0.2), wd, show_progress=False)
    assert len(workdir.read_jsonl(os.path.join(wd, "config_history.jsonl"))) == 2


def test_architecture_change_is_refused_even_when_allowed(tmp_path):
    from patchfuse_jax.checkpoint import CheckpointError

    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=1), wd, show_progress=False)
    with pytest.raises(CheckpointError, match="ngf: checkpoint 4 vs now 8"):
        trainer.train_and_evaluate(_cfg(num_steps=2, ngf=8), wd, show_progress=False, allow_config_change=True)


# --- Unusable workdirs ---------------------------------------------------------------------------


def test_workdir_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = _train_py(f"--workdir={f}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: --workdir={f}: is a file, not a folder"
    with pytest.raises(ConfigError, match=r"--workdir=.*file/sub: cannot write there"):
        trainer.train_and_evaluate(_cfg(), str(f / "sub"), show_progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_workdir_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for wd in (ro, ro / "run"):
            with pytest.raises(ConfigError, match=f"--workdir={wd}: cannot write there"):
                trainer.train_and_evaluate(_cfg(), str(wd), show_progress=False)
    finally:
        ro.chmod(0o700)


def test_unwritable_workdir_message_even_as_root(tmp_path, monkeypatch):
    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(trainer.tempfile, "TemporaryFile", denied)
    with pytest.raises(ConfigError, match=r"cannot write there \(Permission denied\)$"):
        trainer.train_and_evaluate(_cfg(), str(tmp_path), show_progress=False)


# --- metrics.jsonl cut by a crash ------------------------------------------------------------------


def test_read_jsonl_skips_a_cut_last_line_and_names_a_broken_middle_line(tmp_path, caplog):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "loss')
    with caplog.at_level(logging.WARNING, logger="patchfuse_jax"):
        assert workdir.read_metrics(str(p)) == [{"step": 1}, {"step": 2}]
    assert "metrics.jsonl:3" in caplog.text
    p.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(workdir.JsonlError, match=r"metrics.jsonl:2: not a JSON line"):
        workdir.read_metrics(str(tmp_path))
    assert workdir.read_jsonl(str(tmp_path / "absent.jsonl")) == []


def test_resume_drops_a_metrics_line_cut_by_a_crash(tmp_path, caplog):
    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(_cfg(num_steps=2), wd, show_progress=False)
    path = os.path.join(wd, "metrics.jsonl")
    with open(path, "a") as f:
        f.write('{"step": 3, "steps_per_sec": 1.')  # the crash cut the write of step 3
    with caplog.at_level(logging.WARNING, logger="patchfuse_jax"):
        trainer.train_and_evaluate(_cfg(num_steps=4), wd, show_progress=False)
    assert "cut short" in caplog.text
    with open(path) as f:
        lines = f.read().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]


def test_a_signal_inside_a_step_stops_after_the_step():
    """The donated state survives Ctrl-C/SIGTERM in a step: the block finishes, then the installed
    handler runs; a second signal stops at once; the previous handlers are restored."""
    import signal

    calls = []

    def on_term(signum, frame):
        calls.append(signum)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, on_term)
    # Python's default, unless the test runs as a background job (SIGINT ignored by the shell).
    int_before = signal.getsignal(signal.SIGINT)
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt):
            with trainer._stop_after_step():
                signal.raise_signal(signal.SIGTERM)
                finished.append("step")  # still runs: the signal was held
        assert finished == ["step"] and calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is on_term
        assert signal.getsignal(signal.SIGINT) is int_before

        with pytest.raises(KeyboardInterrupt):
            with trainer._stop_after_step():
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)  # the second one stops now
                finished.append("not reached")
        assert finished == ["step"]
        assert signal.getsignal(signal.SIGINT) is int_before
    finally:
        signal.signal(signal.SIGTERM, before)
