"""Evaluation during training: fuse the validation pairs, score them, pick the best checkpoint.

``Validator(data_dir, split_file)`` reads the validation pairs once and scores Average fusion
(``(ir + vis) / 2``) on them. ``validator.evaluate(params)`` fuses every pair with the current
generator (eval mode, as ``fuse``), rounds to uint8 as an 8-bit PNG would, and computes the
paper's six metrics (:data:`patchfuse_jax.metrics.PAPER_METRICS`, higher is better for all) as
means over the pairs, exactly as ``evaluate.py`` does.

Selection criterion (``selection_key``; docs/RESULTS.md): first the number of the six metrics on
which the model is at least as good as Average fusion on the same pairs ("wins", 0..6), then
the mean relative margin ``mean_m (model_m - average_m) / |average_m|``. Larger is better.
"""
from __future__ import annotations

import numpy as np

from patchfuse_jax import baselines, data, io
from patchfuse_jax import metrics as metrics_mod
from patchfuse_jax.evaluation import quantize

METRICS = metrics_mod.PAPER_METRICS


def summarize(means: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """Adds ``wins`` (metrics >= reference) and ``margin`` (mean relative difference). A metric
    that is undefined (NaN) for either counts as no win and is left out of the margin."""
    wins = sum(bool(means[m] >= reference[m]) for m in METRICS)
    rel = [(means[m] - reference[m]) / max(abs(reference[m]), 1e-12) for m in METRICS]
    rel = [r for r in rel if np.isfinite(r)]
    margin = float(np.mean(rel)) if rel else float("-inf")
    return {**means, "wins": int(wins), "margin": margin}


def selection_key(summary: dict[str, float]) -> tuple[float, float]:
    """Sort key of the best-checkpoint criterion (larger is better)."""
    return (summary["wins"], summary["margin"])


class Validator:
    """Validation pairs of ``data_dir`` listed in ``split_file``, with Average fusion's scores."""

    def __init__(self, data_dir: str, split_file: str):
        folder = data.PairFolder(data_dir, stems=data.read_split(split_file))
        self.pairs = []  # (stem, ir gray uint8/16, vis as read, metric inputs a, b)
        for i in range(len(folder)):
            ir_path, vis_path = folder.paths(i)
            ir = io.to_gray(io.read_image(ir_path), name=ir_path)
            vis = io.read_image(vis_path)
            if not (vis.ndim == 2 or vis.shape[-1] == 3):
                vis = io.to_gray(vis, name=vis_path)
            a = metrics_mod.as_metric_input(ir, name=ir_path)
            b = metrics_mod.as_metric_input(vis, name=vis_path)
            if a.shape != b.shape:
                raise data.DataError(f"{ir_path} is {a.shape} but {vis_path} is {b.shape} (H x W)")
            self.pairs.append((folder.name(i), ir, vis, a, b))
        avg = [quantize(baselines.BASELINES["Average"](a / 255.0, b / 255.0)) for *_, a, b in self.pairs]
        self.average = self._score(avg)

    def __len__(self) -> int:
        return len(self.pairs)

    def _score(self, fused: list[np.ndarray]) -> dict[str, float]:
        per = [metrics_mod.compute(a, b, metrics_mod.as_metric_input(f), METRICS, label=stem, warn=False)
               for (stem, _, _, a, b), f in zip(self.pairs, fused)]
        return {m: float(np.mean([p[m] for p in per])) for m in METRICS}

    def evaluate(self, params, bn: str | None = None) -> dict[str, float]:
        """Means of the six metrics for ``params`` (FuseParams), plus ``wins`` and ``margin``;
        ``bn``: BatchNorm mode of ``fuse`` (default: fuse's default)."""
        from patchfuse_jax.inference import DEFAULT_BN, fuse  # lazy: JAX
        bn = bn or DEFAULT_BN
        fused = [quantize(fuse(params, ir, vis, bn=bn)) for _, ir, vis, _, _ in self.pairs]
        return summarize(self._score(fused), self.average)
