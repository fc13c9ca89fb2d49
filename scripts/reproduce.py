"""Reproduce the paper's RoadScene experiments and regenerate the report (issue 10).

    python scripts/reproduce.py --out=runs/repro [--only=table1,none,table3,fig4,table5,tno]
        [--seeds=3] [--no_train] [--report_only] [--results=results/repro] [--docs=docs/RESULTS.md]

1. Trains every missing run ``OUT/<experiment>/seed<N>`` with ``python train.py
   --flagfile=configs/experiments/<experiment>.flags --seed=N --workdir=...`` (log beside it as
   ``seed<N>.log``; rerunning resumes). A run is finished when its latest checkpoint step reaches
   its ``num_steps`` and ``best.json`` exists; finished runs are skipped.
2. Scores each finished run's validation-selected checkpoint (``best.msgpack``) on the 20 test
   pairs (the paper's six metrics, :func:`patchfuse_jax.eval.evaluate.evaluate`) into
   ``RESULTS/<experiment>/seed<N>.json`` (flags, steps, selected step, validation lines, a
   training curve, test means, minutes, machine); also the classical baselines once
   (``baselines_test.json``) and the TNO cross-dataset table (``tno42.json``: the shipped model,
   every published method under ``../shared/data/peers/tno42`` and the baselines).
3. Regenerates the block between the markers of ``docs/RESULTS.md`` and ``docs/figures/*.png``
   (``scripts/report.py``; ``--report_only`` does only this, from the result files).

``--suite=paper_weights`` (issue 21) runs the same way over :data:`PW_EXPERIMENTS`: Table 1 and
Table 5 at the paper's own loss weights (``configs/experiments/paper_weights/``; 3 seeds) and
``none``/``dg`` at the largest CPU scale (seed 0, last), into ``runs/paper_weights`` and
``results/paper_weights``; each result also holds W's effect on the warm regions per test pair
(:func:`patchfuse_jax.eval.significance.weight_effect`), and the report is the block between the
``paper_weights`` markers (significance per claim, verdicts, one scene across the W modes).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from patchfuse_jax import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMMAS = ("0.1", "0.2", "0.3", "0.5", "0.8", "2", "3", "5")
MODES = ("dg", "g")
# Experiment -> its place in the paper. Flagfile: <experiments_dir>/<experiment>.flags.
EXPERIMENTS = {
    "table1_dg": "Table 1 'ours (L_Di*, L_adv*)': W in D_ir and G (= Table 3 / Fig. 4 gamma 0.1, Table 5 avg)",
    "table1_g": "Table 1 'ours (L_adv*)': W in G only (= Table 3 / Fig. 4 gamma 0.1)",
    "table1_d": "Section 3's reading: W in D_ir only (no row in the paper)",
    "baseline_none": "dual PatchGAN without W (not in the paper)",
    "table5_max": "Table 5 'Max-Pooling'",
    **{
        f"gamma_{m}_{g}": ("Table 3 and " if g in ("0.5", "5") else "") + f"Figure 4: {m}, gamma {g}"
        for m in MODES
        for g in GAMMAS
        if g != "0.1"
    },
}
# Same flags, same run: trained once, reported in every table that uses them.
ALIASES = {"gamma_dg_0.1": "table1_dg", "gamma_g_0.1": "table1_g", "table5_avg": "table1_dg"}
# --only group -> [(experiment, all --seeds?)]; the others run seed 0 only.
GROUPS = {
    "table1": [("table1_dg", True), ("table1_g", True), ("table1_d", True)],
    "none": [("baseline_none", True)],
    "table3": [(f"gamma_{m}_{g}", False) for m in MODES for g in ("0.1", "0.5", "5")],
    "fig4": [(f"gamma_{m}_{g}", False) for m in MODES for g in GAMMAS],
    "table5": [("table5_avg", True), ("table5_max", True)],
}
CURVE_KEYS = ("loss_g", "loss_d_ir", "loss_d_vis", "l_ssim", "l_mse", "adv_ir", "adv_vis")
SHIPPED = "patchfuse_jax (shipped)"
BUSY_SECONDS = 180  # an unfinished run whose log changed this recently is left to whoever runs it


# The paper-weights suite (issue 21): configs/experiments/paper_weights/<experiment>.flags.
PW_EXPERIMENTS = {
    "table1_none": "dual PatchGAN without W (not in the paper), paper's weights",
    "table1_d": "W in D_ir only (Section 3's reading; no row in the paper), paper's weights",
    "table1_g": "Table 1 'ours (L_adv*)': W in G only, paper's weights",
    "table1_dg": "Table 1 'ours (L_Di*, L_adv*)': W in D_ir and G (= Table 5 avg), paper's weights",
    "table5_max": "Table 5 'Max-Pooling', paper's weights",
    "large_none": "no W at the largest CPU scale (ngf 32, 256x512), paper's weights",
    "large_dg": "W in D_ir and G at the largest CPU scale (ngf 32, 256x512), paper's weights",
    "table1_none_g05": "no W at gamma = lambda = 0.5 (the qualitative setting), paper's weights",
    "table1_dg_g05": "W in D_ir and G at gamma = lambda = 0.5, paper's weights",
}
PW_GROUPS = {
    "table1": [("table1_none", True), ("table1_d", True), ("table1_g", True), ("table1_dg", True)],
    "table5": [("table5_max", True)],
    "large": [("large_none", False), ("large_dg", False)],
    "g05": [("table1_none_g05", False), ("table1_dg_g05", False)],  # optional: not in the default --only
}


@dataclass(frozen=True)
class Suite:
    """One set of experiments: flagfiles ``configs/experiments/<configs>/``, runs ``<out>``,
    results ``<results>`` (paths relative to the repository), groups run by default, groups run
    after all others (``late``), whether TNO and W's effect belong to it."""

    name: str
    experiments: dict
    groups: dict
    aliases: dict
    configs: str
    out: str
    results: str
    default_only: tuple
    late: tuple = ()
    tno: bool = False
    w_effect: bool = False
    extra: dict = field(default_factory=dict)


