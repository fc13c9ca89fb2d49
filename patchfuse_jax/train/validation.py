"""Evaluation during training: fuse the validation pairs, score them, pick the best checkpoint.

``Validator(data_dir, split_file)`` reads the validation pairs once and scores a reference panel
on them. ``validator.evaluate(params)`` fuses every pair with the current generator (eval mode,
as ``fuse``), rounds to uint8 as an 8-bit PNG would, and computes the 14 metrics of
:data:`patchfuse_jax.eval.metrics.DEFAULT_METRICS` (higher is better for all) as means over the pairs,
exactly as ``evaluate.py`` does.

Two selection criteria (``--selection``; docs/RESULTS.md):

* ``mean_rank`` (default since 2026-12-05): the model's mean rank over the 14 metrics among
  itself and the panel Average, Max, LP, GFF (:mod:`patchfuse_jax.eval.baselines`) and the ``v1``
  model (``pretrained("v1")``); per metric a dense rank of the means at 4 decimals
  (:func:`patchfuse_jax.eval.evaluate.rank_methods`, as ``evaluate.py``'s tables). Smaller is better;
  ties broken by ``wins``, then ``margin``.
* ``wins_average`` (before): the number of the six paper metrics on which the model is at least
  as good as Average fusion ("wins", 0..6), then the mean relative margin
  ``mean_m (model_m - average_m) / |average_m|``. Average maximises PSNR, SSIM_a and CC by
  construction, so this criterion rewards staying at the average.
"""

from __future__ import annotations

import numpy as np

from patchfuse_jax import io
from patchfuse_jax.eval import baselines
from patchfuse_jax.eval import metrics as metrics_mod
from patchfuse_jax.eval.evaluate import mean_rank, quantize
from patchfuse_jax.train import data

PAPER = metrics_mod.PAPER_METRICS
METRICS = metrics_mod.DEFAULT_METRICS
SELECTIONS = ("mean_rank", "wins_average")
PANEL_MODEL = "v1"  # the panel's learnt member: pretrained("v1"), fixed so selections stay comparable


def summarize(
    means: dict[str, float], reference: dict[str, float], panel: dict[str, dict[str, float]] | None = None
) -> dict[str, float]:
    """Adds ``wins`` (paper metrics >= reference) and ``margin`` (mean relative difference), and
    with a ``panel`` (``{method: means}``) ``mean_rank`` of the model among it over the metrics
    both have. A metric that is undefined (NaN) for either counts as no win and is left out of the
    margin."""
    wins = sum(bool(means[m] >= reference[m]) for m in PAPER)
    rel = [(means[m] - reference[m]) / max(abs(reference[m]), 1e-12) for m in PAPER]
    rel = [r for r in rel if np.isfinite(r)]
    margin = float(np.mean(rel)) if rel else float("-inf")
    out = {**means, "wins": int(wins), "margin": margin}
    if panel is not None:
        names = [m for m in METRICS if m in means]
        out["mean_rank"] = mean_rank({**panel, "model": means}, names)["model"]
    return out


def selection_key(summary: dict[str, float], selection: str = "mean_rank") -> tuple[float, ...]:
    """Sort key of the best-checkpoint criterion ``selection`` (larger is better)."""
    if selection == "mean_rank":
        return (-summary.get("mean_rank", float("inf")), summary["wins"], summary["margin"])
    if selection == "wins_average":
        return (summary["wins"], summary["margin"])
    raise ValueError(f"--selection={selection!r}: expected one of {', '.join(SELECTIONS)}")


CRITERIA = {
    "mean_rank": "mean rank over the 14 metrics among Average, Max, LP, GFF and pretrained('v1') "
    "(smaller is better), then wins over Average, then mean relative margin",
    "wins_average": "wins over Average fusion (of 6 paper metrics), then mean relative margin",
}


class Validator:
    """Validation pairs of ``data_dir`` listed in ``split_file``, with the panel's scores:
    ``average`` (Average fusion, paper metrics) and ``panel`` (``{method: 14 means}``;
    only with ``selection="mean_rank"``)."""

    def __init__(self, data_dir: str, split_file: str, selection: str = "mean_rank"):
        if selection not in SELECTIONS:
            raise ValueError(f"--selection={selection!r}: expected one of {', '.join(SELECTIONS)}")
        self.selection = selection
        self.metrics = METRICS if selection == "mean_rank" else PAPER
        folder = data.PairFolder(data_dir, stems=io.read_split(split_file))
        self.pairs = []  # (stem, ir gray uint8/16, vis as read, metric inputs a, b)
        for i in range(len(folder)):
            ir_path, vis_path = folder.paths(i)
            ir, vis = io.read_pair(ir_path, vis_path)
            a = metrics_mod.as_metric_input(ir, name=ir_path)
            b = metrics_mod.as_metric_input(vis, name=vis_path)
            self.pairs.append((folder.name(i), ir, vis, a, b))
        self.panel: dict[str, dict[str, float]] | None = None
        if selection == "mean_rank":
            from patchfuse_jax.fusing.saved import pretrained  # lazy: JAX

            self.panel = {
                name: self._score([quantize(fn(a / 255.0, b / 255.0)) for *_, a, b in self.pairs])
                for name, fn in baselines.BASELINES.items()
            }
            self.panel[PANEL_MODEL] = self._score(self._fuse(pretrained(PANEL_MODEL)))
            self.average = {m: self.panel["Average"][m] for m in PAPER}
        else:
            self.average = self._score([quantize(baselines.average(a / 255.0, b / 255.0)) for *_, a, b in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def _score(self, fused: list[np.ndarray]) -> dict[str, float]:
        per = [
            metrics_mod.compute(a, b, metrics_mod.as_metric_input(f), self.metrics, label=stem, warn=False)
            for (stem, _, _, a, b), f in zip(self.pairs, fused)
        ]
        return {m: float(np.mean([p[m] for p in per])) for m in self.metrics}

    def _fuse(self, params, bn: str | None = None) -> list[np.ndarray]:
        from patchfuse_jax.fusing.api import DEFAULT_BN, fuse  # lazy: JAX

        bn = bn or DEFAULT_BN
        return [quantize(fuse(params, ir, vis, bn=bn)) for _, ir, vis, _, _ in self.pairs]

    def evaluate(self, params, bn: str | None = None) -> dict[str, float]:
        """Means of the metrics for ``params`` (FuseParams), plus ``wins``, ``margin`` and (with
        ``selection="mean_rank"``) ``mean_rank``; ``bn``: BatchNorm mode of ``fuse`` (default:
        fuse's default)."""
        return summarize(self._score(self._fuse(params, bn)), self.average, self.panel)

    def key(self, summary: dict[str, float]) -> tuple[float, ...]:
        return selection_key(summary, self.selection)
