"""BatchNorm at inference: ``fuse(..., bn="running")`` vs ``bn="image"`` on RoadScene splits.

    python bench/bn_modes.py --checkpoint=runs/bn_check [--splits=splits/roadscene_val.txt,...]

Prints one JSON line per (split, mode): the six paper metrics' means (as evaluate.py computes
them, on 8-bit outputs), wins against Average fusion and the mean relative margin
(``patchfuse_jax.train.validation``). The model must be trained with ``--norm=batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="workdir or exported file (norm=batch)")
    p.add_argument("--data_dir", default="../shared/data/roadscene")
    p.add_argument("--splits", default="splits/roadscene_val.txt,splits/roadscene_test.txt")
    args = p.parse_args()
    from patchfuse_jax import load_checkpoint
    from patchfuse_jax.train.validation import Validator

    params = load_checkpoint(args.checkpoint)
    if params.arch.norm != "batch":
        sys.exit(f"error: {args.checkpoint}: norm={params.arch.norm}, not batch: both modes are the same")
    for split in args.splits.split(","):
        val = Validator(args.data_dir, split)
        for bn in ("running", "image"):
            scores = val.evaluate(params, bn=bn)
            print(
                json.dumps(
                    {
                        "checkpoint": args.checkpoint,
                        "step": params.step,
                        "split": split,
                        "bn": bn,
                        **{k: round(float(v), 4) for k, v in scores.items()},
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
