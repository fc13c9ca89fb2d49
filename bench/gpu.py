"""One prepared GPU benchmark (a lent H100/H200): prints one JSON line per measurement, then a
summary line. Run it through ``bench/gpu.sh`` (see there for the device setup).

    python bench/gpu.py                      # the GPU run (about 5-7 minutes on an H200)
    python bench/gpu.py --cpu_smoke          # the same code path at tiny sizes (~40 s of CPU time)
    python bench/gpu.py --out=gpu.jsonl      # also write the lines to a file

Measurements, in order (``"measurement"`` names the kind, ``"name"`` the instance):

* ``env``: JAX/jaxlib versions, backend, device kind and count.
* ``matmul``: the card's measured matmul rate (TFLOP/s) of a big jitted ``jnp.dot``: bfloat16,
  float32 at default precision (what our float32 step uses; TF32 on NVIDIA) and float32 at
  ``HIGHEST`` precision.
* ``train_step``: the paper config (configs/roadscene.flags' model: 256x512 crops, ngf=64,
  num_downs=8, ndf=64, paper65 = 65x65 patches, BatchNorm) on synthetic data, built exactly as
  ``bench/train_step.py`` builds it, at batch 1, 8 and 32 in float32 and bfloat16: compile time,
  median ms per step (each step waited for), the pipelined ms per step (steps queued, one wait),
  images/s, the step's FLOPs from XLA's cost analysis and the achieved rate as a % of the
  measured matmul rate of the same dtype.
* ``fuse``: ``patchfuse_jax.fuse`` images/s at 512x640 (a FLIR frame) with a paper-size generator
  (random-initialised), batch 1 and 16.
* ``input_pipeline``: ``data.Batches`` (the trainer's prefetching iterator) over RoadScene
  (``--data_dir``, ``--split``) at the step's crop size and batch 1/8/32: batches/s, and
  ``bottleneck`` = batches/s below the faster dtype's step rate at that batch (null when either
  is missing). Null with a ``reason`` when the data is not there.

A part that fails (e.g. out of memory at batch 32) prints its line with an ``"error"`` field and
the run goes on; a part that would start after ``--budget_s`` prints ``"skipped"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import train_step as bench_train_step  # noqa: E402  (bench/train_step.py: configs as train.py reads them)

from patchfuse_jax.fusing.api import fuse
from patchfuse_jax.fusing.saved import make_fuse_params  # noqa: E402
from patchfuse_jax.nn.arch import GeneratorArch  # noqa: E402
from patchfuse_jax.train import data  # noqa: E402
from patchfuse_jax.train.parallel import Parallel  # noqa: E402
from patchfuse_jax.train.state import CPU_FAST_COMPILE, create_train_state, param_count  # noqa: E402

# Sizes of the two modes. ``model`` flags go on top of bench/train_step.py's "paper" config.
GPU = dict(
    model=[],
    crop=(256, 512),
    batches=(1, 8, 32),
    dtypes=("float32", "bfloat16"),
    warmup=2,
    steps=10,
    fuse_hw=(512, 640),
    fuse_batches=(1, 16),
    fuse_iters=10,
    matmul_n=8192,
    matmul_iters=20,
    pipeline_batches=50,
    pipeline_max_s=4.0,
    budget_s=400,
)
# --cpu_smoke: conv_impl=xla is what "auto" picks on a GPU (so the smoke runs the GPU's program
# formulation) and it compiles faster on CPU than the CPU's "fast" form.
SMOKE = dict(
    model=["--crop_size=64x128", "--synthetic_size=64x128", "--ngf=8", "--num_downs=3", "--ndf=8", "--conv_impl=xla"],
    crop=(64, 128),
    batches=(1, 2),
    dtypes=("float32", "bfloat16"),
    warmup=1,
    steps=2,
    fuse_hw=(64, 80),
    fuse_batches=(1, 2),
    fuse_iters=2,
    matmul_n=256,
    matmul_iters=3,
    pipeline_batches=5,
    pipeline_max_s=1.0,
    budget_s=150,
    fast_cpu_compile=True,
)


def _finite(x):
    """JSON-safe: non-finite floats become null (json.dumps would write NaN)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


