"""Evaluation pipeline: evaluate_pair, error messages, reports and ranking marks, the CLI."""

import csv
import json
import math
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from conftest import REPO, shared_data
from patchfuse_jax import io
from patchfuse_jax.eval import evaluate as E
from patchfuse_jax.eval import metrics as M


# ----------------------------------------------------------------------------- stand-in metrics
def _mean_f(a, b, f):
    return float(np.mean(f))


def _closeness_to_ir(a, b, f):
    return -float(np.mean(np.abs(np.asarray(f, np.float64) - a)))


def _nan_if_flat(a, b, f):
    return math.nan if np.ptp(f) == 0 else float(np.std(f))


FAKE = {"Mean": _mean_f, "IRfit": _closeness_to_ir, "Spread": _nan_if_flat}


@pytest.fixture
def fake_metrics(monkeypatch):
    """Small, predictable metrics in place of the real registry (serial evaluation only)."""
    monkeypatch.setattr(M, "METRICS", dict(FAKE))
    monkeypatch.setattr(M, "HIGHER_IS_BETTER", {k: True for k in FAKE})
    return list(FAKE)


def _write(path, img):
    io.save_image(path, np.asarray(img, np.uint8))
    return str(path)


def _dataset(root, stems=("a", "b", "c"), hw=(24, 32)):
    """ir/, vis/ (RGB), and method folders Bright/ (all 250) and Dark/ (all 5) under ``root``."""
    rng = np.random.default_rng(0)
    for s in stems:
        _write(root / "ir" / f"{s}.png", rng.integers(0, 256, hw))
        _write(root / "vis" / f"{s}.png", rng.integers(0, 256, (*hw, 3)))
        _write(root / "Bright" / f"{s}.png", np.full(hw, 250))
        _write(root / "Dark" / f"{s}.png", np.full(hw, 5))
    return {k: str(root / k) for k in ("ir", "vis", "Bright", "Dark")}


# ----------------------------------------------------------------------------- evaluate_pair
def test_registry_order_and_paper_metrics():
    assert list(M.DEFAULT_METRICS) == [
        "CC",
        "MS_SSIM",
        "SCD",
        "FMI_dct",
        "SSIM_a",
        "PSNR",
        "CC_mean",
        "EN",
        "SD",
        "SF",
        "AG",
        "MI",
        "VIF",
        "Qabf",
    ]
    assert list(M.METRICS) == [
        *M.DEFAULT_METRICS,
        "MI_textbook",
        "VIF_textbook",
        "Qabf_textbook",
        "TargetContrast",
        "TextureKept",
    ]
    assert M.PAPER_METRICS == tuple(list(M.METRICS)[:6])
    assert all(M.HIGHER_IS_BETTER[k] for k in M.METRICS)


