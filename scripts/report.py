"""The generated block of ``docs/RESULTS.md`` and its figures, from ``results/repro/*.json`` only.

Used by ``python scripts/reproduce.py`` (``--report_only`` runs just this). Needs no JAX, no
runs and no data; the plots need matplotlib (the ``report`` extra), imported inside the plotting
functions. Only the text between :data:`BEGIN` and :data:`END` is rewritten; the observations are
computed from the numbers, so the generated text cannot disagree with the tables.
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np

METRICS = ("CC", "MS_SSIM", "SCD", "FMI_dct", "SSIM_a", "PSNR")
HEADS = ("CC", "MS-SSIM", "SCD", "FMI_dct", "SSIM_a", "PSNR")
BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
NEED_MPL = 'the plots need matplotlib: pip install -e ".[report]"'
GAMMAS = ("0.1", "0.2", "0.3", "0.5", "0.8", "2", "3", "5")
MODE_NAMES = {"dg": "W in D_ir and G", "g": "W in G only"}
GAMMA_RUN = {"dg": {"0.1": "table1_dg"}, "g": {"0.1": "table1_g"}}  # gamma 0.1 = the Table 1 runs
ROWS1 = [
    ("table1_dg", "W in D_ir and G (paper: ours (L_Di*, L_adv*))"),
    ("table1_g", "W in G only (paper: ours (L_adv*))"),
    ("table1_d", "W in D_ir only (Section 3; no row in the paper)"),
    ("baseline_none", "`none`: no W (not in the paper)"),
]
SHORT = {
    "table1_dg": "W in D_ir and G",
    "table1_g": "W in G only",
    "table1_d": "W in D_ir only",
    "baseline_none": "`none`",
}
BASELINE_NAMES = {"Average": "Average", "LP": "Laplacian pyramid", "GFF": "Guided filtering", "Max": "Max"}

# The paper's RoadScene numbers (its own 20 test pairs, lambda = 0.5), transcribed from the parsed
# PDF text. Check: Table 1's prose margins (PSNR 0.018, MS-SSIM 0.0252, SCD 0.0386 behind the best)
# agree with these; Table 3's and Table 5's gamma 0.1 / avg rows repeat Table 1's D+G row exactly.
# Figure 4 is a plot without numbers in the text, so none are transcribed; Table 1 has no D-only row.
_DG = (1.2675, 0.8655, 1.6188, 0.2691, 0.7381, 16.0222)
_G = (1.2587, 0.8625, 1.5609, 0.2736, 0.7396, 16.0723)
PAPER = {
    "table1": {
        "U2Fusion": (1.2199, 0.8907, 1.3236, 0.3057, 0.7204, 16.0903),
        "NestFuse": (1.1889, 0.8376, 1.6574, 0.2969, 0.6598, 13.8161),
        "DDcGAN": (1.1752, 0.7067, 1.5041, 0.3589, 0.5965, 13.8019),
        "table1_dg": _DG,
        "table1_g": _G,
    },
    "table3": {
        ("dg", "0.1"): _DG,
        ("dg", "0.5"): (1.2549, 0.8785, 1.6598, 0.2501, 0.7319, 15.8065),
        ("dg", "5"): (1.2379, 0.8601, 1.6986, 0.2346, 0.7139, 15.2591),
        ("g", "0.1"): _G,
        ("g", "0.5"): (1.2567, 0.8764, 1.6566, 0.2569, 0.7326, 15.8283),
        ("g", "5"): (1.2165, 0.8547, 1.6916, 0.2400, 0.6998, 14.7879),
    },
    "table5": {"avg": _DG, "max": (1.2637, 0.8617, 1.5528, 0.2671, 0.7375, 16.0355)},
}


class ReportError(RuntimeError):
    """A report cannot be written (one-line message)."""


# ----------------------------------------------------------------------------- data
def _read(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load(results_dir: str, extras=("baselines_test", "tno42", "grid")) -> tuple[dict, dict]:
    """``({experiment: {seed: doc}}, {extra: doc or None})``, extras ``RESULTS/<extra>.json``."""
    runs: dict = {}
    for p in sorted(glob.glob(os.path.join(results_dir, "*", "seed*.json"))):
        try:
            doc = _read(p)
            runs.setdefault(doc["experiment"], {})[int(doc["seed"])] = doc
        except (ValueError, KeyError, TypeError) as e:
            raise ReportError(f"{p}: not a run result file ({type(e).__name__}: {e})") from None
    extra = {k: _read(os.path.join(results_dir, k + ".json")) for k in extras}
    return runs, extra


def stats(docs) -> dict[str, tuple[float, float, int]]:
    """``{metric: (mean, std, n)}`` of the runs' test means; std is over seeds (ddof=1), NaN for n=1."""
    out = {}
    for m in METRICS:
        v = [d["test"]["mean"][m] for d in docs if d["test"]["mean"].get(m) is not None]
        out[m] = (float(np.mean(v)) if v else math.nan, float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v))
    return out


def fixed(values) -> dict[str, tuple[float, float, int]]:
    values = values if not isinstance(values, dict) else [values.get(m, math.nan) for m in METRICS]
    return {m: (math.nan if v is None else float(v), math.nan, 1) for m, v in zip(METRICS, values)}


