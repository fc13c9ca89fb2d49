"""Fusion quality metrics: one registry and :func:`evaluate_pair`.

Every metric is ``fn(a, b, f) -> float`` with ``a`` = IR, ``b`` = visible, ``f`` = fused: gray
``(H, W)`` arrays of one size on the 0..255 scale (uint8, or float64 for other inputs). A metric
returns ``nan`` where it is undefined (e.g. a constant image). All metrics here are
higher-is-better.

``METRICS`` lists them in display order: the paper's six (``PAPER_METRICS``: CC, MS_SSIM, SCD,
FMI_dct, SSIM_a, PSNR), then CC_mean, EN, SD, SF, AG, MI, VIF, Qabf.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np

from patchfuse_jax import io
from patchfuse_jax.eval.metrics import extra, paper, target


class MetricError(ValueError):
    """Bad input to a metric: unknown metric name, or images of different sizes."""


class MetricWarning(UserWarning):
    """A metric was undefined (NaN) for an image."""


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "CC": paper.cc,
    "MS_SSIM": paper.ms_ssim,
    "SCD": paper.scd,
    "FMI_dct": paper.fmi_dct,
    "SSIM_a": paper.ssim_a,
    "PSNR": paper.psnr,
    "CC_mean": paper.cc_mean,
    "EN": extra.en,
    "SD": extra.sd,
    "SF": extra.sf,
    "AG": extra.ag,
    "MI": extra.mi,
    "VIF": extra.vif,
    "Qabf": extra.qabf,
    # Textbook definitions of the three metrics whose toolbox versions carry bugs
    # (docs/metrics.md, "compat or not"); not in "all", ask for them with "textbook".
    "MI_textbook": functools.partial(extra.mi, compat=False),
    "VIF_textbook": functools.partial(extra.vif, compat=False),
    "Qabf_textbook": functools.partial(extra.qabf, compat=False),
    # Not field metrics: warm-target contrast and visible texture kept (metrics/target.py);
    # not in "all", ask for them with "target".
    "TargetContrast": target.target_contrast,
    "TextureKept": target.texture_kept,
}
PAPER_METRICS: tuple[str, ...] = ("CC", "MS_SSIM", "SCD", "FMI_dct", "SSIM_a", "PSNR")
TEXTBOOK_METRICS: tuple[str, ...] = ("MI_textbook", "VIF_textbook", "Qabf_textbook")
TARGET_METRICS: tuple[str, ...] = ("TargetContrast", "TextureKept")
DEFAULT_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in TEXTBOOK_METRICS + TARGET_METRICS)
HIGHER_IS_BETTER: dict[str, bool] = {name: True for name in METRICS}


def resolve_metrics(names: str | Iterable[str] | None = None) -> list[str]:
    """Canonical metric names, in the order given; ``None``/``"all"`` = the 14 default metrics,
    ``"paper"`` = the six, ``"textbook"`` = MI/VIF/Qabf without the toolbox's quirks, ``"target"``
    = warm-target contrast and visible texture kept (:mod:`.target`).

    ``names`` may be a comma-separated string; matching is case-insensitive. Raises
    :class:`MetricError` listing the known names for an unknown one.
    """
    default = [m for m in METRICS if m not in TEXTBOOK_METRICS + TARGET_METRICS]
    if names is None:
        return default
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise MetricError("no metric names given; known metrics: " + ", ".join(METRICS))
    lower = {k.lower(): k for k in METRICS}
    out: list[str] = []
    unknown: list[str] = []
    for n in names:
        if n.lower() == "all":
            picked: Sequence[str] = default
        elif n.lower() == "paper":
            picked = PAPER_METRICS
        elif n.lower() == "textbook":
            picked = [m for m in TEXTBOOK_METRICS if m in METRICS]
        elif n.lower() == "target":
            picked = [m for m in TARGET_METRICS if m in METRICS]
        elif n.lower() in lower:
            picked = [lower[n.lower()]]
        else:
            unknown.append(n)
            continue
        out.extend(p for p in picked if p not in out)
    if unknown:
        raise MetricError(
            f"unknown metric(s) {', '.join(unknown)}; known metrics: {', '.join(METRICS)} "
            "(or 'paper', 'all', 'textbook', 'target')"
        )
    return out


def as_metric_input(x, *, name: str = "image") -> np.ndarray:
    """Array or file path -> gray ``(H, W)`` on the 0..255 scale.

    RGB(A) -> BT.601 luma (:func:`patchfuse_jax.io.to_gray`; rounded for integer input).
    uint8 stays uint8; uint16 is scaled by 255/65535 and float in [0, 1] by 255 (float64).
    """
    if isinstance(x, (str, os.PathLike)):
        name = os.fspath(x)
        x = io.read_image(x)
    g = io.to_gray(np.asarray(x), name=name)
    if g.dtype == np.uint8:
        return g
    if g.dtype == np.uint16:
        return g.astype(np.float64) * (255.0 / 65535.0)
    if g.dtype == np.bool_:
        return g.astype(np.float64) * 255.0
    if np.issubdtype(g.dtype, np.floating):
        g = g.astype(np.float64)
        if not np.all(np.isfinite(g)):
            raise io.ImageError(f"{name}: contains NaN or Inf")
        lo, hi = float(g.min()), float(g.max())
        if lo < 0.0 or hi > 1.0:
            raise io.ImageError(f"{name}: float values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        return g * 255.0
    raise io.ImageError(f"{name}: unsupported dtype {g.dtype} (use uint8, uint16 or float in [0, 1])")


def _size(x: np.ndarray) -> str:
    return f"{x.shape[0]}x{x.shape[1]}"


def evaluate_pair(
    ir, vis, fused, metrics: str | Iterable[str] | None = None, name: str | None = None
) -> dict[str, float]:
    """Metric values of one fused image, ``{metric: float}`` in the order of ``metrics``.

    ``ir``, ``vis``, ``fused``: arrays ``(H, W)``/``(H, W, 3)`` (uint8, uint16, or float in [0, 1])
    or file paths; all of one size. ``metrics``: names (default all of :data:`METRICS`).
    ``name`` labels the image in errors and warnings. A NaN value emits a :class:`MetricWarning`.
    """
    names = resolve_metrics(metrics)
    label = name if name is not None else (os.fspath(fused) if isinstance(fused, (str, os.PathLike)) else "image")
    a = as_metric_input(ir, name=f"{label} (ir)")
    b = as_metric_input(vis, name=f"{label} (vis)")
    f = as_metric_input(fused, name=f"{label} (fused)")
    if not (a.shape == b.shape == f.shape):
        raise MetricError(f"{label}: images differ in size (H x W): ir {_size(a)}, vis {_size(b)}, fused {_size(f)}")
    return compute(a, b, f, names, label=label)


def compute(
    a: np.ndarray, b: np.ndarray, f: np.ndarray, names: Sequence[str], *, label: str = "image", warn: bool = True
) -> dict[str, float]:
    """Runs metrics ``names`` on prepared inputs (see :func:`as_metric_input`), ``{name: float}``.

    A failing metric raises :class:`MetricError` naming ``label``; NaN warns when ``warn``.
    """
    out: dict[str, float] = {}
    for m in names:
        try:
            v = float(METRICS[m](a, b, f))
        except Exception as e:
            raise MetricError(f"{label}: metric {m} failed: {type(e).__name__}: {e}") from e
        if warn and np.isnan(v):
            warnings.warn(f"{label}: {m} is undefined (NaN)", MetricWarning, stacklevel=3)
        out[m] = v
    return out


__all__ = [
    "METRICS",
    "PAPER_METRICS",
    "DEFAULT_METRICS",
    "TEXTBOOK_METRICS",
    "TARGET_METRICS",
    "HIGHER_IS_BETTER",
    "MetricError",
    "MetricWarning",
    "resolve_metrics",
    "as_metric_input",
    "evaluate_pair",
    "compute",
]