def test_textbook_variants_differ_from_toolbox_where_documented():
    """Copying a source: the toolbox Qabf penalises it, the textbook one does not."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    b = np.clip(np.cumsum(rng.integers(-3, 4, (48, 48)), axis=1) + 128, 0, 255).astype(np.uint8)
    v = M.evaluate_pair(a, b, b, metrics="Qabf,Qabf_textbook")
    assert v["Qabf_textbook"] > v["Qabf"]


def test_resolve_metrics():
    assert M.resolve_metrics("psnr, cc") == ["PSNR", "CC"]
    assert M.resolve_metrics("paper") == list(M.PAPER_METRICS)
    assert M.resolve_metrics(None) == M.resolve_metrics("all") == list(M.DEFAULT_METRICS)
    assert M.resolve_metrics("qabf,textbook") == ["Qabf", "MI_textbook", "VIF_textbook", "Qabf_textbook"]
    with pytest.raises(M.MetricError, match=r"unknown metric\(s\) BOGUS; known metrics: CC, MS_SSIM"):
        M.resolve_metrics("CC,BOGUS")


def test_evaluate_pair_input_conversion(monkeypatch):
    seen = []
    monkeypatch.setattr(M, "METRICS", {"Probe": lambda a, b, f: seen.append((a, b, f)) or 1.0})
    rng = np.random.default_rng(1)
    ir = rng.integers(0, 256, (5, 6)).astype(np.uint8)
    rgb = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    assert M.evaluate_pair(ir, rgb, ir.astype(np.uint16) * 257) == {"Probe": 1.0}
    a, b, f = seen[-1]
    assert a.dtype == np.uint8 and np.array_equal(a, ir)
    assert b.dtype == np.uint8 and np.array_equal(b, io.to_gray(rgb))  # BT.601 luma, rounded
    np.testing.assert_allclose(f, ir.astype(np.float64))  # uint16 scaled to 0..255
    M.evaluate_pair(ir / 255.0, ir, ir)
    np.testing.assert_allclose(seen[-1][0], ir.astype(np.float64))  # float [0, 1] scaled by 255


def test_evaluate_pair_paths(tmp_path, fake_metrics):
    d = _dataset(tmp_path, stems=("a",))
    v = M.evaluate_pair(f"{d['ir']}/a.png", f"{d['vis']}/a.png", f"{d['Bright']}/a.png", metrics="Mean")
    assert v == {"Mean": 250.0}


def test_evaluate_pair_errors(fake_metrics):
    z = np.zeros((4, 5), np.uint8)
    with pytest.raises(M.MetricError, match=r"img7: images differ in size .*fused 4x6"):
        M.evaluate_pair(z, z, np.zeros((4, 6), np.uint8), name="img7")
    with pytest.raises(M.MetricError, match="known metrics: Mean, IRfit, Spread"):
        M.evaluate_pair(z, z, z, metrics=["Nope"])
    with pytest.raises(io.ImageError, match=r"img7 \(fused\): float values must lie in \[0, 1\]"):
        M.evaluate_pair(z, z, np.full((4, 5), 2.0), name="img7")


def test_evaluate_pair_nan_warns(fake_metrics):
    z = np.zeros((4, 5), np.uint8)
    with pytest.warns(M.MetricWarning, match="img9: Spread is undefined"):
        v = M.evaluate_pair(z, z, z, name="img9")
    assert math.isnan(v["Spread"]) and v["Mean"] == 0.0


# ----------------------------------------------------------------------------- helpers
def test_parse_method_and_split(tmp_path):
    assert E.parse_method("DenseFuse=/x/y") == ("DenseFuse", "/x/y")
    for bad in ("DenseFuse", "=dir", "Name=", "a/b=dir"):
        with pytest.raises(E.EvaluationError, match="expected NAME=DIR"):
            E.parse_method(bad)
    p = tmp_path / "split.txt"
    p.write_text("# header\n b  # note\n\na\n")
    assert io.read_split(p) == ["b", "a"]
    p.write_text("a\nb\na\n")
    with pytest.raises(io.DataError, match="duplicate stems a"):
        io.read_split(p)
    with pytest.raises(io.DataError, match="no such file"):
        io.read_split(tmp_path / "absent.txt")


def test_rank_methods():
    r = E.rank_methods({"A": 0.5, "B": 0.70001, "C": 0.7, "D": math.nan, "E": 0.1})
    assert r == {"A": 2, "B": 1, "C": 1, "D": None, "E": 3}  # ties at 4 decimals share a rank


def test_mean_rank_by_hand():
    means = {
        "A": {"x": 1.0, "y": 5.0, "z": math.nan},
        "B": {"x": 2.0, "y": 4.0, "z": 1.0},
        "C": {"x": 3.0, "y": 4.0, "z": 2.0},
    }
    # x: C1 B2 A3; y: A1 B2 C2 (tie); z: C1 B2 (A undefined, left out of its mean)
    assert E.mean_rank(means, ["x", "y", "z"]) == {"A": 2.0, "B": 2.0, "C": pytest.approx(4 / 3)}


# ----------------------------------------------------------------------------- error cases
def _eval(d, **kw):
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return E.evaluate(d["ir"], d["vis"], **kw)


def test_error_fused_size_mismatch(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    _write(tmp_path / "Bright" / "b.png", np.full((20, 32), 250))
    with pytest.raises(E.EvaluationError, match=r"method Bright: .*Bright/b\.png is 20x32 but its sources are 24x32"):
        _eval(d, methods={"Bright": d["Bright"]})


def test_error_method_folder_missing_images(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    os.remove(tmp_path / "Dark" / "a.png")
    os.remove(tmp_path / "Dark" / "c.png")
    with pytest.raises(E.EvaluationError, match=r"method Dark: .* lacks 2 of 3 image\(s\): a, c"):
        _eval(d, methods=[f"Dark={d['Dark']}"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio trying its plugins
def test_error_unreadable_file(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    (tmp_path / "Dark" / "b.png").write_bytes(b"not a png")
    with pytest.raises(io.ImageError, match=r"Dark/b\.png: cannot be read as an image"):
        _eval(d, methods={"Dark": d["Dark"]})


def test_error_unknown_metric_and_bad_method(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    with pytest.raises(M.MetricError, match="unknown metric.*known metrics: Mean"):
        _eval(d, methods={"Dark": d["Dark"]}, metrics="Mean,SSIM")
    with pytest.raises(E.EvaluationError, match="expected NAME=DIR"):
        _eval(d, methods=[d["Dark"]])


def test_error_missing_dirs_and_pairs(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    with pytest.raises(io.DataError, match=r"--ir_dir: .*nope: no such folder"):
        E.evaluate(str(tmp_path / "nope"), d["vis"], {"Dark": d["Dark"]}, workers=0, progress=False)
    with pytest.raises(E.EvaluationError, match=r"method X: .*gone: no such folder"):
        _eval(d, methods={"X": str(tmp_path / "gone")})
    os.remove(tmp_path / "vis" / "c.png")
    with pytest.raises(io.DataError, match=r"do not pair up by stem: only in .*ir: c"):
        _eval(d, methods={"Dark": d["Dark"]})
    with pytest.raises(io.DataError, match=r"lacks 1 image\(s\) of the split: c"):
        _eval(d, methods={"Dark": d["Dark"]}, split=["a", "c"])
    with pytest.raises(E.EvaluationError, match="nothing to evaluate"):
        _eval(d, split=["a"])
    with pytest.raises(E.EvaluationError, match="used twice"):
        _eval(d, methods=[f"Dark={d['Dark']}", f"Dark={d['Bright']}"], split=["a"])


# ----------------------------------------------------------------------------- end to end
@pytest.mark.filterwarnings("ignore::patchfuse_jax.eval.metrics.MetricWarning")
def test_end_to_end_reports_and_marks(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    out = tmp_path / "out"
    paths = E.run(
        d["ir"],
        d["vis"],
        str(out),
        methods={"Bright": d["Bright"], "Dark": d["Dark"]},
        baselines=True,
        workers=0,
        progress=False,
        save_fused=True,
    )
    methods = ["Bright", "Dark", "Average", "Max", "LP", "GFF"]
    assert sorted(os.listdir(out)) == ["fused", "per_image.csv", "summary.json", "summary.md"]
    assert sorted(os.listdir(out / "fused" / "GFF")) == ["a.png", "b.png", "c.png"]

    rows = list(csv.DictReader(open(paths["per_image.csv"])))
    assert list(rows[0]) == ["image", "method", "Mean", "IRfit", "Spread"]
    assert [(r["method"], r["image"]) for r in rows] == [(m, s) for m in methods for s in "abc"]
    assert all(float(r["Mean"]) == 250.0 for r in rows if r["method"] == "Bright")
    assert all(r["Spread"] == "nan" for r in rows if r["method"] in ("Bright", "Dark"))

    s = json.load(open(paths["summary.json"]))
    assert s["methods"] == methods and s["metrics"] == ["Mean", "IRfit", "Spread"] and s["n_images"] == 3
    assert s["results"]["Bright"]["Mean"] == {"mean": 250.0, "std": 0.0, "count": 3, "excluded": 0, "rank": 1}
    assert s["results"]["Dark"]["Spread"] == {"mean": None, "std": None, "count": 0, "excluded": 3, "rank": None}
    assert s["sources"]["GFF"] == "baseline:GFF" and s["sources"]["Dark"] == f"folder:{d['Dark']}"

    md = open(paths["summary.md"]).read()
    table = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in md.splitlines()
        if line.startswith("| ") and "Method" not in line
    }
    assert table["Bright"][0] == "**250.0000**" and table["Dark"][0] == "5.0000"
    assert table["Dark"][2] == "n/a" and table["Bright"][2] == "n/a"
    # Each column: one mark per rank, in the order of the means.
    for j, k in enumerate(s["metrics"]):
        means = {m: s["results"][m][k]["mean"] for m in methods if s["results"][m][k]["mean"] is not None}
        best = sorted(means, key=means.get, reverse=True)
        assert table[best[0]][j].startswith("**") and table[best[1]][j].startswith("_")
        assert table[best[2]][j].endswith("†")
        assert sum("**" in table[m][j] for m in methods) == 1
    # The IR-closest method on IRfit: Max keeps the IR where it is brighter; LP/GFF keep IR details.
    assert "Excluded from the means" in md and "Spread: Bright 3/3, Dark 3/3" in md
    assert "**bold** = best, _italic_ = second, † = third" in md
    # Mean rank: the mean of the per-column ranks (undefined columns left out), one column.
    for m in methods:
        ranks = [s["results"][m][k]["rank"] for k in s["metrics"] if s["results"][m][k]["rank"]]
        assert s["mean_rank"][m] == pytest.approx(np.mean(ranks))
        assert table[m][-1].strip("*") == f"{np.mean(ranks):.2f}"
    assert len(table["Bright"]) == 4 and "Mean rank: the mean over the 3 metrics" in md
    paths = E.run(
        d["ir"],
        d["vis"],
        str(tmp_path / "out2"),
        methods={"Bright": d["Bright"]},
        workers=0,
        progress=False,
        mean_rank=False,
    )
    assert "mean_rank" not in json.load(open(paths["summary.json"]))
    assert "mean rank" not in open(paths["summary.md"]).read()


@pytest.mark.filterwarnings("ignore::patchfuse_jax.eval.metrics.MetricWarning")
def _fake_model(monkeypatch, fuse):
    """``fuse`` in place of the library's, and a ``load_checkpoint`` that reads nothing."""
    api, saved = types.ModuleType("patchfuse_jax.fusing.api"), types.ModuleType("patchfuse_jax.fusing.saved")
    api.fuse = fuse
    saved.load_checkpoint = lambda workdir: {"workdir": workdir}
    saved.CheckpointError = type("CheckpointError", (ValueError,), {})
    monkeypatch.setitem(sys.modules, "patchfuse_jax.fusing.api", api)
    monkeypatch.setitem(sys.modules, "patchfuse_jax.fusing.saved", saved)


