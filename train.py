"""Train the fusion GAN: ``python train.py --flagfile=configs/demo.flags --workdir=runs/demo``.

Flags on the command line override the flagfile. Re-running the same command resumes from the
workdir's latest checkpoint. See README.md for the flags that matter.
"""
import dataclasses
import logging
import signal
import sys

from absl import app, flags

from patchfuse_jax.config import Config, ConfigError, parse_hw

D = Config()
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics.jsonl, samples/.", required=True)
# Model.
flags.DEFINE_integer("num_downs", D.num_downs, "U-Net depth (number of stride-2 levels).")
flags.DEFINE_integer("ngf", D.ngf, "Generator width.")
flags.DEFINE_integer("ndf", D.ndf, "Discriminator width.")
flags.DEFINE_string("d_arch", D.d_arch, "PatchGAN layers: pix2pix70 | paper65 | e.g. '4s2,4s2,4s2,4s1,4s1'.")
flags.DEFINE_string("norm", D.norm, "batch | instance.")
flags.DEFINE_string("upsample", D.upsample, "Decoder upsampling: transpose (pix2pix) | resize (nearest + 3x3 conv).")
flags.DEFINE_bool("input_skip", D.input_skip,
                  "Generator: concatenate the input to the last decoder features, then a 3x3 conv (not in the paper).")
flags.DEFINE_string("conv_impl", D.conv_impl,
                    "Upsampling conv formulation: auto (fast on CPU, xla elsewhere) | fast | xla. Same function.")
flags.DEFINE_string("compute_dtype", D.compute_dtype,
                    "float32 | bfloat16 (mixed precision: params, Adam state, losses, BN stats stay float32).")
# Loss.
flags.DEFINE_string("weight_mode", D.weight_mode, "Where the IR weight map is used: none | d | g | dg.")
flags.DEFINE_string("weight_pooling", D.weight_pooling, "IR weight map pooling: avg | max | none.")
flags.DEFINE_string("weight_scale", D.weight_scale, "raw | mean1 (each weight map divided by its mean).")
flags.DEFINE_float("gamma", D.gamma, "Weight of the IR adversarial loss (Eq. 6).")
flags.DEFINE_float("lam", D.lam, "lambda: weight of the visible adversarial loss (Eq. 6).")
flags.DEFINE_float("ssim_weight", D.ssim_weight, "Weight of L_ssim in Eq. 6 (paper: 1).")
flags.DEFINE_float("mse_weight", D.mse_weight, "Weight of L_mse in Eq. 6 (paper: 1).")
flags.DEFINE_string("init", D.init, "flax (LeCun normal) | pix2pix (N(0, 0.02) convs, N(1, 0.02) norm scales).")
flags.DEFINE_float("learning_rate", D.learning_rate, "Adam learning rate (all networks).")
flags.DEFINE_string("lr_schedule", D.lr_schedule,
                    "constant | linear (constant, then to 0 over the second half; pix2pix) | cosine.")
flags.DEFINE_float("adam_b1", D.adam_b1, "Adam beta1.")
flags.DEFINE_float("adam_b2", D.adam_b2, "Adam beta2.")
# Data.
flags.DEFINE_string("data_dir", D.data_dir, "Pair folder DIR/{ir,vis}, or 'synthetic'.")
flags.DEFINE_string("train_split", D.train_split, "File of stems to train on (default: all pairs).")
flags.DEFINE_string("crop_size", "x".join(map(str, D.crop_size)), "Training crop HxW.")
flags.DEFINE_integer("batch_size", D.batch_size, "Global batch size.")
flags.DEFINE_string("synthetic_size", "x".join(map(str, D.synthetic_size)), "Synthetic image HxW.")
flags.DEFINE_integer("synthetic_pairs", D.synthetic_pairs, "Number of synthetic pairs.")
# Loop.
flags.DEFINE_integer("num_steps", D.num_steps, "Total training steps.")
flags.DEFINE_integer("seed", D.seed, "Seed of initialisation and data order.")
flags.DEFINE_integer("log_every", D.log_every, "Steps between metrics.jsonl lines.")
flags.DEFINE_integer("checkpoint_every", D.checkpoint_every, "Steps between checkpoints.")
flags.DEFINE_integer("sample_every", D.sample_every, "Steps between sample grids (PNG).")
flags.DEFINE_integer("keep_checkpoints", D.keep_checkpoints, "Checkpoints kept in the workdir.")
flags.DEFINE_integer("eval_every", D.eval_every,
                     "Steps between validation runs (0 = none); the best is exported to WORKDIR/best.msgpack.")
flags.DEFINE_string("eval_split", D.eval_split, "File of validation stems in --data_dir (e.g. splits/roadscene_val.txt).")
flags.DEFINE_string("parallel", D.parallel, "none | pmap (data-parallel over all devices).")
flags.DEFINE_integer("per_device_batch_size", D.per_device_batch_size,
                     "pmap: images per device; global batch = this x device count (0: batch_size/devices).")
# Multi-host (see docs/parallel.md); also picked up from the platform's environment.
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")


def config_from_flags() -> Config:
    kw = {f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)}
    kw["crop_size"] = parse_hw(FLAGS.crop_size, "crop_size")
    kw["synthetic_size"] = parse_hw(FLAGS.synthetic_size, "synthetic_size")
    return Config(**kw)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the trainer saves a checkpoint, as on Ctrl-C


def main(argv):
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # cluster schedulers and `kill` stop cleanly
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    from patchfuse_jax import parallel, trainer
    from patchfuse_jax.checkpoint import CheckpointError
    from patchfuse_jax.data import DataError
    from patchfuse_jax.io import ImageError

    try:
        cfg = config_from_flags()
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        trainer.train_and_evaluate(cfg, FLAGS.workdir)
    except (ConfigError, DataError, ImageError, CheckpointError, trainer.NonFiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