SUITES = {
    "repro": Suite(
        "repro",
        EXPERIMENTS,
        GROUPS,
        ALIASES,
        os.path.join("configs", "experiments"),
        os.path.join("runs", "repro"),
        os.path.join("results", "repro"),
        (*GROUPS, "tno"),
        tno=True,
    ),
    "paper_weights": Suite(
        "paper_weights",
        PW_EXPERIMENTS,
        PW_GROUPS,
        {},
        os.path.join("configs", "experiments", "paper_weights"),
        os.path.join("runs", "paper_weights"),
        os.path.join("results", "paper_weights"),
        ("table1", "table5", "large"),
        late=("large",),
        w_effect=True,
    ),
}


class Failure(RuntimeError):
    """One experiment or step failed (one-line message); the others go on."""


def plan_runs(groups, seeds: int, table=None, aliases=None) -> list[tuple[str, int]]:
    """``(experiment, seed)`` pairs the groups need, aliases resolved, seed 0 of everything first."""
    table, aliases = table or GROUPS, ALIASES if aliases is None else aliases
    need: dict = {}
    for g in groups:
        for exp, multi in table.get(g, ()):
            for s in range(seeds) if multi else [0]:
                need.setdefault((aliases.get(exp, exp), s), len(need))
    return sorted(need, key=lambda r: (r[1], need[r]))


def suite_plan(suite: Suite, groups, seeds: int, table=None, aliases=None) -> list[tuple[str, int]]:
    """:func:`plan_runs` of ``groups`` (default table and aliases: the suite's), those in
    ``suite.late`` after all the others."""
    table, aliases = table or suite.groups, suite.aliases if aliases is None else aliases
    first = plan_runs([g for g in groups if g not in suite.late], seeds, table, aliases)
    late = plan_runs([g for g in groups if g in suite.late], seeds, table, aliases)
    late = [r for r in late if r not in first]
    return first + late


def _rel(p: str) -> str:
    r = os.path.relpath(os.path.abspath(p), REPO)
    return os.path.abspath(p) if r.startswith(os.pardir + os.sep + os.pardir) else r