def test_model_checkpoint_fused_on_the_fly(tmp_path, fake_metrics, monkeypatch):
    d = _dataset(tmp_path, stems=("a", "b"))
    calls = []

    def fuse(params, ir, vis):
        calls.append((ir.shape, vis.shape))
        return np.full(ir.shape, 0.5, np.float32)

    _fake_model(monkeypatch, fuse)
    (tmp_path / "ckpt").mkdir()
    r = _eval(d, checkpoint=str(tmp_path / "ckpt"), checkpoint_name="ours", save_fused=str(tmp_path / "f"))
    assert [m.name for m in r.methods] == ["ours"]
    assert calls == [((24, 32), (24, 32, 3))] * 2  # IR gray, vis passed as RGB
    assert r.values["ours"]["a"]["Mean"] == 128.0  # 0.5 -> uint8 128 as a PNG would hold
    assert sorted(os.listdir(tmp_path / "f" / "ours")) == ["a.png", "b.png"]
    with pytest.raises(E.EvaluationError, match="--checkpoint .*: no such folder"):
        _eval(d, checkpoint=str(tmp_path / "nockpt"))


@pytest.mark.slow
def test_real_model_checkpoint(tmp_path):
    """A tiny trained generator, fused on the fly through patchfuse_jax.fusing.api."""
    from conftest import TINY
    from patchfuse_jax.train import loop as trainer
    from patchfuse_jax.train.config import Config

    wd = str(tmp_path / "run")
    trainer.train_and_evaluate(Config(**{**TINY, "num_steps": 1}), wd, show_progress=False)
    d = _dataset(tmp_path / "data", stems=("a", "b"), hw=(37, 53))
    paths = E.run(
        d["ir"],
        d["vis"],
        str(tmp_path / "out"),
        checkpoint=wd,
        baselines=True,
        metrics="CC,PSNR,EN",
        workers=0,
        progress=False,
        save_fused=True,
    )
    s = json.load(open(paths["summary.json"]))
    assert s["methods"] == ["patchfuse", "Average", "Max", "LP", "GFF"]
    assert all(s["results"]["patchfuse"][k]["count"] == 2 for k in ("CC", "PSNR", "EN"))
    assert io.read_image(tmp_path / "out" / "fused" / "patchfuse" / "a.png").shape == (37, 53)
    with pytest.raises(E.EvaluationError, match="--checkpoint: .*no checkpoints folder"):
        _eval(d, checkpoint=str(tmp_path / "data"))