class Runner:
    """Runs measurements in order: prints each as a JSON line, catches failures, keeps time."""

    def __init__(self, out: str | None, budget_s: float):
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.out = open(out, "w") if out else None
        self.lines: list[dict] = []

    def emit(self, line: dict) -> dict:
        line = _finite(line)
        text = json.dumps(line)
        print(text, flush=True)
        if self.out:
            self.out.write(text + "\n")
            self.out.flush()
        self.lines.append(line)
        return line

    def run(self, kind: str, name: str, fn, **meta) -> dict:
        line = {"measurement": kind, "name": name, **meta}
        elapsed = time.perf_counter() - self.t0
        if elapsed > self.budget_s:
            return self.emit({**line, "skipped": f"time budget: {elapsed:.0f} s > --budget_s={self.budget_s:g}"})
        t = time.perf_counter()
        try:
            line.update(fn())
        except Exception as e:  # noqa: BLE001 - one failing part (OOM, ...) must not stop the run
            line["error"] = _error(e)
            line["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
        gc.collect()
        line["wall_s"] = round(time.perf_counter() - t, 3)
        return self.emit(line)

    def close(self):
        if self.out:
            self.out.close()


# ----------------------------------------------------------------------------- measurements


def env_info() -> dict:
    import jaxlib

    dev = jax.devices()[0]
    return {
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def matmul_rate(n: int, dtype: str, precision, iters: int) -> dict:
    """TFLOP/s of an ``n x n`` @ ``n x n`` jitted dot: ``iters`` calls queued, one wait, best of 3."""
    dt = jnp.dtype(dtype)
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dt)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dt)
    f = jax.jit(lambda x, y: jnp.dot(x, y, precision=precision))
    for _ in range(2):
        jax.block_until_ready(f(a, b))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(iters):
            out = f(a, b)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / iters)
    return {
        "n": n,
        "dtype": dtype,
        "precision": str(precision or "DEFAULT"),
        "iters": iters,
        "ms": round(best * 1e3, 4),
        "tflops": 2 * n**3 / best / 1e12,
    }


def step_flops(compiled):
    """FLOPs of one call from XLA's cost analysis (a dict, or a list of dicts per program in
    some JAX versions); None when the backend does not provide it."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(ca, (list, tuple)):
        vals = [d.get("flops") for d in ca if isinstance(d, dict) and d.get("flops") is not None]
        return float(sum(vals)) if vals else None
    if isinstance(ca, dict) and ca.get("flops") is not None:
        return float(ca["flops"])
    return None


def _temp_mb(compiled):
    try:
        return round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)
    except Exception:  # noqa: BLE001
        return None


_HOST_STATES: dict = {}  # initial host state per config (batch size aside): one init per dtype


def _host_state(cfg):
    """``create_train_state`` as bench/train_step.py calls it, once per model/dtype: the state does
    not depend on the batch size (a host copy; each measurement puts its own on the device)."""
    key = dataclasses.replace(cfg, batch_size=1)
    if key not in _HOST_STATES:
        while len(_HOST_STATES) >= 2:
            _HOST_STATES.pop(next(iter(_HOST_STATES)))
        _HOST_STATES[key] = jax.device_get(create_train_state(cfg))
    return _HOST_STATES[key]


def train_step_rate(mode: dict, batch: int, dtype: str, matmul_tflops=None) -> dict:
    """The paper config's jitted training step, state and step built as bench/train_step.py does.
    ``matmul_tflops``: the card's measured matmul rate in ``dtype`` (for ``pct_of_matmul_peak``)."""
    cfg = bench_train_step.load_config("paper", [f"--batch_size={batch}", f"--compute_dtype={dtype}", *mode["model"]])
    par = Parallel(cfg)
    host = _host_state(cfg)
    state = par.put_state(host)
    src = data.make_source(cfg.data_dir, synthetic_hw=cfg.synthetic_size, synthetic_pairs=8)
    batches = [
        par.put_batch(data.sample_batch(src, seed=0, step=s, batch_size=batch, crop_hw=cfg.crop_size)) for s in range(2)
    ]
    step = par.compile_step(cfg)
    # --cpu_smoke on CPU: XLA's backend optimisations off (as create_train_state's init), so the
    # tiny programs compile in seconds; same program, same code path otherwise.
    opts = CPU_FAST_COMPILE if mode.get("fast_cpu_compile") and jax.default_backend() == "cpu" else None
    t0 = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile(compiler_options=opts)
    compile_s = time.perf_counter() - t0
    flops = step_flops(compiled)
    times = []
    for i in range(mode["warmup"] + mode["steps"]):
        t = time.perf_counter()
        state, m = compiled(state, batches[i % 2])
        jax.block_until_ready(m)
        if i >= mode["warmup"]:
            times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(mode["steps"]):  # queued as the trainer queues them; one wait at the end
        state, m = compiled(state, batches[i % 2])
    jax.block_until_ready((state, m))
    pipelined = (time.perf_counter() - t) / mode["steps"]
    med = statistics.median(times)
    loss = float(np.asarray(m["loss_g"]))
    achieved = None if flops is None else flops / med / 1e12
    return {
        "crop": list(cfg.crop_size),
        "ngf": cfg.ngf,
        "num_downs": cfg.num_downs,
        "ndf": cfg.ndf,
        "d_arch": cfg.d_arch,
        "norm": cfg.norm,
        "params_g": param_count(host.g.params),
        "params_d": param_count(host.d_ir.params),
        "compile_s": round(compile_s, 3),
        "steps_timed": len(times),
        "ms_per_step": round(med * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "max_ms": round(max(times) * 1e3, 3),
        "pipelined_ms_per_step": round(pipelined * 1e3, 3),
        "steps_per_s": 1 / med,
        "images_per_s": batch / med,
        "pipelined_images_per_s": batch / pipelined,
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "matmul_tflops": matmul_tflops,
        "pct_of_matmul_peak": 100 * achieved / matmul_tflops if achieved and matmul_tflops else None,
        "temp_mb": _temp_mb(compiled),
        "loss_g_finite": math.isfinite(loss),
        "compiler_options": opts,
    }


def fuse_rate(mode: dict, batch: int) -> dict:
    """``patchfuse_jax.fuse`` on uint8 frames with a random-initialised paper-size generator."""
    cfg = bench_train_step.load_config("paper", mode["model"])
    variables = _host_state(cfg).g.variables()  # random init (seed 0), as training starts
    params = make_fuse_params(variables, cfg.to_dict())
    h, w = mode["fuse_hw"]
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (batch, h, w), dtype=np.uint8)
    vis = rng.integers(0, 256, (batch, h, w), dtype=np.uint8)
    t = time.perf_counter()
    out = fuse(params, ir, vis)  # compiles
    first_s = time.perf_counter() - t
    fuse(params, ir, vis)
    times = []
    for _ in range(mode["fuse_iters"]):
        t = time.perf_counter()
        out = fuse(params, ir, vis)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "hw": [h, w],
        "arch": GeneratorArch.from_config(cfg.to_dict()).as_dict(),
        "num_downs": cfg.num_downs,
        "params_g": param_count(variables["params"]),
        "first_call_s": round(first_s, 3),
        "iters": len(times),
        "ms_per_call": round(med * 1e3, 3),
        "images_per_s": batch / med,
        "out_shape": list(out.shape),
        "out_finite": bool(np.all(np.isfinite(out))),
    }


