"""Train the fusion GAN: ``python train.py --flagfile=configs/demo.flags --workdir=runs/demo``.

Flags on the command line override the flagfile. Re-running the same command resumes from the
workdir's latest checkpoint. The training flags are generated from ``patchfuse_jax.train.config.Config``
(one flag per field, with its default and help); see README.md for the ones that matter.
"""

import logging
import signal
import sys

from patchfuse_jax.train import runtime

if __name__ == "__main__":
    runtime.use_huge_pages()  # re-executes this process once; before jax is imported

from absl import app, flags  # noqa: E402

from patchfuse_jax.train import config  # noqa: E402
from patchfuse_jax.train.config import ConfigError, config_from_flags, define_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics.jsonl, samples/.", required=True)
flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir although flags that change what is trained differ from its "
    "config.json; the old config is appended to WORKDIR/config_history.jsonl.",
)
# Multi-host (see docs/parallel.md); also picked up from the platform's environment.
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
define_flags(FLAGS)  # one flag per Config field
flags.adopt_module_key_flags(config)  # ... listed by --help as this program's own


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the trainer saves a checkpoint, as on Ctrl-C


def main(argv):
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # cluster schedulers and `kill` stop cleanly
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    from patchfuse_jax.checkpoint import CheckpointError
    from patchfuse_jax.io import DataError, ImageError
    from patchfuse_jax.train import loop as trainer
    from patchfuse_jax.train import parallel
    from patchfuse_jax.workdir import JsonlError

    try:
        cfg = config_from_flags(FLAGS)
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        trainer.train_and_evaluate(cfg, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    except (ConfigError, DataError, ImageError, CheckpointError, trainer.NonFiniteError, JsonlError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