def test_nonfinite_values_warn_once_per_method(tmp_path, fake_metrics):
    d = _dataset(tmp_path)
    with pytest.warns(M.MetricWarning, match=r"Dark: undefined \(NaN/inf\) .*: Spread for 3 image\(s\) \(a, b, c\)"):
        _eval(d, methods={"Dark": d["Dark"]})


# ----------------------------------------------------------------------------- model and out_dir errors
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny random generator exported to one file (no training)."""
    import jax
    import jax.numpy as jnp

    from patchfuse_jax.fusing.saved import export_generator, make_fuse_params
    from patchfuse_jax.nn.models import Generator

    arch = dict(num_downs=2, ngf=4, norm="batch")
    variables = Generator(**arch).init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)), train=False)
    path = tmp_path_factory.mktemp("model") / "tiny.msgpack"
    export_generator(make_fuse_params(variables, arch, step=1), path)
    return str(path)


def _mismatched_pair(tmp_path):
    d = _dataset(tmp_path, stems=("a", "b"))
    _write(tmp_path / "vis" / "b.png", np.zeros((20, 32, 3)))
    return d


def test_model_on_a_size_mismatched_pair_names_the_pair(tmp_path, fake_metrics, tiny_export):
    d = _mismatched_pair(tmp_path)
    ir_b, vis_b = os.path.join(d["ir"], "b.png"), os.path.join(d["vis"], "b.png")
    with pytest.raises(E.EvaluationError) as e:
        _eval(d, checkpoint=tiny_export)
    assert str(e.value) == f"b: ir {ir_b} is 24x32 but vis {vis_b} is 20x32 (H x W)"
    r = _eval(d, checkpoint=tiny_export, split=["a"])  # the good pair alone works
    assert list(r.values["patchfuse"]) == ["a"]


def test_model_errors_inside_fuse_name_the_pair(tmp_path, fake_metrics, monkeypatch):
    """Whatever fuse refuses (a ValueError) becomes one EvaluationError naming the files."""
    d = _dataset(tmp_path, stems=("a",))

    def fuse(params, ir, vis):
        raise ValueError("fuse: something about the input")

    _fake_model(monkeypatch, fuse)
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(
        E.EvaluationError,
        match=r"^a: cannot fuse ir .*ir/a\.png with vis .*vis/a\.png: "
        r"fuse: something about the input$",
    ):
        _eval(d, checkpoint=str(tmp_path / "ckpt"))


def test_out_dir_is_checked_before_computing(tmp_path, fake_metrics, monkeypatch):
    d = _dataset(tmp_path, stems=("a",))
    monkeypatch.setattr(E, "evaluate", lambda *a, **k: pytest.fail("computed before checking out_dir"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(io.DataError, match=r"^--out_dir .*file: is a file, not a folder$"):
        E.run(d["ir"], d["vis"], str(tmp_path / "file"), methods={"Dark": d["Dark"]})
    with pytest.raises(io.DataError, match=r"^--out_dir .*file/sub: cannot create the folder \("):
        E.run(d["ir"], d["vis"], str(tmp_path / "file" / "sub"), methods={"Dark": d["Dark"]})
    assert io.prepare_out_dir(tmp_path / "new" / "out") == str(tmp_path / "new" / "out")
    assert os.listdir(tmp_path / "new" / "out") == []  # created; the write test leaves nothing


def test_unwritable_out_dir(tmp_path, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)  # a read-only folder, even for root
    with pytest.raises(io.DataError, match=r"--out_dir .*ro: folder is not writable \(Permission denied\)"):
        io.prepare_out_dir(tmp_path / "ro")


# ----------------------------------------------------------------------------- CLI
def _cli(args, cwd=REPO):
    pp = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pp, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_errors_are_one_line(tmp_path):
    d = _dataset(tmp_path, stems=("a",))
    base = [f"--ir_dir={d['ir']}", f"--vis_dir={d['vis']}", f"--out_dir={tmp_path / 'o'}"]
    for extra, msg in (
        ([f"--method={d['Dark']}"], "expected NAME=DIR"),
        ([f"--method=Dark={d['Dark']}", "--metrics=XX"], "unknown metric(s) XX"),
        ([f"--method=Gone={tmp_path / 'gone'}"], "no such folder"),
    ):
        p = _cli(base + extra)
        assert p.returncode == 1, p.stderr
        assert msg in p.stderr and "Traceback" not in p.stderr
        assert p.stderr.strip().count("\n") == 0, p.stderr


def test_cli_model_and_out_dir_errors_are_one_line(tmp_path, tiny_export):
    d = _mismatched_pair(tmp_path)
    (tmp_path / "file").write_text("x")
    base = [f"--ir_dir={d['ir']}", f"--vis_dir={d['vis']}", "--workers=0", "--metrics=CC", "--noprogress"]
    for extra, msg in (
        (
            [f"--out_dir={tmp_path / 'o'}", f"--checkpoint={tiny_export}"],
            f"evaluate.py: error: b: ir {d['ir']}/b.png is 24x32 but vis {d['vis']}/b.png is 20x32",
        ),
        (
            [f"--out_dir={tmp_path / 'file'}", f"--checkpoint={tiny_export}"],
            f"evaluate.py: error: --out_dir {tmp_path / 'file'}: is a file, not a folder",
        ),
    ):
        p = _cli(base + extra)
        assert p.returncode == 1, p.stderr
        assert p.stderr.startswith(msg) and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip().count("\n") == 0, p.stderr


def test_cli_end_to_end(tmp_path):
    d = _dataset(tmp_path, stems=("a", "b"))
    p = _cli(
        [
            f"--ir_dir={d['ir']}",
            f"--vis_dir={d['vis']}",
            f"--out_dir={tmp_path / 'o'}",
            f"--method=Dark={d['Dark']}",
            "--method",
            f"Bright={d['Bright']}",
            "--baselines",
            "--metrics=CC,PSNR,EN,SD",
            "--workers=0",
        ]
    )
    assert p.returncode == 0, p.stderr
    assert "| Method | CC | PSNR | EN | SD |" in p.stdout and "| GFF |" in p.stdout
    rows = list(csv.DictReader(open(tmp_path / "o" / "per_image.csv")))
    assert len(rows) == 2 * 6 and list(rows[0]) == ["image", "method", "CC", "PSNR", "EN", "SD"]


# ----------------------------------------------------------------------------- real metrics
def test_process_pool_matches_serial(tmp_path):
    d = _dataset(tmp_path, stems=("a", "b", "c", "d"))
    kw = dict(methods={"Dark": d["Dark"]}, baselines=True, metrics="CC,PSNR,SD,Qabf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        serial = _eval(d, workers=0, **kw)
        pooled = _eval(d, workers=2, **kw)
    assert pooled.images == serial.images == ["a", "b", "c", "d"]
    for m in serial.values:
        for s in serial.images:
            np.testing.assert_equal(pooled.values[m][s], serial.values[m][s])


@pytest.mark.data
def test_real_data_tno_densefuse(tmp_path):
    tno, peers = shared_data("tno"), shared_data("peers", "tno42", "DenseFuse")
    split = tmp_path / "split.txt"
    split.write_text("# three TNO pairs\n01\n02\n03\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", M.MetricWarning)  # all defined on real images
        paths = E.run(
            str(tno / "ir"),
            str(tno / "vis"),
            str(tmp_path / "out"),
            split=str(split),
            methods=[f"DenseFuse={peers}"],
            progress=False,
        )
    rows = list(csv.DictReader(open(paths["per_image.csv"])))
    assert [r["image"] for r in rows] == ["01", "02", "03"]
    assert list(rows[0]) == ["image", "method", *M.DEFAULT_METRICS]
    assert all(math.isfinite(float(r[k])) for r in rows for k in M.DEFAULT_METRICS)
    s = json.load(open(paths["summary.json"]))
    assert all(s["results"]["DenseFuse"][k]["count"] == 3 for k in M.DEFAULT_METRICS)
    # The pipeline (gray conversion, IR/vis order) reproduces the upstream MATLAB toolbox values.
    ref = {
        (r["image"], r["metric"]): float(r["value"])
        for r in csv.DictReader(open(peers.parent / "reference_metrics_Metric_TNO.csv"))
        if r["method"] == "DenseFuse"
    }
    ours_to_ref = {"CC_mean": "CC", "SCD": "SCD", "EN": "EN", "MI": "MI", "Qabf": "Qabf", "VIF": "VIF", "AG": "AG"}
    for r in rows:
        for ours, theirs in ours_to_ref.items():
            assert float(r[ours]) == pytest.approx(ref[(r["image"] + ".png", theirs)], rel=1e-6), (r["image"], ours)
