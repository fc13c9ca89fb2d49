"""The trained-model recipe's pieces: evaluation during training with a best export, the
selection criterion, pix2pix initialisation, learning-rate schedules, weighted content terms."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from patchfuse_jax import io
from patchfuse_jax.eval import metrics
from patchfuse_jax.fusing.api import fuse
from patchfuse_jax.fusing.saved import make_fuse_params
from patchfuse_jax.train import loop as trainer
from patchfuse_jax.train import losses
from patchfuse_jax.train.config import Config, ConfigError
from patchfuse_jax.train.state import create_train_state, learning_rate_schedule, make_models
from patchfuse_jax.train.synthetic import synthetic_pair
from patchfuse_jax.train.validation import Validator, selection_key, summarize
from tests.conftest import TINY


def _pair_folder(root, n=4, hw=(40, 48)):
    for d in ("ir", "vis"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(n):
        ir, vis = synthetic_pair(7, i, hw)
        io.save_image(os.path.join(root, "ir", f"p{i}.png"), ir)
        io.save_image(os.path.join(root, "vis", f"p{i}.png"), vis)
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("p0\np1\n")
    with open(os.path.join(root, "val.txt"), "w") as f:
        f.write("# validation\np2\np3\n")
    return root


def test_selection_counts_wins_then_margin():
    ref = dict(CC=1.0, MS_SSIM=0.8, SCD=1.0, FMI_dct=0.4, SSIM_a=0.7, PSNR=16.0)
    better = summarize({**ref, "SCD": 1.5, "PSNR": 15.0}, ref)  # 5 wins (ties count)
    worse = summarize({**ref, "SCD": 2.0, "PSNR": 15.0, "CC": 0.9}, ref)  # 4 wins, larger margin
    assert better["wins"] == 5 and worse["wins"] == 4
    assert worse["margin"] > better["margin"]
    assert selection_key(better, "wins_average") > selection_key(worse, "wins_average")


def test_mean_rank_selection_against_hand_ranks():
    names = list(metrics.DEFAULT_METRICS)
    panel = {"A": {m: 1.0 for m in names}, "B": {m: 2.0 for m in names}}
    # The model is best on the first 7 metrics and last on the other 7 (dense ranks 1 and 3).
    model = {m: (3.0 if i < 7 else 0.5) for i, m in enumerate(names)}
    s = summarize(model, {m: 1.0 for m in metrics.PAPER_METRICS}, panel)
    assert s["mean_rank"] == pytest.approx((7 * 1 + 7 * 3) / 14)
    tie = summarize({m: 2.0 for m in names}, {m: 1.0 for m in metrics.PAPER_METRICS}, panel)
    assert tie["mean_rank"] == 1.0  # ties at 4 decimals share the rank
    assert selection_key(tie) > selection_key(s)  # smaller mean rank wins ...
    assert (
        selection_key(s, "wins_average") > selection_key(tie, "wins_average") or s["wins"] == tie["wins"]
    )  # ... whatever the old criterion says
    with pytest.raises(ValueError, match="--selection"):
        selection_key(s, "best")


def test_config_rejects_unknown_selection():
    with pytest.raises(ConfigError, match="--selection"):
        Config(selection="psnr")


def test_validator_scores_average_fusion_as_evaluate_does(tmp_path):
    from patchfuse_jax.eval import baselines, metrics
    from patchfuse_jax.eval.evaluate import quantize

    root = _pair_folder(str(tmp_path / "d"))
    v = Validator(root, os.path.join(root, "val.txt"))
    assert len(v) == 2
    per = []
    for stem in ("p2", "p3"):
        a = io.read_image(os.path.join(root, "ir", stem + ".png")).astype(np.float64)
        b = io.read_image(os.path.join(root, "vis", stem + ".png")).astype(np.float64)
        f = quantize(baselines.average(a / 255.0, b / 255.0)).astype(np.float64)  # as evaluate.py
        per.append(metrics.compute(a, b, f, metrics.PAPER_METRICS))
    for m in metrics.PAPER_METRICS:
        np.testing.assert_allclose(v.average[m], np.mean([p[m] for p in per]), rtol=1e-12, equal_nan=True)


def test_training_evaluates_and_exports_the_best_step(tmp_path):
    from patchfuse_jax.fusing.api import fuse
    from patchfuse_jax.fusing.saved import load_export

    root = _pair_folder(str(tmp_path / "d"))
    wd = str(tmp_path / "run")
    cfg = Config(
        **{
            **TINY,
            "data_dir": root,
            "train_split": os.path.join(root, "train.txt"),
            "eval_split": os.path.join(root, "val.txt"),
            "eval_every": 2,
            "num_steps": 5,
        }
    )
    trainer.train_and_evaluate(cfg, wd, show_progress=False)
    rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
    evals = [r for r in rows if "val_wins" in r]
    assert [r["step"] for r in evals] == [2, 4, 5]  # every 2 steps and at the end
    best = json.load(open(os.path.join(wd, "best.json")))
    chosen = min(evals, key=lambda r: (r["val_mean_rank"], -r["val_wins"], -r["val_margin"]))
    assert best["step"] == chosen["step"] and best["selection"] == "mean_rank"
    assert set(best["panel"]) == {"Average", "Max", "LP", "GFF", "v1"}
    assert all(len(v) == 14 for v in best["panel"].values())
    params = load_export(os.path.join(wd, "best.msgpack"))
    assert params.step == best["step"]
    out = fuse(params, *synthetic_pair(7, 2, (40, 48)))
    assert out.shape == (40, 48) and np.isfinite(out).all()


def test_old_criterion_still_selects_and_a_changed_one_restarts_the_best(tmp_path, caplog):
    root = _pair_folder(str(tmp_path / "d"))
    wd = str(tmp_path / "run")
    base = {
        **TINY,
        "data_dir": root,
        "train_split": os.path.join(root, "train.txt"),
        "eval_split": os.path.join(root, "val.txt"),
        "eval_every": 2,
        "num_steps": 4,
        "selection": "wins_average",
    }
    trainer.train_and_evaluate(Config(**base), wd, show_progress=False)
    rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
    evals = [r for r in rows if "val_wins" in r]
    assert all("val_mean_rank" not in r and "val_EN" not in r for r in evals)  # six metrics only
    best = json.load(open(os.path.join(wd, "best.json")))
    assert best["selection"] == "wins_average" and best["panel"] is None
    assert best["step"] == max(evals, key=lambda r: (r["val_wins"], r["val_margin"]))["step"]
    trainer.train_and_evaluate(Config(**{**base, "num_steps": 6, "selection": "mean_rank"}), wd, show_progress=False)
    assert "starting a new best by --selection=mean_rank" in caplog.text
    best = json.load(open(os.path.join(wd, "best.json")))
    assert best["selection"] == "mean_rank" and best["step"] == 6


def test_eval_every_needs_a_split():
    with pytest.raises(ConfigError, match="--eval_every"):
        Config(eval_every=10)


def test_pix2pix_init_statistics():
    cfg = Config(**{**TINY, "ngf": 16, "init": "pix2pix"})
    state = create_train_state(cfg)
    flat = jax.tree_util.tree_flatten_with_path(state.g.params)[0]
    kernels = np.concatenate([np.ravel(v) for p, v in flat if "kernel" in str(p[-1])])
    scales = np.concatenate([np.ravel(v) for p, v in flat if "scale" in str(p[-1])])
    assert abs(kernels.std() - 0.02) < 0.002 and abs(kernels.mean()) < 0.002
    assert abs(scales.mean() - 1.0) < 0.025 and 0.005 < scales.std() < 0.04  # 16 values
    default = create_train_state(Config(**{**TINY, "ngf": 16}))
    k0 = np.ravel(default.g.params["Conv_1"]["kernel"])
    assert k0.std() > 0.05  # LeCun normal: 1/sqrt(fan_in), far from 0.02


@pytest.mark.parametrize(
    "name,at",
    [
        ("constant", [1, 1, 1, 1]),
        ("linear", [1, 1, 0.5, 0.0]),
        ("cosine", [1, 0.5 + 0.5 * np.cos(np.pi * 0.25), 0.5, 0.0]),
    ],
)
def test_learning_rate_schedules(name, at):
    cfg = Config(**{**TINY, "num_steps": 100, "learning_rate": 1.0, "lr_schedule": name})
    sched = learning_rate_schedule(cfg)
    got = [float(sched(s)) for s in (0, 25, 75 if name == "linear" else 50, 100)]
    np.testing.assert_allclose(got, at, atol=1e-6)


def test_content_weights_scale_their_terms():
    total = losses.generator_loss(0.3, 0.02, 0.25, 0.5, gamma=0.1, lam=0.5, ssim_weight=2.0, mse_weight=10.0)
    assert float(total) == pytest.approx(2 * 0.3 + 10 * 0.02 + 0.1 * 0.25 + 0.5 * 0.5)
    assert float(losses.generator_loss(0.3, 0.02, 0.25, 0.5, gamma=0.1, lam=0.5)) == pytest.approx(
        0.3 + 0.02 + 0.025 + 0.25
    )  # Eq. 6 as printed


def test_bfloat16_compute_keeps_float32_state_and_trains():
    import functools

    from patchfuse_jax.train.step import train_step

    cfg = Config(**{**TINY, "compute_dtype": "bfloat16"})
    state = create_train_state(cfg)
    rng = np.random.default_rng(0)
    batch = {k: jnp.asarray(rng.random((2, 32, 32, 1), np.float32)) for k in ("ir", "vis")}
    step = jax.jit(functools.partial(train_step, cfg=cfg))
    new, m = step(state, batch)
    leaves = jax.tree_util.tree_leaves(
        (new.g.params, new.g.opt_state, new.g.batch_stats, new.d_ir.params, new.d_ir.batch_stats)
    )
    assert all(x.dtype == jnp.float32 for x in leaves if jnp.issubdtype(x.dtype, jnp.floating))
    assert all(np.isfinite(float(v)) for v in m.values())
    # bf16 rounding only: the same step in float32 gives nearly the same losses.
    _, m32 = jax.jit(functools.partial(train_step, cfg=Config(**TINY)))(create_train_state(Config(**TINY)), batch)
    assert float(m["l_ssim"]) == pytest.approx(float(m32["l_ssim"]), rel=0.05)


@pytest.mark.parametrize("version,flagfile", [(None, "shipped"), ("v1", "v1")])
def test_shipped_weights_match_their_recipe(version, flagfile):
    """patchfuse_jax/weights/default.msgpack was trained with configs/recipe/shipped.flags and
    weights/v1.msgpack with configs/recipe/v1.flags: same generator architecture, under 10 MB,
    and the recorded config carries the recipe's losses."""
    import subprocess
    import sys

    from patchfuse_jax.fusing.saved import default_weights, read_export_metadata
    from patchfuse_jax.nn.arch import GeneratorArch
    from tests.conftest import REPO

    res = default_weights(version)
    if not res.is_file():
        pytest.skip("no such weights shipped")
    meta = read_export_metadata(str(res))
    assert res.stat().st_size < 10 * 1024 * 1024
    code = (
        "import json\nfrom absl import flags\nimport train\n"
        f"flags.FLAGS(['train.py', '--workdir=x', '--flagfile=configs/recipe/{flagfile}.flags'])\n"
        "print(json.dumps(train.config_from_flags().to_dict()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    recipe = json.loads(r.stdout.strip().splitlines()[-1])
    assert GeneratorArch.from_config(meta["arch"]) == GeneratorArch.from_config(recipe)
    for k in (
        "ssim_weight",
        "mse_weight",
        "detail_weight",
        "gamma",
        "lam",
        "weight_mode",
        "train_split",
        "num_steps",
        "eval_every",
        "seed",
        "contrast_weight",
        "contrast_window",
        "global_contrast_weight",
        "cc_weight",
        "ir_intensity_weight",
    ):
        # Keys newer than a model are absent from its config: it trained with their default.
        assert meta["config"].get(k, Config().to_dict()[k]) == recipe[k], k


@pytest.mark.parametrize("input_skip", [False, True])
@pytest.mark.parametrize("init", ["flax", "pix2pix"])
def test_residual_average_generator_starts_as_average_fusion(init, input_skip):
    """--output=residual_average: the zero-initialised ``residual`` layer survives both inits, so
    the untrained generator returns the pixel average (to float32 rounding, away from 0 and 1)."""
    cfg = Config(**{**TINY, "init": init, "input_skip": input_skip, "output": "residual_average"})
    state = create_train_state(cfg)
    head = state.g.params["residual"]
    assert all(float(np.abs(v).max()) == 0.0 for v in jax.tree_util.tree_leaves(head))
    ir, vis = synthetic_pair(3, 2, (40, 48))
    params = make_fuse_params({"params": state.g.params, "batch_stats": state.g.batch_stats}, cfg.to_dict())
    out = fuse(params, ir, vis)
    avg = np.clip((ir.astype(np.float64) + vis) / 2, 1 / 512, 1 - 1 / 512)  # floats in [0, 1]
    np.testing.assert_allclose(out, avg, atol=1e-6)


def test_residual_average_learns_a_correction():
    """The residual head receives gradients: the generator moves away from the average."""
    cfg = Config(**{**TINY, "output": "residual_average"})
    gen, _ = make_models(cfg)
    state = create_train_state(cfg)
    x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 2))
    variables = {"params": state.g.params, "batch_stats": state.g.batch_stats}
    loss = lambda p: jnp.mean((gen.apply({**variables, "params": p}, x, train=False) - 0.9) ** 2)
    grads = jax.grad(loss)(state.g.params)
    assert float(np.abs(grads["residual"]["kernel"]).max()) > 0