_SOURCES: dict = {}


def pipeline_rate(mode: dict, batch: int, data_dir: str, split: str, step_rate=None) -> dict:
    """Steady-state batches/s of ``data.Batches`` (prefetch thread, as the trainer uses it);
    ``bottleneck``: below ``step_rate`` (the fastest measured training step at this batch, steps/s)."""
    missing = {"batches_per_s": None, "step_rate_steps_per_s": step_rate, "bottleneck": None}
    if not os.path.isdir(data_dir):
        return {**missing, "reason": f"data dir {data_dir} not found"}
    if split and not os.path.isfile(split):
        return {**missing, "reason": f"split file {split} not found"}
    crop = mode["crop"]
    t = time.perf_counter()
    try:
        src = _SOURCES.get((data_dir, split))
        if src is None:
            src = data.make_source(data_dir, split or None)
            data.check_source(src, crop)  # decodes every pair once, as the trainer does before step 0
            _SOURCES[(data_dir, split)] = src
    except data.DataError as e:
        return {**missing, "reason": f"DataError: {e}"}
    load_s = time.perf_counter() - t  # 0 after the first batch size: the pairs stay decoded
    prefetch = 2
    with data.Batches(src, seed=0, start_step=0, batch_size=batch, crop_hw=crop, prefetch=prefetch) as it:
        for _ in range(prefetch + 1):  # drain what was prefetched during the set-up
            next(it)
        n, t = 0, time.perf_counter()
        while n < mode["pipeline_batches"] and (n < 3 or time.perf_counter() - t < mode["pipeline_max_s"]):
            _, b = next(it)
            n += 1
        dt = time.perf_counter() - t
    puts = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(jax.device_put(b))
        puts.append(time.perf_counter() - t)
    return {
        "data_dir": data_dir,
        "split": split,
        "pairs": len(src),
        "crop": list(crop),
        "load_s": round(load_s, 3),
        "batches_timed": n,
        "batches_per_s": n / dt,
        "images_per_s": n * batch / dt,
        "device_put_ms": round(statistics.median(puts) * 1e3, 3),
        "step_rate_steps_per_s": step_rate,
        "bottleneck": None if step_rate is None else n / dt < step_rate,
    }