def fmt(mean: float, std: float = math.nan, metric: str = "CC") -> str:
    """``1.2345 ± 0.0123`` (PSNR to 2 decimals); the mean alone when std is NaN."""
    if not math.isfinite(mean):
        return "n/a"
    d = 2 if metric == "PSNR" else 4
    return f"{mean:.{d}f}" if not math.isfinite(std) else f"{mean:.{d}f} ± {std:.{d}f}"


def _seed0(runs, name):
    d = runs.get(name, {}).get(0)
    return None if d is None else stats([d])


# ----------------------------------------------------------------------------- markdown
def _table(rows, bold=()) -> list[str]:
    """rows: (label, n, stats); the best mean per column among rows whose label is in ``bold``."""
    best = {
        m: max((s[m][0] for lab, _, s in rows if lab in bold and math.isfinite(s[m][0])), default=None) for m in METRICS
    }
    out = ["| method | n | " + " | ".join(HEADS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for lab, n, s in rows:
        cells = []
        for m in METRICS:
            c = fmt(s[m][0], s[m][1], m)
            if lab in bold and best[m] is not None and s[m][0] == best[m]:
                c = f"**{c}**"
            cells.append(c)
        out.append(f"| {lab} | {'' if n is None else n} | " + " | ".join(cells) + " |")
    return out


def _mean(values) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _names(ms) -> str:
    return ", ".join(HEADS[METRICS.index(m)] for m in ms) or "none"


def compare(a, b, la: str, lb: str, std_note: bool = True) -> str:
    """One observation: on how many metrics ``a`` has the higher mean, and how many differences
    are within the larger of the two seed stds."""
    higher = [m for m in METRICS if a[m][0] > b[m][0]]
    text = f"{la} vs {lb}: higher on {len(higher)} of 6 metrics ({_names(higher)})"
    stds = {m: [s for s in (a[m][1], b[m][1]) if math.isfinite(s)] for m in METRICS}
    if all(stds.values()):
        within = [m for m in METRICS if abs(a[m][0] - b[m][0]) <= max(stds[m])]
        text += f"; the difference is within the larger seed std on {len(within)} of 6 ({_names(within)})"
    elif std_note:
        text += " (single runs: no seed std to compare with)"
    return text + "."


def _machines(docs, platform: bool = False) -> list[str]:
    """The distinct machines the runs trained on: "processor, N CPU cores[, platform]"."""
    names = set()
    for d in docs:
        m = d["machine"]
        name = f"{m.get('processor') or m.get('platform')}, {m.get('cpu_count')} CPU cores"
        names.add(f"{name}, {m.get('platform')}" if platform else name)
    return sorted(names)


def _best_gamma(values: dict[str, dict]) -> dict[str, str]:
    return {m: max(values, key=lambda g: values[g][m][0]) for m in METRICS}


def render(runs: dict, extra: dict, rel_fig: str, expected=(), figures=()) -> str:
    """The markdown between the markers."""
    L = [
        "## Reproduction of the paper's experiments (generated)",
        "",
        "_Everything between the `reproduce` markers is written by `python scripts/reproduce.py` "
        "(`--report_only`: from `results/repro/*.json` alone); edit the code, not this text._",
        "",
    ]
    base = (extra.get("baselines_test") or {}).get("methods", {})
    docs = [d for seeds in runs.values() for d in seeds.values()]
    # --- compute
    L += ["### Compute used", ""]
    if docs:
        mins = [d.get("minutes") or 0.0 for d in docs]
        mach = _machines(docs, platform=True)
        L += [
            f"- {len(docs)} finished run{'s' * (len(docs) != 1)}, {sum(d['final_step'] for d in docs)} training steps in all "
            f"({min(d['final_step'] for d in docs)}–{max(d['final_step'] for d in docs)} per run), "
            f"{sum(mins):.0f} minutes of training ({min(mins):.1f}–{max(mins):.1f} per run, from the "
            "training logs' timestamps, or the logged step rates where a rerun rewrote the log). Runs "
            "trained one after another; evaluation and tests sometimes shared the cores, so per-run "
            "minutes vary.",
            "- Machine: " + "; ".join(mach) + ".",
            "- Runs per experiment: " + ", ".join(f"`{k}` {len(v)}" for k, v in sorted(runs.items())) + ".",
            "- Scale: `configs/experiments/base.flags` (the shipped model's compact CPU recipe at 1000 "
            "steps, validation at 500 and 1000), not the paper's ngf 64 / 256×512 setting. Table 1 "
            "rows, `none` and Table 5: mean ± std over seeds (n per row; sample std); the γ sweep "
            "(Tables 3–4, Figure 4) is seed 0 only.",
            "- Test numbers: each run's validation-selected checkpoint (`best.msgpack`) on the 20 "
            "RoadScene test pairs (`splits/roadscene_test.txt`). The paper's numbers are on its own "
            "20 pairs, which it does not list: compare trends and ranks, not absolute values.",
        ]
    else:
        L.append("- No finished runs yet.")
    missing = [f"`{n}` seed {s}" for n, s in expected if s not in runs.get(n, {})]
    if missing:
        L.append(f"- No results yet ({len(missing)} runs): " + ", ".join(missing) + ".")
    # --- Table 1
    rows, ours = [], {}
    for k in ("U2Fusion", "NestFuse", "DDcGAN", "table1_dg", "table1_g"):
        lab = dict(ROWS1).get(k, k).split(" (paper")[0] if k.startswith("table1") else k
        rows.append((f"paper: {lab}", None, fixed(PAPER["table1"][k])))
    for k, lab in ROWS1:
        if runs.get(k):
            ours[k] = stats(runs[k].values())
            rows.append((f"ours: {lab}", len(runs[k]), ours[k]))
    for k, lab in BASELINE_NAMES.items():
        if k in base:
            rows.append((lab, 1, fixed(base[k]["mean"])))
    bold = [r[0] for r in rows if not r[0].startswith("paper")]
    L += [
        "",
        "### Table 1: where the IR weight map W is used (λ = 0.5, γ = 0.1)",
        "",
        *_table(rows, bold),
        "",
        "Paper rows: Table 1 (its test pairs). Ours and the baselines: our 20 test pairs; **bold** = "
        "best of ours and the baselines. All six metrics: higher is better.",
        "",
    ]
    obs = []
    none = ours.get("baseline_none")
    for k in ("table1_dg", "table1_g", "table1_d"):
        if k in ours and none:
            obs.append(compare(ours[k], none, SHORT[k], "`none`"))
    if "table1_dg" in ours and "table1_g" in ours:
        obs.append(compare(ours["table1_dg"], ours["table1_g"], "W in D_ir and G", "W in G only"))
    if "Average" in base:
        avg = fixed(base["Average"]["mean"])
        for k, s in ours.items():
            ge = [m for m in METRICS if s[m][0] >= avg[m][0]]
            obs.append(f"{SHORT[k]} ≥ Average fusion on {len(ge)} of 6 ({_names(ge)}).")
    if "table1_dg" in ours:
        p = fixed(PAPER["table1"]["table1_dg"])
        ge = [m for m in METRICS if ours["table1_dg"][m][0] >= p[m][0]]
        obs.append(
            f"Our W-in-D_ir-and-G mean ≥ the paper's row on {len(ge)} of 6 ({_names(ge)}; "
            "different test pairs and scale, so indicative only)."
        )
    L += [f"- {o}" for o in obs] + ([""] if obs else [])
    # --- Tables 3-4
    L += [
        "### Tables 3–4: γ ∈ {0.1, 0.5, 5} (λ = 0.5; seed 0)",
        "",
        "Table 3 is RoadScene; Table 4 is the paper's private dataset, which is not available, so it "
        "has no counterpart here.",
        "",
    ]
    obs, sweep = [], {}
    for mode in ("dg", "g"):
        sweep[mode] = {
            g: s for g in GAMMAS if (s := _seed0(runs, GAMMA_RUN[mode].get(g, f"gamma_{mode}_{g}"))) is not None
        }
        rows = []
        for g in ("0.1", "0.5", "5"):
            rows.append((f"paper: γ = {g}", None, fixed(PAPER["table3"][(mode, g)])))
            if g in sweep[mode]:
                rows.append((f"ours: γ = {g}", 1, sweep[mode][g]))
        L += [f"{MODE_NAMES[mode]}:", "", *_table(rows, [r[0] for r in rows if r[0].startswith("ours")]), ""]
        three = {g: sweep[mode][g] for g in ("0.1", "0.5", "5") if g in sweep[mode]}
        pap = {g: fixed(PAPER["table3"][(mode, g)]) for g in ("0.1", "0.5", "5")}
        pb = [m for m, g in _best_gamma(pap).items() if g == "0.1"]
        if len(three) == 3:
            ob = [m for m, g in _best_gamma(three).items() if g == "0.1"]
            obs.append(
                f"{MODE_NAMES[mode]}: γ = 0.1 is the best of the three on {len(ob)} of 6 metrics "
                f"({_names(ob)}); in the paper's Table 3 on {len(pb)} of 6 ({_names(pb)})."
            )
    L += ["**bold** = best of our rows per column."] + [f"- {o}" for o in obs]
    # --- Figure 4
    L += ["", "### Figure 4: metric vs γ (λ = 0.5; seed 0)", ""]
    if "fig4_gamma.png" in figures:
        L += [f"![Figure 4: test metrics vs gamma]({rel_fig}/fig4_gamma.png)", ""]
    rows = [
        (f"{MODE_NAMES[mode]}, γ = {g}", 1, sweep[mode][g]) for mode in ("dg", "g") for g in GAMMAS if g in sweep[mode]
    ]
    if rows:
        L += _table(rows) + [""]
    obs = []
    for mode in ("dg", "g"):
        if len(sweep[mode]) >= 2:
            best = _best_gamma(sweep[mode])
            below1 = [m for m in METRICS if float(best[m]) < 1]
            low = [m for m in METRICS if best[m] in ("0.1", "0.2")]
            obs.append(
                f"{MODE_NAMES[mode]} ({len(sweep[mode])} of {len(GAMMAS)} γ values): best γ per metric "
                + ", ".join(f"{h} {best[m]}" for m, h in zip(METRICS, HEADS))
                + f"; best γ < 1 on {len(below1)} of 6 (paper: all but SCD), "
                f"γ ∈ {{0.1, 0.2}} on {len(low)} of 6 (paper: four of six)."
            )
    L += [f"- {o}" for o in obs] or ["- No γ sweep results yet."]
    L.append("- The paper gives Figure 4 as a plot only, so its values are not transcribed here.")
    # --- Table 5
    L += ["", "### Table 5: average vs max pooling for W (W in D_ir and G, γ = 0.1)", ""]
    rows = [
        ("paper: Avg-Pooling", None, fixed(PAPER["table5"]["avg"])),
        ("paper: Max-Pooling", None, fixed(PAPER["table5"]["max"])),
    ]
    t5 = {k: stats(runs[n].values()) for k, n in (("avg", "table1_dg"), ("max", "table5_max")) if runs.get(n)}
    rows += [
        (f"ours: {k.capitalize()}-Pooling", len(runs[n]), t5[k])
        for k, n in (("avg", "table1_dg"), ("max", "table5_max"))
        if k in t5
    ]
    L += _table(rows, [r[0] for r in rows if r[0].startswith("ours")]) + [""]
    if len(t5) == 2:
        pa = [m for m in METRICS if PAPER["table5"]["avg"][METRICS.index(m)] > PAPER["table5"]["max"][METRICS.index(m)]]
        L.append(
            "- "
            + compare(t5["avg"], t5["max"], "Average pooling", "max pooling")
            + f" Paper: average higher on {len(pa)} of 6 ({_names(pa)})."
        )
    # --- curves, grid
    if "curves.png" in figures:
        L += [
            "",
            "### Training curves",
            "",
            f"![Training curves]({rel_fig}/curves.png)",
            "",
            "Generator loss (mean over seeds; band: min–max) and the validation selection criterion "
            "(mean relative margin to Average fusion) per experiment with seeds.",
        ]
    grid = extra.get("grid")
    if grid and "grid.png" in figures:
        L += [
            "",
            "### Test images",
            "",
            f"![Three test pairs]({rel_fig}/grid.png)",
            "",
            f"Test pairs {', '.join('`%s`' % s for s in grid['stems'])}; columns: "
            + " | ".join(grid["columns"])
            + " ("
            + "; ".join(f"{k}: `{v['workdir']}` step {v['step']}" for k, v in grid["runs"].items())
            + ").",
        ]
    L += _tno(extra.get("tno42"))
    return "\n".join(L) + "\n"


def _tno(doc) -> list[str]:
    if not doc:
        return ["", "### TNO (cross-dataset)", "", "- Not evaluated yet."]
    meth = doc["methods"]
    label = {n: BASELINE_NAMES.get(n, n) if v["kind"] == "baseline" else n for n, v in meth.items()}
    rows = [(label[n], v["n_pairs"], fixed(v["mean"])) for n, v in meth.items()]
    full = {n: v for n, v in meth.items() if v["n_pairs"] == doc["n_pairs"]}
    out = [
        "",
        f"### TNO (cross-dataset, {doc['n_pairs']} pairs; never used to train or choose)",
        "",
        *_table(rows, [label[n] for n in full]),
        "",
        "n = pairs. Published outputs of other methods (`../shared/data/peers/tno42`), our shipped model "
        "and the classical baselines, all scored by our `evaluation.evaluate` (the code of `evaluate.py`); "
        f"**bold** = best of the methods scored on all {doc['n_pairs']} pairs.",
    ]
    out += [f"- {n}" for n in doc.get("notes", [])]
    ship = doc.get("model")
    for n, v in meth.items():  # a method with fewer pairs: compare with ours on its pairs
        if ship in full and n not in full and v.get("per_image"):
            on = sorted(v["per_image"])
            a, b = (
                {m: (_mean([d["per_image"][s][m] for s in on]), math.nan, len(on)) for m in METRICS}
                for d in (meth[ship], v)
            )
            out.append(f"- On {n}'s {len(on)} pairs: " + compare(a, b, ship, n, std_note=False))
    if ship in full:
        ranks = [1 + sum(full[o]["mean"][m] > full[ship]["mean"][m] for o in full) for m in METRICS]
        out.append(
            f"- {ship} ranks "
            + ", ".join(f"{h} {r}" for h, r in zip(HEADS, ranks))
            + f" of the {len(full)} methods scored on all {doc['n_pairs']} pairs."
        )
    return out


# ----------------------------------------------------------------------------- figures
def _mpl():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ReportError(NEED_MPL) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    fig.clf()


def plot_fig4(runs, extra, path) -> bool:
    plt = _mpl()
    sweep = {
        mode: {g: s for g in GAMMAS if (s := _seed0(runs, GAMMA_RUN[mode].get(g, f"gamma_{mode}_{g}")))}
        for mode in ("dg", "g")
    }
    if not any(sweep.values()):
        return False
    avg = (extra.get("baselines_test") or {}).get("methods", {}).get("Average")
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, m, h in zip(axes.flat, METRICS, HEADS):
        for mode, mk in (("dg", "o-"), ("g", "s--")):
            gs = [g for g in GAMMAS if g in sweep[mode]]
            ax.plot([float(g) for g in gs], [sweep[mode][g][m][0] for g in gs], mk, label=MODE_NAMES[mode])
        if avg and avg["mean"].get(m) is not None:
            ax.axhline(avg["mean"][m], color="gray", lw=1, ls=":", label="Average fusion")
        ax.set_xscale("log")
        ax.set_xlim(0.08, 6.5)
        ax.set_xticks([0.1, 0.2, 0.5, 1, 2, 5], ["0.1", "0.2", "0.5", "1", "2", "5"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.set_title(h)
        ax.set_xlabel("γ")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Test metrics vs γ (RoadScene, 20 test pairs, λ = 0.5, seed 0)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_curves(runs, path) -> bool:
    plt = _mpl()
    fams = [n for n in ("table1_dg", "table1_g", "table1_d", "baseline_none", "table5_max") if runs.get(n)]
    if not fams:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for n in fams:
        docs = list(runs[n].values())
        steps = sorted(set.intersection(*[{c["step"] for c in d["curve"]} for d in docs]))
        y = np.array([[next(c["loss_g"] for c in d["curve"] if c["step"] == s) for s in steps] for d in docs])
        if steps:
            (line,) = a.plot(steps, y.mean(0), label=f"{n} (n={len(docs)})")
            a.fill_between(steps, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
        vsteps = sorted(set.intersection(*[{v["step"] for v in d["validation"]} for d in docs]))
        v = np.array([[next(x["margin"] for x in d["validation"] if x["step"] == s) for s in vsteps] for d in docs])
        if vsteps:
            b.errorbar(
                vsteps, v.mean(0), yerr=v.std(0, ddof=1) if len(docs) > 1 else None, marker="o", capsize=3, label=n
            )
    a.set(xlabel="step", ylabel="G loss (Eq. 6)", title="Generator loss (training)")
    b.set(xlabel="step", ylabel="mean relative margin to Average", title="Validation criterion (20 val pairs)")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def plot_grid(rows, columns, path) -> None:
    """rows: ``(stem, [image per column])`` (gray or RGB uint8); one figure row per test pair."""
    plt = _mpl()
    h, w = rows[0][1][0].shape[:2]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(3 * len(columns), 3 * len(rows) * h / w + 0.4), squeeze=False
    )
    for r, (stem, imgs) in enumerate(rows):
        for c, img in enumerate(imgs):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c])
            if c == 0:
                ax.set_ylabel(stem)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- docs
def update_docs(path: str, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Replaces the text between the markers ``begin`` ... ``end`` (appends them when absent)."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    b, e = text.find(begin), text.find(end)
    if b == -1 and e == -1:
        new = (text.rstrip("\n") + "\n\n" if text.strip() else "") + f"{begin}\n{block}{end}\n"
    elif b == -1 or e == -1 or e < b or text.count(begin) > 1 or text.count(end) > 1:
        raise ReportError(f"{path}: the markers {begin} ... {end} are broken; fix them by hand")
    else:
        new = text[: b + len(begin)] + "\n" + block + text[e:]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(new)


def write_report(results_dir: str, docs_path: str, figures_dir: str, expected=()) -> list[str]:
    """Plots and the markdown block from the result files; returns the files written."""
    _mpl()  # fail before writing anything
    runs, extra = load(results_dir)
    written = []
    if plot_fig4(runs, extra, os.path.join(figures_dir, "fig4_gamma.png")):
        written.append(os.path.join(figures_dir, "fig4_gamma.png"))
    if plot_curves(runs, os.path.join(figures_dir, "curves.png")):
        written.append(os.path.join(figures_dir, "curves.png"))
    figures = [os.path.basename(f) for f in written]
    if os.path.exists(os.path.join(figures_dir, "grid.png")):
        figures.append("grid.png")  # made by the full mode (needs runs and data); kept otherwise
    rel = os.path.relpath(figures_dir, os.path.dirname(os.path.abspath(docs_path))).replace(os.sep, "/")
    update_docs(docs_path, render(runs, extra, rel, expected, figures))
    return written + [docs_path]


# ----------------------------------------------------------------------------- paper weights (issue 21)
PW_BEGIN, PW_END = "<!-- paper_weights:begin -->", "<!-- paper_weights:end -->"
PW_SCENE = "paper_weights_scene.png"
PW_ROWS = [
    ("table1_none", "`none`: no W (not in the paper)"),
    ("table1_d", "W in D_ir only (Section 3; no row in the paper)"),
    ("table1_g", "W in G only (paper: ours (L_adv*))"),
    ("table1_dg", "W in D_ir and G (paper: ours (L_Di*, L_adv*))"),
]
PW_LARGE = [
    ("large_none", "`none`, ngf 32, 256×512 (seed 0)"),
    ("large_dg", "W in D_ir and G, ngf 32, 256×512 (seed 0)"),
]
PW_G05 = [
    ("table1_none_g05", "`none`, γ = λ = 0.5 (seed 0)"),
    ("table1_dg_g05", "W in D_ir and G, γ = λ = 0.5 (seed 0)"),
]
# (claim, A, B, what the paper says): the paper has A better than B (all six metrics: higher is better).
CLAIMS = [
    ("dg vs none", "table1_dg", "table1_none", "Table 1: W in D_ir and G improves on no W"),
    ("g vs none", "table1_g", "table1_none", "Table 1: W in G improves on no W"),
    ("d vs none", "table1_d", "table1_none", "Section 3: W in D_ir improves on no W"),
    ("avg vs max", "table1_dg", "table5_max", "Table 5: average pooling of W beats max pooling"),
    ("dg vs none, large", "large_dg", "large_none", "Table 1's dg vs none at ngf 32, 256×512 crops"),
    ("dg vs none, γ = λ = 0.5", "table1_dg_g05", "table1_none_g05", "dg vs none at γ = λ = 0.5"),
]
W_KEYS = (("intensity", "intensity"), ("contrast", "local contrast"))
# A paper-scale training step on this CPU (docs/benchmarks.md: ngf 64, 256x512, paper65) and the
# paper's step count (configs/roadscene.flags): for the compute estimate of the report.
PAPER_STEP_S, PAPER_STEPS = 2.5, 20000


def per_image(runs: dict, name: str, metric: str, w_effect: bool = False) -> dict[tuple[int, str], float]:
    """``{(seed, test stem): value}`` of ``metric`` (a paper metric, or with ``w_effect`` a key of
    ``test.w_effect.per_image``) over the runs of experiment ``name``."""
    out = {}
    for seed, d in runs.get(name, {}).items():
        t = d.get("test", {})
        src = (t.get("w_effect") or {}).get("per_image", {}) if w_effect else t.get("per_image", {})
        for stem, v in src.items():
            if v.get(metric) is not None:
                out[(int(seed), stem)] = float(v[metric])
    return out


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _sig_cell(c: dict, metric: str = "CC") -> str:
    """``+0.0123 [+0.0010, +0.0200] p 0.031 ↑``: mean difference, bootstrap 95 % interval, sign-test
    p, and an arrow when significant (:func:`patchfuse_jax.eval.significance.direction`)."""
    from patchfuse_jax.eval.significance import direction

    if c["n"] == 0:
        return "n/a"
    d = 3 if metric == "PSNR" else 4
    lo, hi = c["ci"]
    arrow = {1: " ↑", -1: " ↓", 0: ""}[direction(c)]
    return f"{c['mean_diff']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}] p {_p(c['p_sign'])}{arrow}"


def _w_stats(docs) -> dict[str, tuple[float, float, int]]:
    """``{intensity|contrast: (mean, std, n)}`` over the runs' W-effect means (std over seeds, ddof=1)."""
    out = {}
    for k, _ in W_KEYS:
        v = [
            d["test"]["w_effect"]["mean"][k]
            for d in docs
            if (d["test"].get("w_effect") or {}).get("mean", {}).get(k) is not None
        ]
        out[k] = (float(np.mean(v)) if v else math.nan, float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v))
    return out


def claim_comparisons(runs: dict, a: str, b: str) -> dict[str, dict]:
    """``{metric: paired comparison of A - B}`` over the (seed, test pair)s both have."""
    from patchfuse_jax.eval.significance import paired

    return {m: paired(per_image(runs, a, m), per_image(runs, b, m)) for m in METRICS}


def _differences(runs: dict, a: str, b: str, metric: str) -> np.ndarray:
    va, vb = per_image(runs, a, metric), per_image(runs, b, metric)
    return np.array([va[k] - vb[k] for k in sorted(set(va) & set(vb))], np.float64)


def _pw_setting(docs, expected, runs) -> list[str]:
    sels = sorted({(d.get("config") or {}).get("selection") or "?" for d in docs}) or ["wins_average"]
    out = [
        "### Setting",
        "",
        "- Eq. 6 as the paper writes it: L_ssim and L_mse weighted 1, λ = 0.5, γ = 0.1; BatchNorm, "
        "batch 1, 65×65 patches (`paper65`), Adam 1e-4 constant, direct output, transposed-conv "
        "upsampling (`configs/experiments/paper_weights/base.flags` on `configs/roadscene.flags`). "
        "Compact scale: ngf/ndf 16, 7 levels, 128×256 crops, 1500 steps, 3 seeds; the two large runs: "
        "ngf/ndf 32, 8 levels, 256×512 crops, one seed.",
        f"- Checkpoint: the best validation step by `--selection={'/'.join(sels)}` (wins over Average on "
        "the six paper metrics, then mean margin; 20 validation pairs, `splits/roadscene_val.txt`), scored once on the 20 test pairs "
        "(`splits/roadscene_test.txt`).",
    ]
    if docs:
        mins = [d.get("minutes") or 0.0 for d in docs]
        mach = _machines(docs)
        out.append(
            f"- {len(docs)} finished run{'s' * (len(docs) != 1)}, {sum(mins):.0f} minutes of training "
            f"({min(mins):.1f}–{max(mins):.1f} per run, from the training logs; other work may have "
            "shared the cores); " + "; ".join(mach) + "."
        )
    else:
        out.append("- No finished runs yet.")
    missing = [f"`{n}` seed {s}" for n, s in expected if s not in runs.get(n, {})]
    if missing:
        out.append(
            f"- Missing ({len(missing)} runs, not trained or not evaluated yet): "
            + ", ".join(missing)
            + ". **Every verdict below is provisional** until they are in: "
            "it rests on the seeds listed with it."
        )
    return out


def _pw_claims(runs: dict, expected) -> list[str]:
    from patchfuse_jax.eval import significance as sig

    out = [
        "### Significance of each claim",
        "",
        "Per metric: mean difference A − B over the paired (seed, test pair)s (image i of seed s of A "
        "with image i of seed s of B), its 95 % paired bootstrap interval "
        f"({sig.N_BOOT} resamples of the test pairs, each with all its seeds; seed {sig.BOOT_SEED}) and "
        "the two-sided exact sign-test p over all pairs. ↑/↓: significant (p < "
        f"{sig.ALPHA} and the interval excludes 0 on the same side). Verdict: **holds** when A is "
        "significantly higher on a majority (≥ 4) of the six metrics, **does not hold** when "
        "significantly lower on a majority, **cannot tell at this scale** otherwise. The sign test "
        "counts the seeds of one image as separate pairs; the bootstrap does not.",
        "",
        "| claim (A vs B) | pairs | " + " | ".join(HEADS) + " | verdict |",
        "|---|---:|" + "---|" * (len(METRICS) + 1),
    ]
    verdicts, pending, wanted = [], [], {e for e, _ in expected}
    for name, a, b, paper in CLAIMS:
        if not (runs.get(a) and runs.get(b)):
            if {a, b} & wanted or runs.get(a) or runs.get(b):
                lack = ", ".join(f"`{n}`" for n in (a, b) if not runs.get(n))
                pending.append(f"{name} ({paper}): no verdict yet, no results for {lack}.")
            continue
        comps = claim_comparisons(runs, a, b)
        dirs = {m: sig.direction(c) for m, c in comps.items() if c["n"]}
        v = sig.verdict(dirs.values())
        v_text = "cannot tell at this scale" if v == "cannot tell" else v
        n = max(c["n"] for c in comps.values())
        cells = " | ".join(_sig_cell(comps[m], m) for m in METRICS)
        out.append(f"| {name} (`{a}` vs `{b}`) | {n} | {cells} | **{v_text}** |")
        up, down = [m for m, x in dirs.items() if x > 0], [m for m, x in dirs.items() if x < 0]
        k = len(set(runs[a]) & set(runs[b]))
        text = (
            f"**{name}** ({paper}): **{v_text}**. A significantly higher on {len(up)} of 6 "
            f"({_names(up)}), lower on {len(down)} of 6 ({_names(down)}); {n} pairs "
            f"({k} seed{'s' * (k != 1)})."
        )
        if v == "cannot tell":
            need = [sig.pairs_needed(_differences(runs, a, b, m)) for m in METRICS if m not in up + down]
            need = [x for x in need if math.isfinite(x)]
            if need:
                text += (
                    f" At the observed effect sizes, about {float(np.median(need)):.0f} paired samples "
                    "(median over the undecided metrics; 80 % power, two-sided 0.05, normal "
                    f"approximation) would be needed to tell, against the {n} here."
                )
        verdicts.append(text)
    if not verdicts:  # no claim has both sides yet: no table
        out = out[:-2] + ["No claim has results on both sides yet."]
    return out + (["", *[f"- {x}" for x in verdicts + pending]] if verdicts or pending else [])


def _pw_w_effect(runs: dict) -> list[str]:
    from patchfuse_jax.eval import significance as sig

    out = [
        "### W's own effect on the warm regions",
        "",
        "Per test pair, on the pixels whose W (the mean IR intensity over the 65×65 patch centred on the "
        f"pixel: D_ir's receptive field, `paper65`) is in its top {sig.TOP:.0%}: the fused image's mean "
        f"intensity / the IR image's there, and its mean {sig.CONTRAST_WINDOW}×{sig.CONTRAST_WINDOW} "
        "local standard deviation / the IR image's there (1 = as in the IR image). Per run the mean over "
        "the test pairs; the rows give mean ± std over seeds; the differences against `none` (same scale "
        "and γ) are paired as above.",
        "",
        "| experiment | n | intensity ratio | contrast ratio | intensity vs `none` | contrast vs `none` |",
        "|---|---:|---:|---:|---|---|",
    ]
    ref = {
        "table1_d": "table1_none",
        "table1_g": "table1_none",
        "table1_dg": "table1_none",
        "table5_max": "table1_none",
        "large_dg": "large_none",
        "table1_dg_g05": "table1_none_g05",
    }
    obs = []
    for k, lab in PW_ROWS + [("table5_max", "W in D_ir and G, max pooling")] + PW_LARGE + PW_G05:
        ws = _w_stats(runs.get(k, {}).values())
        if not ws["intensity"][2]:
            continue
        cells = [fmt(*ws[x][:2]) for x, _ in W_KEYS]
        r = ref.get(k)
        if r and runs.get(r):
            for x, lab_x in W_KEYS:
                c = sig.paired(per_image(runs, k, x, True), per_image(runs, r, x, True))
                cells.append(_sig_cell(c))
                if c["n"]:
                    dx = sig.direction(c)
                    word = (
                        "significantly higher"
                        if dx > 0
                        else "significantly lower"
                        if dx < 0
                        else "not significantly different"
                    )
                    obs.append(f"`{k}` vs `{r}`: warm-region {lab_x} {word} (mean difference {c['mean_diff']:+.4f}).")
        else:
            cells += ["", ""]
        out.append(f"| {lab} | {ws['intensity'][2]} | " + " | ".join(cells) + " |")
    return out + (["", *[f"- {o}" for o in obs]] if obs else ["", "- No W-effect values yet."])


def render_paper_weights(runs: dict, extra: dict, rel_fig: str, expected=(), figures=()) -> str:
    """The markdown between :data:`PW_BEGIN` and :data:`PW_END`."""
    from patchfuse_jax.eval.significance import TOP

    L = [
        "## The paper's claims at the paper's weights (generated)",
        "",
        "_Everything between the `paper_weights` markers is written by `python scripts/reproduce.py "
        "--suite=paper_weights` (`--report_only`: from `results/paper_weights/*.json` alone); edit the "
        "code, not this text._",
        "",
    ]
    docs = [d for seeds in runs.values() for d in seeds.values()]
    base = (extra.get("baselines_test") or {}).get("methods", {})
    L += _pw_setting(docs, expected, runs)
    # --- Table 1 and Table 5 rows
    rows = [
        (f"paper: {lab.split(' (paper')[0]}", None, fixed(PAPER["table1"][k]))
        for k, lab in PW_ROWS
        if k in PAPER["table1"]
    ]
    for k, lab in PW_ROWS + PW_LARGE + PW_G05:
        if runs.get(k):
            rows.append((f"ours: {lab}", len(runs[k]), stats(runs[k].values())))
    rows += [(lab, 1, fixed(base[k]["mean"])) for k, lab in BASELINE_NAMES.items() if k in base]
    L += [
        "",
        "### Table 1: where W is used (paper's weights)",
        "",
        *_table(rows, [r[0] for r in rows if not r[0].startswith("paper")]),
        "",
        "Mean ± std over seeds (n runs; sample std). Paper rows: its Table 1, on its own test pairs. "
        "**bold** = best of ours and the baselines per column; all six metrics: higher is better.",
        "",
    ]
    rows = [
        ("paper: Avg-Pooling", None, fixed(PAPER["table5"]["avg"])),
        ("paper: Max-Pooling", None, fixed(PAPER["table5"]["max"])),
    ]
    rows += [
        (f"ours: {lab}", len(runs[n]), stats(runs[n].values()))
        for n, lab in (("table1_dg", "Avg-Pooling (= W in D_ir and G)"), ("table5_max", "Max-Pooling"))
        if runs.get(n)
    ]
    L += [
        "### Table 5: average vs max pooling of W (paper's weights)",
        "",
        *_table(rows, [r[0] for r in rows if r[0].startswith("ours")]),
        "",
    ]
    L += _pw_claims(runs, expected) + [""] + _pw_w_effect(runs)
    # --- figure
    scene = extra.get("scene")
    if scene and PW_SCENE in figures:
        size, top = scene.get("size", 65), scene.get("top", TOP)
        used = "; ".join(f"{c}: `{v['workdir']}` step {v['step']}" for c, v in scene["runs"].items())
        L += [
            "",
            "### One test scene across the four W modes",
            "",
            f"![One test scene across the W modes]({rel_fig}/{PW_SCENE})",
            "",
            f"Test pair `{scene['stem']}` (the test pair whose warm region stands out most in the IR "
            f"image); red outline: the top {top:.0%} of W ({size}×{size} patch means of the IR image). "
            "Columns: " + " | ".join(scene["columns"]) + f" ({used}).",
        ]
    # --- what would be needed
    hours = 5 * 3 * PAPER_STEPS * PAPER_STEP_S / 3600
    L += [
        "",
        "### What would be needed to tell",
        "",
        "- Where a claim cannot be told: more paired samples at this scale (the counts above: more seeds, "
        "or more test pairs; the paper's own test set is not published), or a larger effect.",
        "- Scale: the paper trains ngf/ndf 64 with 8 levels on 256×512 crops. The compact runs have "
        "(16/64)² = 1/16 of its conv compute per pixel on a quarter of its crop; the large runs "
        "(32/64)² = 1/4 on its full crop. If W's effect grows with capacity, `large_dg` vs `large_none` "
        "shows it first.",
        f"- Compute: a paper-scale training step takes about {PAPER_STEP_S} s on this 2-core CPU "
        "(docs/benchmarks.md), so Table 1 and Table 5 at the paper's scale (5 experiments × 3 seeds × "
        f"{PAPER_STEPS} steps, configs/roadscene.flags) would take about {hours:.0f} CPU hours: an "
        "experiment for a GPU.",
    ]
    return "\n".join(L) + "\n"


def plot_scene(
    stem: str, ir: np.ndarray, vis: np.ndarray, fused: dict, mask: np.ndarray, path: str, title: str = ""
) -> None:
    """One row IR | visible | one column per ``fused`` entry (``{label: (H, W) uint8}``); ``ir``,
    ``vis`` uint8 ``(H, W)`` (vis may be RGB); the warm region ``mask`` ``(H, W)`` bool outlined in red."""
    plt = _mpl()
    cols = [("IR", ir), ("visible", vis), *fused.items()]
    h, w = ir.shape[:2]
    fig, axes = plt.subplots(1, len(cols), figsize=(3 * len(cols), 3 * h / w + 0.8), squeeze=False)
    for ax, (lab, img) in zip(axes[0], cols):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(lab)
    axes[0][0].set_ylabel(stem)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def write_paper_weights_report(results_dir: str, docs_path: str, figures_dir: str, expected=()) -> list[str]:
    """The paper-weights block of ``docs_path`` from the result files (no plots: the scene figure
    is made with the runs); returns the files written."""
    runs, extra = load(results_dir, ("baselines_test", "scene"))
    figures = [PW_SCENE] if os.path.exists(os.path.join(figures_dir, PW_SCENE)) else []
    rel = os.path.relpath(figures_dir, os.path.dirname(os.path.abspath(docs_path))).replace(os.sep, "/")
    update_docs(docs_path, render_paper_weights(runs, extra, rel, expected, figures), PW_BEGIN, PW_END)
    return [docs_path]
