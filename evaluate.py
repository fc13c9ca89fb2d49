"""Evaluate fused IR + visible images: per-image CSV, summary JSON and a paper-style markdown table.

    python evaluate.py --ir_dir=DATA/tno/ir --vis_dir=DATA/tno/vis \
        --method DenseFuse=DATA/peers/tno42/DenseFuse --baselines \
        [--checkpoint=runs/demo] [--split=splits/tno_test.txt] [--metrics=paper] --out_dir=out/tno

See docs/evaluation.md.
"""

import sys
import warnings

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("ir_dir", None, "Folder of infrared source images.")
flags.DEFINE_string("vis_dir", None, "Folder of visible source images (paired with --ir_dir by file stem).")
flags.DEFINE_string("split", None, "Optional file of stems to evaluate, one per line ('#' comments).")
flags.DEFINE_multi_string("method", [], "NAME=DIR: a method's fused images (matched by stem). Repeatable.")
flags.DEFINE_string(
    "checkpoint",
    None,
    "A trained model to fuse on the fly and evaluate: a workdir, an exported .msgpack file, "
    "or 'pretrained' (the package's default weights).",
)
flags.DEFINE_string("checkpoint_name", "patchfuse", "Method name of the --checkpoint model in the tables.")
flags.DEFINE_bool("baselines", False, "Also evaluate the classical baselines Average, Max, LP, GFF.")
flags.DEFINE_string(
    "metrics",
    "all",
    "Comma-separated metric names, or groups: paper (6), all (14), textbook (MI/VIF/Qabf without toolbox quirks).",
)
flags.DEFINE_string("out_dir", None, "Folder for per_image.csv, summary.json, summary.md.")
flags.DEFINE_integer("workers", None, "Process-pool size (0 = serial; default: one per CPU, up to 8).")
flags.DEFINE_bool("save_fused", False, "Write on-the-fly outputs (model, baselines) to OUT_DIR/fused/.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool(
    "mean_rank", True, "Add each method's mean rank over the metrics (summary.md column, summary.json 'mean_rank')."
)
flags.mark_flags_as_required(["ir_dir", "vis_dir", "out_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from patchfuse_jax.eval import evaluate as evaluation

    warnings.showwarning = lambda msg, cat, *a, **k: print(f"evaluate.py: warning: {msg}", file=sys.stderr)
    try:
        paths = evaluation.run(
            FLAGS.ir_dir,
            FLAGS.vis_dir,
            FLAGS.out_dir,
            methods=FLAGS.method,
            split=FLAGS.split,
            checkpoint=FLAGS.checkpoint,
            checkpoint_name=FLAGS.checkpoint_name,
            baselines=FLAGS.baselines,
            metrics=FLAGS.metrics,
            workers=FLAGS.workers,
            progress=FLAGS.progress,
            save_fused=FLAGS.save_fused,
            mean_rank=FLAGS.mean_rank,
        )
    except (*evaluation.ERRORS, OSError) as e:  # one line naming the file, never a traceback
        print(f"evaluate.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)
    with open(paths["summary.md"], encoding="utf-8") as fh:
        print(fh.read(), end="")
    print("wrote " + ", ".join(paths.values()))


if __name__ == "__main__":
    app.run(main)
