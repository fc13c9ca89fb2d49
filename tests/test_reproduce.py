"""python scripts/reproduce.py: the run plan, training missing runs, skipping finished ones,
result files, and the report block regenerated from result files alone."""

import json
import os
import shutil
import subprocess
import sys

import report
import reproduce
from patchfuse_jax import io, workdir
from patchfuse_jax.train.synthetic import synthetic_pair
from tests.conftest import REPO

M = report.METRICS


def test_plan_reuses_aliases_and_seeds_only_where_asked():
    runs = reproduce.plan_runs(["table1", "none", "table3", "fig4", "table5"], 3)
    assert len(runs) == len(set(runs)) == 4 * 3 + 3 + 14  # + table5_max x 3 + 14 gamma runs
    names = {n for n, _ in runs}
    assert not names & {"gamma_dg_0.1", "gamma_g_0.1", "table5_avg"}  # aliases: the Table 1 runs
    assert {s for n, s in runs if n.startswith("gamma_")} == {0}
    assert {s for n, s in runs if n in ("table1_dg", "table5_max", "baseline_none")} == {0, 1, 2}
    assert runs[0] == ("table1_dg", 0) and all(s == 0 for _, s in runs[:19])  # seed 0 first
    assert reproduce.plan_runs(["fig4"], 3) == [(n, 0) for n, _ in reproduce.plan_runs(["fig4"], 1)]
    for n in names:
        assert os.path.exists(REPO / "configs" / "experiments" / f"{n}.flags"), n


def test_mean_std_formatting():
    assert report.fmt(1.23456, 0.012345) == "1.2346 ± 0.0123"
    assert report.fmt(16.0222, 0.1234, "PSNR") == "16.02 ± 0.12"
    assert report.fmt(0.5, float("nan")) == "0.5000" and report.fmt(float("nan")) == "n/a"
    docs = [{"test": {"mean": {m: v for m in M}}} for v in (1.0, 2.0, 3.0)]
    assert report.stats(docs)["CC"] == (2.0, 1.0, 3)  # sample std over seeds


def _doc(name, seed, v):
    return {
        "experiment": name,
        "seed": seed,
        "final_step": 1000,
        "minutes": 3.0,
        "machine": {"platform": "Linux", "processor": "CPU", "cpu_count": 2},
        "test": {"mean": {m: v + (15 if m == "PSNR" else 0) for m in M}},
        "validation": [{"step": 500, "margin": -0.1}, {"step": 1000, "margin": -0.05 + v / 100}],
        "curve": [{"step": 50, "loss_g": 9.0}, {"step": 100, "loss_g": 8.0 - v}],
    }


