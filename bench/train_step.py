"""Benchmark of the one-program training step; prints one JSON object per config.

    python bench/train_step.py                      # demo and paper configs, one device
    python bench/train_step.py --config=paper --steps=10
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python bench/train_step.py --parallel=pmap

Configs: ``demo`` = configs/demo.flags; ``paper`` = configs/roadscene.flags' model (ngf=64,
num_downs=8, 65x65 patches, 256x512 crops, batch 1) on synthetic data. Reports compile time
and median ms per step after warm-up (each step waited for), steps/s and images/s (global and
per device).
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from patchfuse_jax.train import runtime  # noqa: E402

if __name__ == "__main__":
    runtime.use_huge_pages()  # as train.py: the step is timed as training runs it

import jax  # noqa: E402
import numpy as np  # noqa: E402

import train  # noqa: E402  (flag definitions: configs are read exactly as train.py reads them)
from patchfuse_jax.train import data  # noqa: E402
from patchfuse_jax.train.parallel import Parallel  # noqa: E402
from patchfuse_jax.train.state import create_train_state, param_count  # noqa: E402

CONFIGS = {
    "demo": ["--flagfile=configs/demo.flags"],
    "paper": [
        "--flagfile=configs/roadscene.flags",
        "--data_dir=synthetic",
        "--synthetic_size=256x512",
        "--train_split=",
    ],
}


def load_config(name, extra):
    train.FLAGS.unparse_flags()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        train.FLAGS(["bench", "--workdir=unused", *CONFIGS[name], *extra])
        return train.config_from_flags()
    finally:
        os.chdir(cwd)


def bench(name, args):
    extra = [f"--parallel={args.parallel}", *args.flags]
    if args.per_device_batch_size:
        extra.append(f"--per_device_batch_size={args.per_device_batch_size}")
    cfg = load_config(name, extra)
    par = Parallel(cfg)
    t0 = time.perf_counter()
    host = jax.device_get(create_train_state(cfg, par.axis_name))
    init_s = time.perf_counter() - t0
    state = par.put_state(host)
    src = data.make_source(cfg.data_dir, synthetic_hw=cfg.synthetic_size, synthetic_pairs=8)
    batches = [
        par.put_batch(
            data.sample_batch(
                src,
                seed=0,
                step=s,
                batch_size=par.global_batch,
                crop_hw=cfg.crop_size,
                start=par.slice[0],
                stop=par.slice[1],
            )
        )
        for s in range(2)
    ]
    step = par.compile_step(cfg)
    t0 = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile() if not par.pmap else None
    if compiled is None:  # pmap compiles on first call
        state, m = step(state, batches[0])
        jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    fn = compiled or step
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        state, m = fn(state, batches[i % 2])
        jax.block_until_ready(m)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "config": name,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "parallel": cfg.parallel,
        "devices": par.n_global,
        "global_batch": par.global_batch,
        "crop": list(cfg.crop_size),
        "ngf": cfg.ngf,
        "num_downs": cfg.num_downs,
        "d_arch": cfg.d_arch,
        "params_g": param_count(host.g.params),
        "params_d": param_count(host.d_ir.params),
        "init_s": round(init_s, 3),
        "compile_s": round(compile_s, 3),
        "steps_timed": len(times),
        "median_ms": round(med * 1e3, 2),
        "min_ms": round(min(times) * 1e3, 2),
        "max_ms": round(max(times) * 1e3, 2),
        "steps_per_sec": round(1 / med, 3),
        "images_per_sec": round(par.global_batch / med, 3),
        "images_per_sec_per_device": round(par.global_batch / med / par.n_global, 3),
        "finite": bool(np.all(np.isfinite(np.asarray(par.metrics(m)["loss_g"])))),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["demo", "paper", "all"], default="all")
    p.add_argument("--parallel", choices=["none", "pmap"], default="none")
    p.add_argument("--per_device_batch_size", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--flags",
        action="append",
        default=[],
        help="extra train.py flags, e.g. --flags=--conv_impl=xla --flags=--d_arch=pix2pix70",
    )
    args = p.parse_args()
    for name in ["demo", "paper"] if args.config == "all" else [args.config]:
        print(json.dumps(bench(name, args)), flush=True)


if __name__ == "__main__":
    main()
