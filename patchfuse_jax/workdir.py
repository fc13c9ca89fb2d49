"""A training run's folder (``--workdir``): its file names and how to read them. Never imports
JAX, so scripts (reproduction, reports, trial tables) can read runs without it.

Layout::

    WORKDIR/
      checkpoints/<step>/        orbax step folders (state + config), patchfuse_jax.checkpoint
      damaged_checkpoints/       unreadable steps set aside on resume (never deleted)
      config.json                the config the run was last trained with (+ "global_batch")
      config_history.jsonl       earlier configs, when a resume changed flags
      metrics.jsonl              one JSON line per logged step; "val_*" lines for validation
      best.json, best.msgpack    the validation-selected step and its generator export
      samples/step_<step>.png    IR | visible | fused grids
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

CHECKPOINTS = "checkpoints"
DAMAGED = "damaged_checkpoints"
CONFIG = "config.json"
CONFIG_HISTORY = "config_history.jsonl"
METRICS = "metrics.jsonl"
BEST_JSON = "best.json"
BEST_EXPORT = "best.msgpack"
SAMPLES = "samples"

log = logging.getLogger("patchfuse_jax")


class JsonlError(ValueError):
    """A JSON-lines file (metrics.jsonl, config_history.jsonl) has a broken line; names it."""


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file ([] when absent). A broken last line (a crash cut it) is
    skipped with a warning; a broken line before it raises JsonlError naming file and line."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if any(x.strip() for x in lines[i + 1 :]):
                raise JsonlError(f"{path}:{i + 1}: not a JSON line ({e.msg}); fix or delete it") from None
            log.warning("%s:%d: dropped the last line, cut short (by a crash?): %r", path, i + 1, line[:80])
    return rows


def write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (training and ``val_*`` lines) as :func:`read_jsonl`;
    ``path`` is the file or its workdir."""
    if os.path.isdir(path):
        path = os.path.join(path, METRICS)
    return read_jsonl(path)


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def checkpoint_steps(workdir: str) -> list[int]:
    """Steps of the finished checkpoint folders (orbax writes ``<step>.orbax-checkpoint-tmp-*``
    first and renames it when complete), ascending; [] without checkpoints."""
    d = os.path.join(workdir, CHECKPOINTS)
    return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def is_finished(workdir: str) -> bool:
    """The run reached its ``num_steps`` and wrote its validation-selected export."""
    cfg, steps = read_json(os.path.join(workdir, CONFIG)), checkpoint_steps(workdir)
    return (
        cfg is not None
        and bool(steps)
        and steps[-1] >= cfg.get("num_steps", math.inf)
        and os.path.exists(os.path.join(workdir, BEST_JSON))
        and os.path.exists(os.path.join(workdir, BEST_EXPORT))
    )


__all__ = [
    "BEST_EXPORT",
    "BEST_JSON",
    "CHECKPOINTS",
    "CONFIG",
    "CONFIG_HISTORY",
    "DAMAGED",
    "JsonlError",
    "METRICS",
    "SAMPLES",
    "checkpoint_steps",
    "is_finished",
    "read_json",
    "read_jsonl",
    "read_metrics",
    "write_jsonl",
]
