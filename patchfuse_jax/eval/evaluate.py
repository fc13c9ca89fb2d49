"""Evaluate fused images of several methods on one IR/visible test set; write CSV, JSON and markdown.

Pairs are matched by file stem across ``ir_dir``, ``vis_dir`` and each method's folder. Methods
are folders of fused images (``NAME=DIR``), the classical baselines of
:mod:`patchfuse_jax.eval.baselines`, and our model fused on the fly from a checkpoint. Every fused image
is compared on one gray channel, 0..255 (see :func:`patchfuse_jax.eval.metrics.evaluate_pair`);
fused-on-the-fly outputs are rounded to uint8 first, as if saved as 8-bit PNG.

Outputs of :func:`write_reports`: ``per_image.csv``, ``summary.json``, ``summary.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import math
import multiprocessing
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from patchfuse_jax import io
from patchfuse_jax.eval import baselines as baselines_mod
from patchfuse_jax.eval import metrics as metrics_mod
from patchfuse_jax.eval.metrics import MetricError, MetricWarning
from patchfuse_jax.io import DataError, ImageError, format_list


class EvaluationError(DataError):
    """A bad evaluation setup: missing folder or image, size mismatch, malformed option."""


ERRORS = (DataError, MetricError, ImageError)  # what the CLI reports as one message
MARKS = {1: ("**", "**"), 2: ("_", "_"), 3: ("", "†")}  # best, second, third
MARK_LEGEND = "**bold** = best, _italic_ = second, † = third"


def parse_method(spec: str) -> tuple[str, str]:
    """``"NAME=DIR"`` -> ``(NAME, DIR)``."""
    name, sep, folder = spec.partition("=")
    name, folder = name.strip(), folder.strip()
    if not sep or not name or not folder or any(c in name for c in ",|/\\"):
        raise EvaluationError(f"--method {spec!r}: expected NAME=DIR (NAME without , | / \\)")
    return name, folder


@dataclass
class Method:
    """One column source: ``kind`` is ``"folder"`` (``source`` = dir), ``"baseline"`` or ``"model"``."""

    name: str
    kind: str
    source: str
    paths: dict[str, str] = field(default_factory=dict)  # stem -> fused file (folders only)


@dataclass
class Result:
    """Per-image values ``values[method][stem][metric]`` plus the setup that produced them."""

    metrics: list[str]
    methods: list[Method]
    images: list[str]
    values: dict[str, dict[str, dict[str, float]]]
    info: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One dict per (method, image): ``image``, ``method`` and one key per metric."""
        return [{"image": s, "method": m.name, **self.values[m.name][s]} for m in self.methods for s in self.images]

    def summary(self) -> dict:
        """``{method: {metric: {mean, std, count, excluded, rank}}}``; NaN/inf values are excluded."""
        out: dict = {}
        for m in self.methods:
            out[m.name] = {}
            for k in self.metrics:
                v = np.array([self.values[m.name][s][k] for s in self.images], dtype=np.float64)
                ok = v[np.isfinite(v)]
                out[m.name][k] = {
                    "mean": float(ok.mean()) if ok.size else math.nan,
                    "std": float(ok.std()) if ok.size else math.nan,
                    "count": int(ok.size),
                    "excluded": int(v.size - ok.size),
                }
        for k in self.metrics:
            for name, r in rank_methods(
                {n: out[n][k]["mean"] for n in out}, metrics_mod.HIGHER_IS_BETTER.get(k, True)
            ).items():
                out[name][k]["rank"] = r
        return out


def rank_methods(means: Mapping[str, float], higher_is_better: bool = True, decimals: int = 4) -> dict[str, int | None]:
    """Dense rank (1 = best) of each method's mean as shown (rounded to ``decimals``); NaN -> None."""
    shown = {n: round(v, decimals) for n, v in means.items() if math.isfinite(v)}
    order = sorted(set(shown.values()), reverse=higher_is_better)
    return {n: (order.index(shown[n]) + 1 if n in shown else None) for n in means}


