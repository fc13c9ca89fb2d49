"""python scripts/reproduce.py --suite=paper_weights (issue 21): the plan, the flagfiles,
per-image values and W's effect in the result files, and the report with significance and verdicts."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

import report
import reproduce
from tests.conftest import REPO
from tests.test_reproduce import _pairs, _tiny_flagfile

M = report.METRICS
PW = reproduce.SUITES["paper_weights"]


def test_plan_is_15_compact_runs_then_the_two_large_ones():
    runs = reproduce.suite_plan(PW, PW.default_only, 3)
    assert len(runs) == len(set(runs)) == 17
    assert runs[-2:] == [("large_none", 0), ("large_dg", 0)]
    assert {n for n, _ in runs[:5]} == {"table1_none", "table1_d", "table1_g", "table1_dg", "table5_max"}
    assert all(s == 0 for _, s in runs[:5]) and sorted({s for _, s in runs[:15]}) == [0, 1, 2]
    assert reproduce.suite_plan(PW, ["g05"], 3) == [("table1_none_g05", 0), ("table1_dg_g05", 0)]
    # the default suite is unchanged
    assert reproduce.suite_plan(reproduce.SUITES["repro"], ["table1", "none"], 3) == reproduce.plan_runs(
        ["table1", "none"], 3
    )


def test_flagfiles_are_the_papers_setting():
    from absl import flags

    from patchfuse_jax.train import config

    want = {
        "table1_none": ("none", "avg"),
        "table1_d": ("d", "avg"),
        "table1_g": ("g", "avg"),
        "table1_dg": ("dg", "avg"),
        "table5_max": ("dg", "max"),
        "large_none": ("none", "avg"),
        "large_dg": ("dg", "avg"),
        "table1_none_g05": ("none", "avg"),
        "table1_dg_g05": ("dg", "avg"),
    }
    assert set(want) == set(PW.experiments)
    for name, (mode, pool) in want.items():
        fv = flags.FlagValues()
        config.define_flags(fv)
        fv(["x", f"--flagfile={REPO / PW.configs / (name + '.flags')}"])
        c = config.config_from_flags(fv)
        assert (c.weight_mode, c.weight_pooling) == (mode, pool), name
        terms = (c.ssim_weight, c.mse_weight, c.detail_weight, c.ir_intensity_weight, c.contrast_weight)
        assert terms == (1, 1, 0, 0, 0), name
        paper = (c.norm, c.batch_size, c.d_arch, c.learning_rate, c.lr_schedule, c.output, c.upsample)
        assert paper == ("batch", 1, "paper65", 1e-4, "constant", "direct", "transpose"), name
        assert (c.input_skip, c.selection) == (False, "wins_average"), name
        assert (c.lam, c.gamma) == ((0.5, 0.5) if name.endswith("_g05") else (0.5, 0.1)), name
        large = name.startswith("large")
        assert (c.ngf, c.ndf, c.crop_size) == ((32, 32, (256, 512)) if large else (16, 16, (128, 256))), name
        assert c.num_steps % c.checkpoint_every == 0 and c.checkpoint_every <= 500


def _doc(name, seed, shift, w=1.0, noise=0.0):
    """A fake run result: per-image values ``base_i + shift (+ noise)`` on 20 test pairs."""
    rng = np.random.default_rng(hash((name, seed)) % 2**32)
    per = {
        f"s{i:02d}": {m: 1.0 + 0.01 * i + (15 if m == "PSNR" else 0) + shift + noise * rng.standard_normal() for m in M}
        for i in range(20)
    }
    we = {s: {"intensity": 0.5 * w + 0.001 * i, "contrast": 0.4 * w} for i, s in enumerate(per)}
    return {
        "experiment": name,
        "seed": seed,
        "final_step": 1500,
        "minutes": 6.0,
        "config": {"selection": "wins_average"},
        "machine": {"processor": "CPU", "cpu_count": 2},
        "test": {
            "mean": {m: float(np.mean([v[m] for v in per.values()])) for m in M},
            "per_image": per,
            "w_effect": {
                "size": 65,
                "top": 0.1,
                "mean": {k: float(np.mean([v[k] for v in we.values()])) for k in ("intensity", "contrast")},
                "per_image": we,
            },
        },
    }


def test_report_only_gives_verdicts_from_the_json_alone(tmp_path):
    res = tmp_path / "results"
    spec = {
        "table1_none": (0.0, 1.0, 0.0),
        "table1_dg": (0.01, 1.2, 0.0),  # dg: higher on every pair
        "table1_g": (0.0, 1.0, 0.01),  # g: noise only
        "table5_max": (0.02, 1.0, 0.0),
    }  # max above avg: against Table 5
    for name, (shift, w, noise) in spec.items():
        os.makedirs(res / name)
        for s in range(3):
            (res / name / f"seed{s}.json").write_text(json.dumps(_doc(name, s, shift, w, noise)))
    avg = {"methods": {"Average": {"mean": {m: 1.0 for m in M}}}}
    (res / "baselines_test.json").write_text(json.dumps(avg))
    docs = tmp_path / "docs" / "RESULTS.md"
    os.makedirs(docs.parent)
    head = "# Results\n\n" + report.BEGIN + "\nrepro block, kept\n" + report.END + "\n"
    docs.write_text(head)
    argv = ["--suite=paper_weights", "--report_only", f"--results={res}", f"--docs={docs}"]
    code = (
        "import sys; sys.path.insert(0, 'scripts'); import reproduce; rc = reproduce.main(sys.argv[1:]); "
        "assert 'jax' not in sys.modules; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    text = docs.read_text()
    assert text.startswith(head + "\n" + report.PW_BEGIN + "\n") and text.endswith(report.PW_END + "\n")
    block = text[text.index(report.PW_BEGIN) :]
    assert "## The paper's claims at the paper's weights" in block
    rows = {ln.split(" | ")[0][2:]: ln for ln in block.splitlines() if ln.startswith("| ") and " vs `" in ln}
    assert rows["dg vs none (`table1_dg` vs `table1_none`)"].endswith("| **holds** |")
    assert "+0.0100 [+0.0100, +0.0100] p <0.001 ↑" in rows["dg vs none (`table1_dg` vs `table1_none`)"]
    assert rows["dg vs none (`table1_dg` vs `table1_none`)"].split(" | ")[1] == "60"
    assert rows["g vs none (`table1_g` vs `table1_none`)"].endswith("| **cannot tell at this scale** |")
    assert rows["avg vs max (`table1_dg` vs `table5_max`)"].endswith("| **does not hold** |")
    assert (
        "**dg vs none** (Table 1: W in D_ir and G improves on no W): **holds**. A significantly higher on 6 of 6"
    ) in block
    assert "paired samples (median over the undecided metrics" in block  # the g vs none claim
    assert "d vs none (Section 3: W in D_ir improves on no W): no verdict yet, no results for `table1_d`." in block
    assert "`table1_d` seed 0" in block and "`large_dg` seed 0" in block  # listed as missing
    assert "| ours: W in D_ir and G (paper: ours (L_Di*, L_adv*)) | 3 | **1.1050 ± 0.0000** |" in block
    assert "| paper: W in D_ir and G |  | 1.2675 |" in block
    # W effect: intensity 0.6 + 0.001 * mean(i), contrast 0.48, on all three seeds
    row = "| W in D_ir and G (paper: ours (L_Di*, L_adv*)) | 3 | 0.6095 ± 0.0000 | 0.4800 ± 0.0000 |"
    assert row in block
    assert "`table1_dg` vs `table1_none`: warm-region intensity significantly higher" in block
    assert "`table1_g` vs `table1_none`: warm-region intensity not significantly different" in block
    assert "paper_weights_scene.png" not in block  # no figure yet
    assert reproduce.main(argv) == 0 and docs.read_text() == text  # same JSON, same text


def test_suite_trains_and_stores_per_image_values_and_w_effect(tmp_path, monkeypatch, capsys):
    d, exps = tmp_path / "data", tmp_path / "experiments"
    _pairs(d)
    os.makedirs(exps)
    _tiny_flagfile(exps / "table1_dg.flags", d, 2, "--selection=wins_average")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.path.join(str(tmp_path), os.pardir, "reproduce_jax_cache"))
    out, res, docs = tmp_path / "runs", tmp_path / "results", tmp_path / "R.md"
    argv = [
        "--suite=paper_weights",
        f"--out={out}",
        "--seeds=1",
        f"--experiments_dir={exps}",
        f"--data_dir={d}",
        f"--test_split={d}/test.txt",
        f"--results={res}",
        f"--docs={docs}",
        "--only=table1",
    ]
    table = {"table1": [("table1_dg", True)]}
    assert reproduce.main(argv, table=table) == 0
    assert "scene: skipped" in capsys.readouterr().out
    doc = json.loads((res / "table1_dg" / "seed0.json").read_text())
    assert doc["suite"] == "paper_weights" and doc["config"]["selection"] == "wins_average"
    assert sorted(doc["test"]["per_image"]) == ["p4", "p5"] and set(doc["test"]["per_image"]["p4"]) == set(M)
    w = doc["test"]["w_effect"]
    assert w["size"] == 1 + 3 + 3 * 2 + 3 * 4  # receptive field of 4s2,4s2,4s1
    assert w["top"] == 0.1 and sorted(w["per_image"]) == ["p4", "p5"]
    assert all(0 < v[k] < 10 for v in w["per_image"].values() for k in ("intensity", "contrast"))
    assert np.isclose(w["mean"]["intensity"], np.mean([v["intensity"] for v in w["per_image"].values()]), atol=1e-6)
    for n in ("table1_none", "table1_d", "table1_g"):  # the other three W modes: finished copies
        shutil.copytree(out / "table1_dg" / "seed0", out / n / "seed0")
    table["table1"] += [("table1_none", True), ("table1_d", True), ("table1_g", True)]
    assert reproduce.main(argv, table=table) == 0
    scene = json.loads((res / "scene.json").read_text())
    assert scene["stem"] in ("p4", "p5")
    assert scene["columns"] == ["IR", "visible", "none", "D_ir only", "G only", "D_ir and G"]
    assert (tmp_path / "figures" / report.PW_SCENE).exists()
    text = docs.read_text()
    assert f"](figures/{report.PW_SCENE})" in text
    assert "| dg vs none (`table1_dg` vs `table1_none`) | 2 |" in text
    assert "0.0000 [+0.0000, +0.0000] p 1.000" in text  # identical weights: no difference, cannot tell