def _write_json(path, doc) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return (
            {k: clean(v) for k, v in x.items()}
            if isinstance(x, dict)
            else [clean(v) for v in x]
            if isinstance(x, (list, tuple))
            else x
        )

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(clean(doc), fh, indent=1, allow_nan=False)
        fh.write("\n")
    os.replace(path + ".tmp", path)


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        jax_version = metadata.version("jax")
    except metadata.PackageNotFoundError:
        jax_version = None
    return {
        "platform": platform.platform(),
        "processor": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax_version,
    }


def _log_minutes(log: str):
    """Minutes from the first to the last absl timestamp (``I1201 08:00:52.18``) in a training log."""
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            stamps = re.findall(r"(?<![0-9A-Za-z])[IWEF](\d{4} \d\d:\d\d:\d\d\.\d+)", fh.read())
    except OSError:
        return None
    if len(stamps) < 2:
        return None
    t = [datetime.strptime("2000" + s, "%Y%m%d %H:%M:%S.%f") for s in (stamps[0], stamps[-1])]
    return round((t[1] - t[0]).total_seconds() / 60.0, 2)


def collect_run(wd: str, log: str) -> dict:
    """What a run's workdir says (no JAX): flags, steps, validation lines, curve, minutes."""
    cfg, best = (
        workdir.read_json(os.path.join(wd, workdir.CONFIG)),
        workdir.read_json(os.path.join(wd, workdir.BEST_JSON)),
    )
    rows = workdir.read_metrics(wd)
    val = [{"step": r["step"], **{k[4:]: r[k] for k in r if k.startswith("val_")}} for r in rows if "val_CC" in r]
    train = [r for r in rows if "loss_g" in r]
    stride = max(1, -(-len(train) // 100))  # at most ~100 points (all of them at log_every=50, 1000 steps)
    curve = [
        {"step": r["step"], **{k: r[k] for k in CURVE_KEYS if k in r}}
        for i, r in enumerate(train)
        if i % stride == 0 or i == len(train) - 1
    ]
    prev, loop = 0, 0.0
    for r in train:
        loop += (r["step"] - prev) / max(r.get("steps_per_sec", math.inf), 1e-9)
        prev = r["step"]
    wall, loop = _log_minutes(log), round(loop / 60.0, 2)
    # The log is rewritten by a rerun (then it covers less than the training loop did).
    use_log = wall is not None and wall >= loop
    return {
        "config": cfg,
        "num_steps": cfg["num_steps"],
        "final_step": max(workdir.checkpoint_steps(wd), default=None),
        "selected": {"step": best["step"], "val": best["val"]},
        "val_average": best.get("average"),
        "validation": val,
        "curve": curve,
        "minutes": wall if use_log else loop,
        "minutes_source": "log timestamps" if use_log else "metrics.jsonl steps_per_sec (training loop only)",
        "log_minutes": wall,
        "loop_minutes": loop,
    }


def _scores(result, name) -> dict:
    s = result.summary()[name]
    return {
        "mean": {m: s[m]["mean"] for m in result.metrics},
        "std_over_pairs": {m: s[m]["std"] for m in result.metrics},
        "per_image": {st: {m: round(v, 6) for m, v in result.values[name][st].items()} for st in result.images},
    }


def patch_size(cfg: dict) -> int:
    """D_ir's receptive field (pixels per side) of a run's ``config.json`` (65 for paper65)."""
    from patchfuse_jax.nn.models import parse_discriminator_layers, receptive_field

    return receptive_field(parse_discriminator_layers(cfg.get("d_arch", "paper65"))).size


def w_effect_of(ir_dir: str, fused_dir: str, stems, size: int) -> dict:
    """W's effect (:func:`patchfuse_jax.eval.significance.weight_effect`) of the fused PNGs
    ``fused_dir/<stem>.png`` against the IR images: per test pair and the means over them."""
    import numpy as np

    from patchfuse_jax import io
    from patchfuse_jax.eval import significance

    irs, per = io.list_images(ir_dir), {}
    for s in stems:
        f = io.load_gray(os.path.join(fused_dir, s + ".png"))
        e = significance.weight_effect(io.load_gray(irs[s]), f, size)
        per[s] = {k: round(v, 6) for k, v in e.items()}
    mean = {k: float(np.nanmean([v[k] for v in per.values()])) for k in ("intensity", "contrast")}
    return {
        "size": size,
        "top": significance.TOP,
        "window": significance.CONTRAST_WINDOW,
        "mean": mean,
        "per_image": per,
    }


def evaluate_run(name, seed, wd, log, out, opt) -> None:
    from patchfuse_jax.eval import evaluate as evaluation

    suite = SUITES[getattr(opt, "suite", "repro")]
    ir, vis = os.path.join(opt.data_dir, "ir"), os.path.join(opt.data_dir, "vis")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = evaluation.evaluate(
                ir,
                vis,
                split=opt.test_split,
                checkpoint=os.path.join(wd, workdir.BEST_EXPORT),
                checkpoint_name=name,
                metrics="paper",
                workers=opt.workers,
                progress=False,
                save_fused=tmp if suite.w_effect else None,
            )
        except evaluation.ERRORS as e:
            raise Failure(f"evaluating {name} seed {seed}: {e}") from None
        run = collect_run(wd, log)
        w = None
        if suite.w_effect:
            w = w_effect_of(ir, os.path.join(tmp, name), res.images, patch_size(run["config"]))
    doc = {
        "experiment": name,
        "seed": seed,
        "suite": suite.name,
        "paper": suite.experiments.get(name, ""),
        "aliases": sorted(a for a, t in suite.aliases.items() if t == name),
        "flagfile": _rel(os.path.join(opt.experiments_dir, name + ".flags")),
        "workdir": _rel(wd),
        **run,
        "test": {
            "split": _rel(opt.test_split),
            "data_dir": _rel(opt.data_dir),
            "n_pairs": len(res.images),
            "checkpoint": "best.msgpack (validation-selected)",
            **_scores(res, name),
            **({"w_effect": w} if w else {}),
        },
        "machine": machine(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(out, doc)


def evaluate_baselines(out, opt) -> None:
    from patchfuse_jax.eval import evaluate as evaluation

    try:
        res = evaluation.evaluate(
            os.path.join(opt.data_dir, "ir"),
            os.path.join(opt.data_dir, "vis"),
            split=opt.test_split,
            baselines=True,
            metrics="paper",
            workers=opt.workers,
            progress=False,
        )
    except evaluation.ERRORS as e:
        raise Failure(f"baselines on the test pairs: {e}") from None
    _write_json(
        out,
        {
            "split": _rel(opt.test_split),
            "data_dir": _rel(opt.data_dir),
            "n_pairs": len(res.images),
            "methods": {m.name: _scores(res, m.name) for m in res.methods},
            "machine": machine(),
        },
    )


def _manifest_paths(peers_dir: str, method: str) -> dict[str, str]:
    """``{tno stem: fused file}`` of a method folder whose files are not named by TNO stem
    (``peers/MANIFEST.csv``: group = the folder's name)."""
    path, group = os.path.join(os.path.dirname(peers_dir), "MANIFEST.csv"), os.path.basename(peers_dir)
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["group"] == group and r["method"] == method]
    return {
        os.path.splitext(os.path.basename(r["ir"]))[0]: os.path.join(peers_dir, method, os.path.basename(r["fused"]))
        for r in rows
    }


def evaluate_tno(out, opt) -> list[str]:
    """The shipped model, every peer folder and the baselines on TNO; returns failures."""
    from patchfuse_jax import io
    from patchfuse_jax.eval import evaluate as evaluation

    ir, vis, peers = os.path.join(opt.tno_dir, "ir"), os.path.join(opt.tno_dir, "vis"), opt.peers_dir
    if not os.path.isdir(peers):
        raise Failure(f"TNO: no peers folder {peers}")
    pairs = io.match_pairs(ir, vis)
    kw = dict(metrics="paper", workers=opt.workers, progress=False)
    res = evaluation.evaluate(ir, vis, checkpoint="pretrained", checkpoint_name=SHIPPED, baselines=True, **kw)
    methods, kinds = {m.name: _scores(res, m.name) for m in res.methods}, {m.name: m.kind for m in res.methods}
    notes, failed = [], []
    for m in sorted(os.listdir(peers)):  # one folder of published outputs per method
        folder = os.path.join(peers, m)
        if not os.path.isdir(folder):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            if set(pairs) <= set(io.list_images(folder)):
                paths = None
            else:  # files named otherwise: link them under their TNO names, as evaluate matches by stem
                paths = {s: p for s, p in _manifest_paths(peers, m).items() if s in pairs and os.path.exists(p)}
                for s, p in paths.items():
                    os.symlink(os.path.abspath(p), os.path.join(tmp, s + os.path.splitext(p)[1]))
            if paths == {}:
                failed.append(f"TNO: {m}: files not named by TNO stem and not in MANIFEST.csv; skipped")
                continue
            try:
                r = evaluation.evaluate(
                    ir, vis, {m: folder if paths is None else tmp}, split=None if paths is None else sorted(paths), **kw
                )
            except evaluation.ERRORS as e:
                failed.append(f"TNO: {m}: {e}")
                continue
        methods[m], kinds[m] = _scores(r, m), "folder"
        if paths is not None:
            lack = sorted(set(pairs) - set(paths))
            notes.append(
                f"{m}: {len(paths)} of {len(pairs)} pairs (its files map to TNO names through "
                f"peers/MANIFEST.csv; none for {', '.join(lack) or '-'}), so its means are over fewer pairs."
            )
    order = (
        [SHIPPED] + sorted(n for n in methods if kinds[n] == "folder") + [n for n in methods if kinds[n] == "baseline"]
    )
    doc = {
        "ir_dir": _rel(ir),
        "vis_dir": _rel(vis),
        "peers_dir": _rel(peers),
        "n_pairs": len(pairs),
        "model": SHIPPED,
        "notes": notes,
        "machine": machine(),
        "methods": {n: {"kind": kinds[n], "n_pairs": len(methods[n]["per_image"]), **methods[n]} for n in order},
    }
    _write_json(out, doc)
    return failed


def make_grid(opt) -> bool:
    """IR | visible | Average | none | D+G for three test pairs -> FIGURES/grid.png (+ grid.json)."""
    runs = {"none": ("baseline_none", 0), "D+G": ("table1_dg", 0)}
    wds = {k: os.path.join(opt.out, n, f"seed{s}") for k, (n, s) in runs.items()}
    if not all(workdir.is_finished(w) for w in wds.values()):
        print("grid: skipped (needs finished baseline_none and table1_dg seed 0)")
        return False
    png, meta = os.path.join(opt.figures, "grid.png"), os.path.join(opt.results, "grid.json")
    newest = max(os.path.getmtime(os.path.join(w, workdir.BEST_EXPORT)) for w in wds.values())
    if os.path.exists(png) and os.path.exists(meta) and os.path.getmtime(png) > newest:
        return True
    from patchfuse_jax import io
    from patchfuse_jax.eval import baselines
    from patchfuse_jax.eval.evaluate import quantize
    from patchfuse_jax.fusing.api import fuse
    from patchfuse_jax.fusing.saved import load_checkpoint
    from patchfuse_jax.train import data
    from report import plot_grid

    stems = io.read_split(opt.test_split)
    pick = sorted({stems[0], stems[len(stems) // 2], stems[-1]}, key=stems.index)
    folder = data.PairFolder(opt.data_dir, stems=pick)
    params = {k: load_checkpoint(os.path.join(w, workdir.BEST_EXPORT)) for k, w in wds.items()}
    rows = []
    for i in range(len(folder)):
        ir_p, vis_p = folder.paths(i)
        ir, vis = io.read_pair(ir_p, vis_p)
        gray = io.to_gray(vis, name=vis_p)
        avg = quantize(baselines.average(ir / 255.0, gray / 255.0))
        rows.append((folder.name(i), [ir, vis, avg] + [quantize(fuse(params[k], ir, vis)) for k in runs]))
    cols = ["IR", "visible", "Average", "none", "D+G"]
    plot_grid(rows, cols, png)
    _write_json(
        meta,
        {
            "stems": [r[0] for r in rows],
            "columns": cols,
            "runs": {k: {"workdir": _rel(w), "step": params[k].step} for k, w in wds.items()},
        },
    )
    return True


SCENE_RUNS = {"none": "table1_none", "D_ir only": "table1_d", "G only": "table1_g", "D_ir and G": "table1_dg"}


def pick_scene(ir_dir: str, stems, size: int) -> str:
    """The test stem whose warm region (top 10 % of W) stands out most: largest mean IR inside it
    minus the image's mean."""
    from patchfuse_jax import io
    from patchfuse_jax.eval import significance

    irs, best = io.list_images(ir_dir), {}
    for s in stems:
        ir = io.load_gray(irs[s])
        best[s] = float(ir[significance.warm_mask(ir, size)].mean() - ir.mean())
    return max(stems, key=lambda s: (best[s], s))


def make_scene(opt) -> bool:
    """One test scene across the four W modes (seed 0), the warm region outlined ->
    FIGURES/paper_weights_scene.png (+ RESULTS/scene.json). Skipped until the four runs finished."""
    wds = {k: os.path.join(opt.out, n, "seed0") for k, n in SCENE_RUNS.items()}
    if not all(workdir.is_finished(w) for w in wds.values()):
        print("scene: skipped (needs finished " + ", ".join(f"{n} seed 0" for n in SCENE_RUNS.values()) + ")")
        return False
    import report

    png, meta = os.path.join(opt.figures, report.PW_SCENE), os.path.join(opt.results, "scene.json")
    newest = max(os.path.getmtime(os.path.join(w, workdir.BEST_EXPORT)) for w in wds.values())
    if os.path.exists(png) and os.path.exists(meta) and os.path.getmtime(png) > newest:
        return True
    from patchfuse_jax import io
    from patchfuse_jax.eval import significance
    from patchfuse_jax.eval.evaluate import quantize
    from patchfuse_jax.fusing.api import fuse
    from patchfuse_jax.fusing.saved import load_checkpoint
    from patchfuse_jax.train import data

    size = patch_size(workdir.read_json(os.path.join(wds["D_ir and G"], workdir.CONFIG)) or {})
    stem = pick_scene(os.path.join(opt.data_dir, "ir"), io.read_split(opt.test_split), size)
    folder = data.PairFolder(opt.data_dir, stems=[stem])
    ir_p, vis_p = folder.paths(0)
    ir, vis = io.read_pair(ir_p, vis_p)
    params = {k: load_checkpoint(os.path.join(w, workdir.BEST_EXPORT)) for k, w in wds.items()}
    fused = {k: quantize(fuse(p, ir, vis)) for k, p in params.items()}
    mask = significance.warm_mask(ir / 255.0, size)
    report.plot_scene(
        stem,
        ir,
        vis,
        fused,
        mask,
        png,
        f"paper's weights, seed 0; red: top {significance.TOP:.0%} of W ({size}x{size} IR patch means)",
    )
    _write_json(
        meta,
        {
            "stem": stem,
            "size": size,
            "top": significance.TOP,
            "columns": ["IR", "visible", *fused],
            "runs": {k: {"workdir": _rel(w), "step": params[k].step} for k, w in wds.items()},
        },
    )
    return True


def _log_tail(log: str) -> str:
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            lines = [ln.strip() for ln in fh.read().replace("\r", "\n").splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "empty log"
    except OSError:
        return "no log"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/reproduce.py", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a(
        "--suite",
        default="repro",
        choices=sorted(SUITES),
        help="repro: the paper's experiments with the shipped recipe; paper_weights: Table 1 and 5 at the "
        "paper's loss weights (issue 21). Sets the defaults of --out, --only, --results, "
        "--experiments_dir",
    )
    a("--out", default=None, help="run folders OUT/<experiment>/seed<N> (default: runs/<suite>)")
    a(
        "--only",
        default=None,
        help="comma list of groups; repro: "
        + ", ".join([*GROUPS, "tno"])
        + " (default: all); paper_weights: "
        + ", ".join(PW_GROUPS)
        + " (default: all but g05)",
    )
    a("--seeds", type=int, default=3, help="seeds of the multi-seed experiments (the others: seed 0)")
    a("--no_train", action="store_true", help="train nothing: evaluate and report the finished runs")
    a("--report_only", action="store_true", help="only regenerate the report from --results")
    a("--results", default=None, help="default: results/<suite>")
    a("--docs", default="docs/RESULTS.md")
    a("--figures", default=None, help="default: DOCS's folder/figures")
    a(
        "--experiments_dir",
        default=None,
        help="default: configs/experiments (paper_weights: configs/experiments/paper_weights)",
    )
    a("--data_dir", default=os.path.join(REPO, os.pardir, "shared", "data", "roadscene"))
    a("--test_split", default=os.path.join(REPO, "splits", "roadscene_test.txt"))
    a("--tno_dir", default=os.path.join(REPO, os.pardir, "shared", "data", "tno"))
    a("--peers_dir", default=os.path.join(REPO, os.pardir, "shared", "data", "peers", "tno42"))
    a("--workers", type=int, default=0, help="evaluation processes (0: serial, leaves the cores to training)")
    return p


def main(argv=None, *, table=None, aliases=None) -> int:
    opt = _parser().parse_args(argv)
    suite = SUITES[opt.suite]
    table = table or suite.groups
    aliases = suite.aliases if aliases is None else aliases
    opt.out = opt.out or os.path.join(REPO, suite.out)
    opt.results = opt.results or os.path.join(REPO, suite.results)
    opt.experiments_dir = opt.experiments_dir or os.path.join(REPO, suite.configs)
    opt.only = opt.only if opt.only is not None else ",".join(suite.default_only)
    for k in ("out", "results", "docs", "experiments_dir", "data_dir", "test_split", "tno_dir", "peers_dir"):
        setattr(opt, k, os.path.abspath(getattr(opt, k)))
    opt.figures = os.path.abspath(opt.figures or os.path.join(os.path.dirname(opt.docs), "figures"))
    only = [g.strip() for g in opt.only.split(",") if g.strip()]
    known = [*table, *(["tno"] if suite.tno else [])]
    bad = [g for g in only if g not in known]
    if bad or opt.seeds < 1:
        print(
            f"reproduce: error: --only: unknown {', '.join(bad)} (known: {', '.join(known)})"
            if bad
            else "reproduce: error: --seeds must be >= 1",
            file=sys.stderr,
        )
        return 2
    import report

    if suite.name == "repro":
        expected = plan_runs(list(table), opt.seeds, table, aliases)
    else:  # the default groups and any asked for
        groups = [g for g in table if g in suite.default_only or g in only]
        expected = suite_plan(suite, groups, opt.seeds, table, aliases)
    failures: list[str] = []
    try:
        if not opt.report_only:
            failures = _run_all(opt, only, table, aliases, suite)
    except KeyboardInterrupt:
        print("reproduce: interrupted (rerun to resume)", file=sys.stderr)
        return 130
    try:
        if suite.name == "paper_weights":
            files = report.write_paper_weights_report(opt.results, opt.docs, opt.figures, expected)
        else:
            files = report.write_report(opt.results, opt.docs, opt.figures, expected)
        print("report: wrote " + ", ".join(_rel(f) for f in files))
    except report.ReportError as e:
        failures.append(f"report: {e}")
    for f in failures:
        print(f"reproduce: error: {f}", file=sys.stderr)
    return 1 if failures else 0


def _run_all(opt, only, table, aliases, suite=None) -> list[str]:
    suite = suite or SUITES["repro"]
    failures: list[str] = []
    runs = suite_plan(suite, [g for g in only if g != "tno"], opt.seeds, table, aliases)
    if runs and not all(os.path.isdir(os.path.join(opt.data_dir, d)) for d in ("ir", "vis")):
        return [f"data folder {opt.data_dir} (with ir/ and vis/) not found; nothing trained or evaluated"]
    for i, (name, seed) in enumerate(runs, 1):
        wd, tag = os.path.join(opt.out, name, f"seed{seed}"), f"[{i}/{len(runs)}] {name} seed {seed}"
        log, flagfile = wd + ".log", os.path.join(opt.experiments_dir, name + ".flags")
        if not workdir.is_finished(wd):
            if not os.path.exists(flagfile):
                failures.append(f"{tag}: no flagfile {_rel(flagfile)}")
                continue
            age = min(
                (
                    time.time() - os.path.getmtime(p)
                    for p in (log, os.path.join(wd, workdir.METRICS))
                    if os.path.exists(p)
                ),
                default=math.inf,
            )
            if opt.no_train or age < BUSY_SECONDS:
                print(
                    f"{tag}: not finished, skipped ("
                    + ("--no_train" if opt.no_train else f"its log changed {age:.0f} s ago: running elsewhere?")
                    + ")"
                )
                continue
            print(f"{tag}: training (log: {_rel(log)})", flush=True)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            cmd = [
                sys.executable,
                os.path.join(REPO, "train.py"),
                f"--flagfile={flagfile}",
                f"--seed={seed}",
                f"--workdir={wd}",
            ]
            t0 = time.time()
            with open(log, "a", encoding="utf-8") as fh:
                rc = subprocess.call(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
            if rc != 0 or not workdir.is_finished(wd):
                failures.append(f"{tag}: training failed (exit {rc}): {_log_tail(log)} (log: {_rel(log)})")
                continue
            print(f"{tag}: trained in {(time.time() - t0) / 60:.1f} min", flush=True)
        out = os.path.join(opt.results, name, f"seed{seed}.json")
        if os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(os.path.join(wd, workdir.BEST_EXPORT)):
            print(f"{tag}: finished, evaluated ({_rel(out)})")
            continue
        try:
            t0 = time.time()
            evaluate_run(name, seed, wd, log, out, opt)
            print(f"{tag}: test pairs evaluated in {time.time() - t0:.0f} s -> {_rel(out)}", flush=True)
        except Failure as e:
            failures.append(str(e))
        except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged workdir file
            failures.append(f"{tag}: cannot read {_rel(wd)}: {type(e).__name__}: {e}")
    if runs:
        out = os.path.join(opt.results, "baselines_test.json")
        if not os.path.exists(out):
            try:
                evaluate_baselines(out, opt)
                print(f"baselines: -> {_rel(out)}")
            except Failure as e:
                failures.append(str(e))
        try:
            make_grid(opt) if suite.name == "repro" else make_scene(opt)
        except Exception as e:  # a figure must not cost the results
            failures.append(f"{'grid' if suite.name == 'repro' else 'scene'}: {type(e).__name__}: {e}")
    if "tno" in only and suite.tno:
        failures += _tno(opt)
    return failures


def _tno(opt) -> list[str]:
    from patchfuse_jax.eval import evaluate as evaluation
    from patchfuse_jax.fusing.saved import default_weights

    out = os.path.join(opt.results, "tno42.json")
    w = default_weights()
    if os.path.exists(out) and (not w.is_file() or os.path.getmtime(out) > os.path.getmtime(str(w))):
        print(f"tno: evaluated ({_rel(out)})")
        return []
    if not all(os.path.isdir(os.path.join(opt.tno_dir, d)) for d in ("ir", "vis")):
        return [f"TNO: data folder {opt.tno_dir} (with ir/ and vis/) not found"]
    print("tno: evaluating the shipped model, the peers and the baselines on TNO ...", flush=True)
    try:
        failed = evaluate_tno(out, opt)
        print(f"tno: -> {_rel(out)}")
        return failed
    except (Failure, *evaluation.ERRORS) as e:
        return [f"TNO: {e}"]


if __name__ == "__main__":
    sys.exit(main())