def test_report_only_rewrites_only_the_marked_block(tmp_path):
    res = tmp_path / "results"
    for name, vals in {
        "table1_dg": (1.29, 1.30, 1.31),
        "baseline_none": (1.20, 1.27, 1.34),
        "table5_max": (1.1, 1.2, 1.3),
    }.items():
        for s, v in enumerate(vals):
            os.makedirs(res / name, exist_ok=True)
            (res / name / f"seed{s}.json").write_text(json.dumps(_doc(name, s, v)))
    os.makedirs(res / "gamma_dg_0.5")
    (res / "gamma_dg_0.5" / "seed0.json").write_text(json.dumps(_doc("gamma_dg_0.5", 0, 1.4)))
    (res / "baselines_test.json").write_text(json.dumps({"methods": {"Average": {"mean": {m: 1.0 for m in M}}}}))
    docs = tmp_path / "docs" / "RESULTS.md"
    os.makedirs(docs.parent)
    before, after = "# Results\n\nhand-written, kept\n\n", "\n## Discussion\n\nalso kept\n"
    docs.write_text(before + report.BEGIN + "\nstale\n" + report.END + after)
    argv = ["--report_only", f"--results={res}", f"--docs={docs}", f"--out={tmp_path / 'nowhere'}"]
    code = (
        "import sys; sys.path.insert(0, 'scripts'); import reproduce; rc = reproduce.main(sys.argv[1:]); "
        "assert 'jax' not in sys.modules; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    text = docs.read_text()
    assert text.startswith(before + report.BEGIN + "\n") and text.endswith(report.END + after)
    assert "stale" not in text and text.count(report.BEGIN) == 1
    assert "| ours: W in D_ir and G (paper: ours (L_Di*, L_adv*)) | 3 | **1.3000 ± 0.0100** |" in text
    assert "| paper: W in D_ir and G |  | 1.2675 | 0.8655 |" in text
    assert "W in D_ir and G vs `none`: higher on 6 of 6 metrics" in text
    assert "within the larger seed std on 6 of 6" in text
    assert "Average pooling vs max pooling: higher on 6 of 6" in text
    assert "`table1_g` seed 0" in text  # listed as not done yet
    assert (tmp_path / "docs" / "figures" / "fig4_gamma.png").exists()
    assert "](figures/curves.png)" in text and "grid.png" not in text
    docs.write_text("# only hand text\n")  # markers absent: appended
    assert reproduce.main(argv) == 0
    assert docs.read_text().startswith("# only hand text\n\n" + report.BEGIN)


def test_report_without_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = reproduce.main(["--report_only", f"--results={tmp_path}", f"--docs={tmp_path / 'R.md'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and ".[report]" in err and not (tmp_path / "R.md").exists()


def _pairs(root):
    for d in ("ir", "vis"):
        os.makedirs(root / d)
    for i in range(6):
        ir, vis = synthetic_pair(7, i, (40, 48))
        io.save_image(root / "ir" / f"p{i}.png", ir)
        io.save_image(root / "vis" / f"p{i}.png", vis)
    for name, stems in (("train", "p0 p1"), ("val", "p2 p3"), ("test", "p4 p5")):
        (root / f"{name}.txt").write_text("\n".join(stems.split()) + "\n")


def _tiny_flagfile(path, d, num_steps: int, *extra: str) -> None:
    """A flagfile training a tiny W-in-D_ir-and-G model on the pairs of ``_pairs(d)``."""
    path.write_text(
        "\n".join(
            [
                f"--data_dir={d}",
                f"--train_split={d}/train.txt",
                f"--eval_split={d}/val.txt",
                "--eval_every=2",
                f"--num_steps={num_steps}",
                "--checkpoint_every=2",
                "--num_downs=2",
                "--ngf=4",
                "--ndf=4",
                "--d_arch=4s2,4s2,4s1",
                "--crop_size=32x32",
                "--batch_size=2",
                "--log_every=1",
                "--sample_every=1000",
                "--weight_mode=dg",
                *extra,
            ]
        )
        + "\n"
    )


def test_trains_missing_runs_skips_finished_ones_and_writes_results(tmp_path, monkeypatch, capsys):
    d, exps = tmp_path / "data", tmp_path / "experiments"
    _pairs(d)
    os.makedirs(exps)
    _tiny_flagfile(exps / "table1_dg.flags", d, num_steps=3)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.path.join(str(tmp_path), os.pardir, "reproduce_jax_cache"))
    table = {
        "table1": [("table1_dg", True)],
        "none": [("baseline_none", True)],
        "table5": [("table5_avg", True)],
        "gone": [("no_such_experiment", False)],
    }
    aliases = {"table5_avg": "table1_dg"}
    out, res = tmp_path / "runs", tmp_path / "results"
    argv = [
        f"--out={out}",
        "--seeds=1",
        f"--experiments_dir={exps}",
        f"--data_dir={d}",
        f"--test_split={d}/test.txt",
        f"--results={res}",
        f"--docs={tmp_path / 'R.md'}",
    ]
    assert reproduce.main(argv + ["--only=table1,table5"], table=table, aliases=aliases) == 0
    o = capsys.readouterr().out
    assert o.count("training") == 1 and "[1/1] table1_dg seed 0: training" in o  # table5_avg = table1_dg
    assert sorted(os.listdir(out)) == ["table1_dg"] and workdir.is_finished(out / "table1_dg" / "seed0")
    doc = json.loads((res / "table1_dg" / "seed0.json").read_text())
    for k in ("config", "num_steps", "final_step", "selected", "validation", "curve", "test", "minutes", "machine"):
        assert k in doc, k
    assert doc["num_steps"] == doc["final_step"] == 3 and doc["config"]["weight_mode"] == "dg"
    assert [v["step"] for v in doc["validation"]] == [2, 3] and doc["selected"]["step"] in (2, 3)
    assert set(doc["validation"][0]) >= {"step", *M} and [c["step"] for c in doc["curve"]] == [1, 2, 3]
    assert doc["test"]["n_pairs"] == 2 and set(doc["test"]["mean"]) == set(M)
    assert doc["machine"]["cpu_count"] == os.cpu_count() and doc["aliases"] == ["gamma_dg_0.1", "table5_avg"]
    assert set(json.loads((res / "baselines_test.json").read_text())["methods"]) >= {"Average", "LP", "GFF"}
    stamp = os.path.getmtime(res / "table1_dg" / "seed0.json")
    shutil.copytree(out / "table1_dg" / "seed0", out / "baseline_none" / "seed0")  # a finished run
    assert reproduce.main(argv + ["--only=table1,none,table5"], table=table, aliases=aliases) == 0
    o = capsys.readouterr().out
    assert "training" not in o and "[1/2] table1_dg seed 0: finished, evaluated" in o
    assert "[2/2] baseline_none seed 0: test pairs evaluated" in o
    assert os.path.getmtime(res / "table1_dg" / "seed0.json") == stamp
    assert (tmp_path / "figures" / "grid.png").exists() and json.loads((res / "grid.json").read_text())["stems"] == [
        "p4",
        "p5",
    ]
    assert "](figures/grid.png)" in (tmp_path / "R.md").read_text()
    (exps / "broken.flags").write_text(f"--data_dir={d}\n--weight_mode=both\n")
    table["bad"] = [("broken", False)]
    assert reproduce.main(argv + ["--only=gone,bad"], table=table, aliases=aliases) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no_such_experiment" in err[0] and "no flagfile" in err[0]
    assert "broken seed 0: training failed (exit 1)" in err[1] and "--weight_mode" in err[1]
    assert f"(log: {out}/broken/seed0.log)" in err[1] and "Traceback" not in err[1]


def test_tno_table_maps_peer_files_through_the_manifest(tmp_path, capsys):
    tno, peers = tmp_path / "tno", tmp_path / "peers" / "tno42"
    for d in ("ir", "vis"):
        os.makedirs(tno / d)
    os.makedirs(peers / "Named")
    os.makedirs(peers / "Renamed")
    rows = ["group,method,fused,ir,vis,source_repo,note"]
    for i in range(3):
        ir, vis = synthetic_pair(3, i, (128, 128))
        io.save_image(tno / "ir" / f"0{i}.png", ir)
        io.save_image(tno / "vis" / f"0{i}.png", vis)
        io.save_image(peers / "Named" / f"0{i}.png", (ir + vis) / 2)
        if i:  # Renamed covers 2 of 3 pairs, named F1, F2
            io.save_image(peers / "Renamed" / f"F{i}.png", vis)
            rows.append(f"tno42,Renamed,x/tno42/Renamed/F{i}.png,x/tno/ir/0{i}.png,x/tno/vis/0{i}.png,r,")
    (tmp_path / "peers" / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    res = tmp_path / "results"
    argv = [f"--tno_dir={tno}", f"--peers_dir={peers}", f"--results={res}", "--only=tno", f"--docs={tmp_path / 'R.md'}"]
    assert reproduce.main(argv) == 0
    doc = json.loads((res / "tno42.json").read_text())
    assert list(doc["methods"])[:3] == [reproduce.SHIPPED, "Named", "Renamed"] and "Average" in doc["methods"]
    assert doc["methods"]["Renamed"]["n_pairs"] == 2 and sorted(doc["methods"]["Renamed"]["per_image"]) == ["01", "02"]
    assert doc["methods"]["Named"]["n_pairs"] == 3 and "Renamed: 2 of 3 pairs" in doc["notes"][0]
    text = (tmp_path / "R.md").read_text()
    assert "### TNO (cross-dataset, 3 pairs" in text and "| Renamed | 2 |" in text
    assert reproduce.main(argv) == 0  # done: not evaluated again
    assert "tno: evaluated" in capsys.readouterr().out