def mean_rank(means: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    """Mean over ``metrics`` of each method's :func:`rank_methods` rank among ``means``
    (``{method: {metric: mean}}``); a metric a method has no finite mean for is left out of its
    mean (NaN when none is left)."""
    per: dict[str, list[int]] = {n: [] for n in means}
    for k in metrics:
        for n, r in rank_methods({n: means[n][k] for n in means}, metrics_mod.HIGHER_IS_BETTER.get(k, True)).items():
            if r is not None:
                per[n].append(r)
    return {n: float(np.mean(v)) if v else math.nan for n, v in per.items()}


def _resolve_methods(pairs, methods, checkpoint, checkpoint_name, baselines) -> list[Method]:
    out: list[Method] = []
    methods = [methods] if isinstance(methods, str) else methods
    specs = list(methods.items()) if isinstance(methods, Mapping) else [parse_method(s) for s in methods]
    for name, folder in specs:
        try:
            found = io.list_images(folder)
        except ImageError as e:
            raise EvaluationError(f"method {name}: {e}") from None
        lacking = [s for s in pairs if s not in found]
        if lacking:
            raise EvaluationError(
                f"method {name}: {folder} lacks {len(lacking)} of {len(pairs)} image(s): {format_list(lacking)}"
            )
        out.append(Method(name, "folder", folder, {s: found[s] for s in pairs}))
    if checkpoint:
        if checkpoint != "pretrained" and not os.path.exists(checkpoint):
            raise EvaluationError(f"--checkpoint {checkpoint}: no such folder or file")
        out.append(Method(checkpoint_name, "model", checkpoint))
    if baselines:
        out.extend(Method(n, "baseline", n) for n in baselines_mod.BASELINES)
    if not out:
        raise EvaluationError("nothing to evaluate: give --method NAME=DIR, --checkpoint or --baselines")
    seen: set[str] = set()
    for m in out:
        if m.name in seen:
            raise EvaluationError(f"method name {m.name!r} is used twice")
        seen.add(m.name)
    return out


def _hw(x: np.ndarray) -> str:
    return f"{x.shape[0]}x{x.shape[1]}"


def quantize(f: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8, as an 8-bit PNG would store it."""
    return np.clip(np.round(np.asarray(f, np.float64) * 255.0), 0, 255).astype(np.uint8)


def _evaluate_stem(stem, ir_path, vis_path, jobs, metric_names, save_dir=None):
    """Worker: all methods of one stem -> ``(stem, {method: {metric: value}})``.

    ``jobs``: ``(method, kind, payload)`` with payload a file path, a baseline name or a uint8 array.
    """
    a = metrics_mod.as_metric_input(io.read_image(ir_path), name=ir_path)
    b = metrics_mod.as_metric_input(io.read_image(vis_path), name=vis_path)
    if a.shape != b.shape:
        raise EvaluationError(f"{stem}: ir {ir_path} is {_hw(a)} but vis {vis_path} is {_hw(b)} (H x W)")
    out = {}
    for method, kind, payload in jobs:
        if kind == "folder":
            label = payload
            f = metrics_mod.as_metric_input(io.read_image(payload), name=payload)
        elif kind == "baseline":
            label = f"{method} output for {stem}"
            scale = 1.0 / 255.0
            f = quantize(baselines_mod.BASELINES[payload](a * scale, b * scale))
            if save_dir:
                io.save_image(os.path.join(save_dir, method, stem + ".png"), f)
        else:
            label = f"{method} output for {stem}"
            f = metrics_mod.as_metric_input(payload, name=label)
        if f.shape != a.shape:
            raise EvaluationError(f"method {method}: {label} is {_hw(f)} but its sources are {_hw(a)} (H x W)")
        out[method] = metrics_mod.compute(a, b, f, metric_names, label=label, warn=False)
    return stem, out


def _fuse_model(params, fuse, ir_path, vis_path, stem: str = "") -> np.ndarray:
    """The model's fused image of one pair as uint8; EvaluationError naming the pair when the
    sizes differ or ``fuse`` refuses the input (never a traceback from inside ``fuse``)."""
    try:
        ir, vis = io.read_pair(ir_path, vis_path, stem=stem)
    except DataError as e:
        raise EvaluationError(str(e)) from None
    stem = stem or os.path.splitext(os.path.basename(ir_path))[0]
    try:
        fused = fuse(params, ir, vis)
    except ValueError as e:
        raise EvaluationError(f"{stem}: cannot fuse ir {ir_path} with vis {vis_path}: {e}") from None
    return quantize(np.asarray(fused))


def _pool_context():
    # fork is cheap but unsafe once JAX's threads exist; spawn re-imports in each worker.
    if sys.platform.startswith("linux") and "jax" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_workers(n_stems: int) -> int:
    """Process-pool size: one per CPU (at most 8), serial (0) for fewer than 4 images."""
    return 0 if n_stems < 4 else max(0, min(os.cpu_count() or 1, 8, n_stems))


def evaluate(
    ir_dir: str,
    vis_dir: str,
    methods: Mapping[str, str] | Sequence[str] = (),
    *,
    split: str | Sequence[str] | None = None,
    checkpoint: str | None = None,
    checkpoint_name: str = "patchfuse",
    baselines: bool = False,
    metrics: str | Iterable[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    save_fused: str | None = None,
) -> Result:
    """Computes every metric for every (method, image); see the module docstring.

    ``methods``: ``{NAME: DIR}`` or ``["NAME=DIR", ...]``. ``split``: a split file or a list of stems.
    ``workers``: process-pool size (``0``/``1`` = serial in this process; ``None`` = auto).
    ``save_fused``: a folder to write on-the-fly outputs to as ``<method>/<stem>.png``.
    Raises :class:`EvaluationError`, :class:`MetricError` or :class:`ImageError` with one message.
    """
    from tqdm import tqdm

    metric_names = metrics_mod.resolve_metrics(metrics)
    try:
        stems = io.read_split(split) if isinstance(split, (str, os.PathLike)) else split
    except DataError as e:
        raise EvaluationError(f"--split: {e}") from None
    pairs = io.match_pairs(ir_dir, vis_dir, None if stems is None else list(stems))
    meths = _resolve_methods(pairs, methods, checkpoint, checkpoint_name, baselines)
    model = next((m for m in meths if m.kind == "model"), None)
    if model is not None:
        try:
            from patchfuse_jax.fusing.api import fuse
            from patchfuse_jax.fusing.saved import CheckpointError, load_checkpoint  # lazy: needs JAX
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.inference":
                raise
            raise EvaluationError("--checkpoint needs patchfuse_jax.fusing.api, which is not installed") from None
        try:
            if model.source == "pretrained":  # the package's default weights
                from patchfuse_jax.fusing.saved import pretrained

                params = pretrained()
            else:
                params = load_checkpoint(model.source)
        except CheckpointError as e:
            raise EvaluationError(f"--checkpoint: {e}") from None
    workers = default_workers(len(pairs)) if workers is None else workers

    def jobs_for(stem):
        jobs = []
        for m in meths:
            if m.kind == "folder":
                jobs.append((m.name, "folder", m.paths[stem]))
            elif m.kind == "baseline":
                jobs.append((m.name, "baseline", m.source))
            else:
                fused = _fuse_model(params, fuse, *pairs[stem], stem=stem)
                if save_fused:
                    io.save_image(os.path.join(save_fused, m.name, stem + ".png"), fused)
                jobs.append((m.name, "model", fused))
        return jobs

    values: dict[str, dict[str, dict[str, float]]] = {m.name: {} for m in meths}
    bar = tqdm(total=len(pairs) * len(meths), desc="evaluate", unit="img", disable=not progress)

    def collect(res):
        stem, per_method = res
        for name, vals in per_method.items():
            values[name][stem] = vals
        bar.update(len(per_method))

    try:
        if workers <= 1:
            for stem, (ir_p, vis_p) in pairs.items():
                collect(_evaluate_stem(stem, ir_p, vis_p, jobs_for(stem), metric_names, save_fused))
        else:
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as ex:
                futs = [
                    ex.submit(_evaluate_stem, stem, ir_p, vis_p, jobs_for(stem), metric_names, save_fused)
                    for stem, (ir_p, vis_p) in pairs.items()
                ]
                try:
                    for fut in cf.as_completed(futs):
                        collect(fut.result())
                except BaseException:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()

    values = {n: {s: v[s] for s in pairs} for n, v in values.items()}  # pool results arrive unordered
    result = Result(
        metric_names,
        meths,
        list(pairs),
        values,
        info={
            "ir_dir": os.fspath(ir_dir),
            "vis_dir": os.fspath(vis_dir),
            "split": os.fspath(split) if isinstance(split, (str, os.PathLike)) else None,
        },
    )
    _warn_nonfinite(result)
    return result


def _warn_nonfinite(result: Result) -> None:
    """One :class:`MetricWarning` per method that has undefined values, naming metrics and images."""
    for m in result.methods:
        parts = []
        for k in result.metrics:
            bad = [s for s in result.images if not math.isfinite(result.values[m.name][s][k])]
            if bad:
                parts.append(f"{k} for {len(bad)} image(s) ({format_list(bad, 5)})")
        if parts:
            warnings.warn(
                f"{m.name}: undefined (NaN/inf) values excluded from the means: " + "; ".join(parts),
                MetricWarning,
                stacklevel=3,
            )


# ----------------------------------------------------------------------------- reports
def _json_num(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def ranked_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics a mean rank is taken over: all but the descriptive target measures
    (:data:`patchfuse_jax.eval.metrics.TARGET_METRICS`)."""
    return [k for k in metrics if k not in metrics_mod.TARGET_METRICS]


def summary_mean_ranks(result: Result, summary: dict) -> dict[str, float]:
    """Each method's mean rank over the evaluated metrics (:func:`mean_rank` of the means;
    :func:`ranked_metrics` only)."""
    names = ranked_metrics(result.metrics)
    return mean_rank({m.name: {k: summary[m.name][k]["mean"] for k in names} for m in result.methods}, names)


def format_markdown(result: Result, summary: dict | None = None, with_mean_rank: bool = True) -> str:
    """The paper-style table: rows = methods, columns = metrics, means to 4 decimals, ranks marked;
    ``with_mean_rank``: a last column with each method's mean rank over the metrics (1 = best)."""
    summary = summary if summary is not None else result.summary()
    ranks = summary_mean_ranks(result, summary) if with_mean_rank else {}
    best_rank = min((r for r in ranks.values() if math.isfinite(r)), default=math.nan)
    info = result.info
    lines = [
        "# Evaluation summary",
        "",
        f"{len(result.images)} image pairs (ir: `{info.get('ir_dir')}`, vis: `{info.get('vis_dir')}`"
        + (f", split: `{info['split']}`" if info.get("split") else "")
        + "). "
        "Mean per method; metrics on gray 0..255, higher is better.",
        "",
        "| Method | " + " | ".join(result.metrics) + (" | mean rank" if ranks else "") + " |",
        "|---|" + "---:|" * (len(result.metrics) + bool(ranks)),
    ]
    for m in result.methods:
        cells = []
        for k in result.metrics:
            s = summary[m.name][k]
            if not math.isfinite(s["mean"]):
                cells.append("n/a")
                continue
            pre, post = MARKS.get(s.get("rank") or 0, ("", ""))
            cells.append(f"{pre}{s['mean']:.4f}{post}")
        if ranks:
            r = ranks[m.name]
            cells.append("n/a" if not math.isfinite(r) else (f"**{r:.2f}**" if r == best_rank else f"{r:.2f}"))
        lines.append(f"| {m.name} | " + " | ".join(cells) + " |")
    lines += ["", f"Marks per column: {MARK_LEGEND} (ties at 4 decimals share a mark)."]
    if ranks:
        lines += [
            "",
            f"Mean rank: the mean over the {len(ranked_metrics(result.metrics))} metrics "
            "(TargetContrast and TextureKept not counted) of each method's rank "
            "among the methods above (1 = best; dense ranks of the means at 4 decimals); bold = best.",
        ]
    excl = [
        f"{k}: "
        + ", ".join(
            f"{m.name} {summary[m.name][k]['excluded']}/{len(result.images)}"
            for m in result.methods
            if summary[m.name][k]["excluded"]
        )
        for k in result.metrics
        if any(summary[m.name][k]["excluded"] for m in result.methods)
    ]
    if excl:
        lines += ["", "Excluded from the means (undefined, NaN/inf): " + "; ".join(excl) + "."]
    return "\n".join(lines) + "\n"


def write_reports(result: Result, out_dir: str, mean_rank: bool = True) -> dict[str, str]:
    """Writes ``per_image.csv``, ``summary.json``, ``summary.md`` into ``out_dir``; returns their
    paths. ``mean_rank``: add each method's mean rank over the metrics (a ``mean_rank`` key per
    method in the JSON, a column in the table)."""
    os.makedirs(out_dir, exist_ok=True)
    summary = result.summary()
    paths = {k: os.path.join(out_dir, k) for k in ("per_image.csv", "summary.json", "summary.md")}
    with open(paths["per_image.csv"], "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", *result.metrics])
        for row in result.rows():
            w.writerow([row["image"], row["method"], *(repr(float(row[k])) for k in result.metrics)])
    doc = {
        **result.info,
        "n_images": len(result.images),
        "images": result.images,
        "metrics": result.metrics,
        "methods": [m.name for m in result.methods],
        "sources": {m.name: f"{m.kind}:{m.source}" for m in result.methods},
        "higher_is_better": {k: metrics_mod.HIGHER_IS_BETTER.get(k, True) for k in result.metrics},
        "std": "population (ddof=0) over the finite values",
        "results": {n: {k: {f: _json_num(v) for f, v in s.items()} for k, s in d.items()} for n, d in summary.items()},
    }
    if mean_rank:
        doc["mean_rank"] = {n: _json_num(v) for n, v in summary_mean_ranks(result, summary).items()}
    with open(paths["summary.json"], "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, allow_nan=False)
        fh.write("\n")
    with open(paths["summary.md"], "w", encoding="utf-8") as fh:
        fh.write(format_markdown(result, summary, with_mean_rank=mean_rank))
    return paths


def run(ir_dir: str, vis_dir: str, out_dir: str, mean_rank: bool = True, **kwargs) -> dict[str, str]:
    """:func:`evaluate` then :func:`write_reports`; ``save_fused=True`` writes to ``out_dir/fused``."""
    io.prepare_out_dir(out_dir)  # a file or unwritable folder fails now, not after the metrics
    if kwargs.get("save_fused") is True:
        kwargs["save_fused"] = os.path.join(out_dir, "fused")
    return write_reports(evaluate(ir_dir, vis_dir, **kwargs), out_dir, mean_rank=mean_rank)