# ----------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cpu_smoke",
        action="store_true",
        help="tiny sizes (64x128 crops, ngf=8, num_downs=3, ndf=8, batch 1 and 2) on any backend",
    )
    p.add_argument("--out", default="", help="also write the JSON lines to this file")
    p.add_argument(
        "--budget_s", type=float, default=None, help="start no measurement after this many seconds (GPU 400, smoke 150)"
    )
    p.add_argument("--data_dir", default=os.path.join(REPO, "..", "shared", "data", "roadscene"))
    p.add_argument("--split", default=os.path.join(REPO, "splits", "roadscene_train.txt"))
    p.add_argument(
        "--allow_cpu", action="store_true", help="run the full-size benchmark even without a GPU (very slow)"
    )
    args = p.parse_args(argv)
    mode = dict(SMOKE if args.cpu_smoke else GPU)
    runner = Runner(args.out or None, args.budget_s if args.budget_s is not None else mode["budget_s"])
    env = runner.run("env", "env", env_info, mode="cpu_smoke" if args.cpu_smoke else "gpu")
    if not args.cpu_smoke and jax.default_backend() != "gpu" and not args.allow_cpu:
        runner.emit(
            {
                "measurement": "summary",
                "summary": True,
                "error": f"backend is {jax.default_backend()!r}, not 'gpu': install the CUDA build "
                "(pip install -e '.[cuda]', or '.[cuda12]' for CUDA 12), or use --cpu_smoke",
            }
        )
        runner.close()
        return 2

    # Matmul rate of the card (the reference for the step's FLOP rate).
    peak = {}
    for label, dtype, prec in (
        ("bfloat16", "bfloat16", None),
        ("float32", "float32", None),
        ("float32_highest", "float32", jax.lax.Precision.HIGHEST),
    ):
        r = runner.run(
            "matmul",
            f"matmul/{label}",
            lambda d=dtype, q=prec: matmul_rate(mode["matmul_n"], d, q, mode["matmul_iters"]),
        )
        peak[label] = r.get("tflops")

    # Training step: paper config, batch x dtype.
    steps = {}
    for batch in mode["batches"]:
        for dtype in mode["dtypes"]:
            steps[(batch, dtype)] = runner.run(
                "train_step",
                f"train_step/{dtype}/b{batch}",
                lambda b=batch, d=dtype: train_step_rate(mode, b, d, peak.get(d)),
                batch=batch,
                dtype=dtype,
            )

    # Input pipeline vs the step rate.
    pipes = {}
    for batch in mode["batches"]:
        rates = [steps[(batch, d)].get("steps_per_s") for d in mode["dtypes"] if (batch, d) in steps]
        rate = max([x for x in rates if x], default=None)
        pipes[batch] = runner.run(
            "input_pipeline",
            f"input_pipeline/b{batch}",
            lambda b=batch, r=rate: pipeline_rate(mode, b, args.data_dir, args.split, r),
            batch=batch,
        )

    # fuse() at a FLIR frame size.
    fuses = {}
    for batch in mode["fuse_batches"]:
        fuses[batch] = runner.run("fuse", f"fuse/b{batch}", lambda b=batch: fuse_rate(mode, b), batch=batch)

    errors = [x["name"] for x in runner.lines if x.get("error")]
    skipped = [x["name"] for x in runner.lines if x.get("skipped")]
    paper = steps.get((mode["batches"][0], "float32"), {})
    runner.emit(
        {
            "measurement": "summary",
            "summary": True,
            "mode": env.get("mode"),
            "jax_version": env.get("jax_version"),
            "backend": env.get("backend"),
            "device_kind": env.get("device_kind"),
            "total_s": round(time.perf_counter() - runner.t0, 2),
            "compile_s_paper_step": paper.get("compile_s"),
            "matmul_tflops": peak,
            "train_step": [
                {
                    k: s.get(k)
                    for k in (
                        "batch",
                        "dtype",
                        "compile_s",
                        "ms_per_step",
                        "images_per_s",
                        "flops_per_step",
                        "achieved_tflops",
                        "pct_of_matmul_peak",
                        "error",
                        "skipped",
                    )
                }
                for s in steps.values()
            ],
            "fuse": [
                {k: f.get(k) for k in ("batch", "hw", "ms_per_call", "images_per_s", "error", "skipped")}
                for f in fuses.values()
            ],
            "input_pipeline": [
                {
                    k: q.get(k)
                    for k in (
                        "batch",
                        "batches_per_s",
                        "step_rate_steps_per_s",
                        "bottleneck",
                        "reason",
                        "error",
                        "skipped",
                    )
                }
                for q in pipes.values()
            ],
            "pipeline_is_bottleneck": (
                any(q.get("bottleneck") for q in pipes.values())
                if any(q.get("bottleneck") is not None for q in pipes.values())
                else None
            ),
            "errors": errors,
            "skipped": skipped,
        }
    )
    runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
