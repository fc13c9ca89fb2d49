"""Benchmark: patchfuse_jax against an equivalent PyTorch implementation on the same CPU.

    pip install -e ".[bench]"        # adds torch (never imported by the library itself)
    python bench/compare_torch.py                         # every workload
    python bench/compare_torch.py --only=demo,eval_g_256x512 --iters=5 --warmup=2
    python bench/compare_torch.py --list

Prints one JSON line per workload, then a summary line. Times are medians (ms) over ``--iters``
timed iterations after ``--warmup`` untimed ones; the two implementations run alternately
(torch, ours, torch, ours, ...) so that machine noise hits both alike. ``ratio`` is
ours / torch (below 1: ours is faster). Our compile time is reported separately
(``ours_compile_s``) and is not in ``ours_ms``.

Workloads:

* ``train_*``: one full training step (``patchfuse_jax.train.step.train_step``, compiled as train.py
  compiles it: ``Parallel.compile_step``, state donated) vs ``torch_nets.TorchTrainer.step``
  (eager PyTorch, the same networks, losses, update order and Adam settings). Paper model:
  num_downs=8, ngf=ndf=64, batch 1; ``_ngf16``: ngf=ndf=16. ``demo`` is configs/demo.flags
  (num_downs=4, ngf=ndf=16, pix2pix70, 64x64 crops, batch 4).
* ``eval_g_256x512``: generator inference on one 256x512 pair with the paper model: ours as
  ``patchfuse_jax.fuse`` (numpy in/out, as a user calls it) and as the raw jitted
  ``Generator.apply(train=False)`` (compiled with the same ``inference_compiler_options``);
  torch as ``model.eval()`` under ``torch.inference_mode()``.
  ``ratio`` uses the raw forward, ``ratio_fuse`` uses ``fuse`` (``bn="running"``, as torch's eval
  forward). Also timed, each as a ratio to the same torch forward: ``fuse_image`` (``bn="image"``,
  fuse's default: every image's own statistics) and, with the ``[onnx]`` extra installed,
  ``fuse_running_ort`` / ``fuse_image_ort`` (``backend="onnxruntime"``);
  ``image_vs_running_{xla,ort}`` is the per-image mode's cost relative to running statistics.
* ``check``: copies Flax weights into the torch networks (small model, odd image size) and
  reports the largest differences of G and D outputs and of the first step's losses, to show
  both sides compute the same thing. Not timed.

Parameter counts of G and D are asserted equal on both sides for every workload.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from patchfuse_jax.train import runtime  # noqa: E402

if __name__ == "__main__":
    runtime.use_huge_pages()  # as train.py; PyTorch's allocations (glibc malloc too) get it as well

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from patchfuse_jax.fusing.api import fuse
from patchfuse_jax.fusing.options import resolve_backend  # noqa: E402
from patchfuse_jax.fusing.saved import make_fuse_params  # noqa: E402
from patchfuse_jax.nn.convs import inference_compiler_options  # noqa: E402
from patchfuse_jax.train.config import Config  # noqa: E402
from patchfuse_jax.train.parallel import Parallel  # noqa: E402
from patchfuse_jax.train.state import create_train_state, param_count  # noqa: E402
from patchfuse_jax.train.step import train_step  # noqa: E402

torch = torch_nets = None  # imported in main(), after OMP_WAIT_POLICY is settled

PAPER = dict(num_downs=8, ngf=64, ndf=64, batch_size=1)
WORKLOADS = {
    "check": dict(kind="check"),
    "train_256x256_pix2pix70": dict(kind="train", cfg=dict(PAPER, crop_size=(256, 256), d_arch="pix2pix70")),
    "train_256x256_paper65": dict(kind="train", cfg=dict(PAPER, crop_size=(256, 256), d_arch="paper65")),
    "train_256x512_pix2pix70": dict(kind="train", cfg=dict(PAPER, crop_size=(256, 512), d_arch="pix2pix70")),
    "train_256x512_paper65": dict(kind="train", cfg=dict(PAPER, crop_size=(256, 512), d_arch="paper65")),
    "eval_g_256x512": dict(kind="eval", cfg=dict(PAPER, crop_size=(256, 512), d_arch="paper65")),
    "demo": dict(kind="train", flagfile="configs/demo.flags"),
    "train_256x512_ngf16": dict(
        kind="train", cfg=dict(num_downs=8, ngf=16, ndf=16, batch_size=1, crop_size=(256, 512), d_arch="paper65")
    ),
}


# ------------------------------------------------------------------------------- configs


def _hw(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def config_from_flagfile(path: str) -> Config:
    """The Config fields set in an absl flagfile (other flags, e.g. --num_steps, are kept too
    when they are Config fields; flags that are not are ignored)."""
    default = Config()
    kw = {}
    with open(os.path.join(REPO, path)) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line.startswith("--") or "=" not in line:
                continue
            key, val = line[2:].split("=", 1)
            if not hasattr(default, key):
                continue
            cur = getattr(default, key)
            kw[key] = _hw(val) if isinstance(cur, tuple) else type(cur)(val)
    return Config(**kw)


OVERRIDES: dict = {}  # --set KEY=VALUE, applied to every workload's Config


def parse_override(text: str) -> tuple[str, object]:
    key, sep, val = text.partition("=")
    default = Config()
    if not sep or not hasattr(default, key):
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected FIELD=VALUE with a Config field")
    cur = getattr(default, key)
    return key, (_hw(val) if isinstance(cur, tuple) else type(cur)(val))


def workload_config(spec: dict) -> Config:
    cfg = config_from_flagfile(spec["flagfile"]) if "flagfile" in spec else dataclasses.replace(Config(), **spec["cfg"])
    return dataclasses.replace(cfg, **OVERRIDES)


def torch_trainer(cfg: Config):
    if cfg.norm != "batch" or getattr(cfg, "upsample", "transpose") != "transpose":
        raise SystemExit("compare_torch.py: the torch twin implements norm=batch, upsample=transpose")
    if cfg.weight_pooling != "avg" or cfg.weight_scale != "raw":
        raise SystemExit("compare_torch.py: the torch twin implements weight_pooling=avg, weight_scale=raw")
    return torch_nets.TorchTrainer(
        num_downs=cfg.num_downs,
        ngf=cfg.ngf,
        ndf=cfg.ndf,
        d_layers=cfg.d_layers,
        learning_rate=cfg.learning_rate,
        b1=cfg.adam_b1,
        b2=cfg.adam_b2,
        weight_mode=cfg.weight_mode,
        gamma=cfg.gamma,
        lam=cfg.lam,
    )


def check_param_counts(name: str, state, tt) -> tuple[int, int]:
    pg, pd = param_count(state.g.params), param_count(state.d_ir.params)
    tg, td = torch_nets.param_count(tt.g), torch_nets.param_count(tt.d_ir)
    assert (pg, pd) == (tg, td), f"{name}: parameter counts differ: ours G={pg} D={pd}, torch G={tg} D={td}"
    return pg, pd


def random_pair(batch: int, hw: tuple[int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    ir = rng.random((batch, *hw, 1), dtype=np.float32)
    vis = rng.random((batch, *hw, 1), dtype=np.float32)
    return ir, vis


def nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def interleaved(fns: dict, warmup: int, iters: int) -> dict[str, list[float]]:
    """Runs each ``fns`` entry once per round, in order, ``warmup + iters`` rounds; returns the
    timed seconds of the last ``iters`` rounds per entry."""
    times = {k: [] for k in fns}
    for i in range(warmup + iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            if i >= warmup:
                times[k].append(dt)
    return times


def ms(ts: list[float]) -> float:
    return round(statistics.median(ts) * 1e3, 2)


def stats(prefix: str, ts: list[float]) -> dict:
    return {
        f"{prefix}_ms": ms(ts),
        f"{prefix}_min_ms": round(min(ts) * 1e3, 2),
        f"{prefix}_max_ms": round(max(ts) * 1e3, 2),
    }


def describe(cfg: Config) -> dict:
    return {
        "crop": list(cfg.crop_size),
        "batch": cfg.batch_size,
        "num_downs": cfg.num_downs,
        "ngf": cfg.ngf,
        "ndf": cfg.ndf,
        "d_arch": cfg.d_arch,
        "weight_mode": cfg.weight_mode,
        "conv_impl": cfg.conv_impl,
    }


# ----------------------------------------------------------------------------- workloads


def setup(name: str, spec: dict):
    """Our config and fresh state, and the torch trainer of the same networks (counts checked)."""
    cfg = workload_config(spec)
    state = create_train_state(cfg)
    torch.manual_seed(cfg.seed)
    tt = torch_trainer(cfg)
    pg, pd = check_param_counts(name, state, tt)
    return cfg, state, tt, pg, pd


def bench_train(name: str, spec: dict, args) -> dict:
    cfg, state, tt, pg, pd = setup(name, spec)

    ir, vis = random_pair(cfg.batch_size, cfg.crop_size)
    batch = {"ir": jnp.asarray(ir), "vis": jnp.asarray(vis)}
    t_ir, t_vis = nchw(ir), nchw(vis)

    step = Parallel(cfg).compile_step(cfg)  # as train.py compiles it
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0

    last = {}

    def ours():
        nonlocal state
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        last["ours"] = m

    def theirs():
        last["torch"] = tt.step(t_ir, t_vis)

    times = interleaved({"torch": theirs, "ours": ours}, args.warmup, args.iters)
    finite = bool(np.isfinite(float(last["ours"]["loss_g"]))) and bool(torch.isfinite(last["torch"]["loss_g"]))
    return {
        "workload": name,
        "kind": "train_step",
        **describe(cfg),
        "params_g": pg,
        "params_d": pd,
        "ours_ms": ms(times["ours"]),
        "torch_ms": ms(times["torch"]),
        "ratio": round(ms(times["ours"]) / ms(times["torch"]), 3),
        "ours_compile_s": round(compile_s, 2),
        **stats("ours", times["ours"]),
        **stats("torch", times["torch"]),
        "iters": args.iters,
        "warmup": args.warmup,
        "finite": finite,
    }


def bench_eval(name: str, spec: dict, args) -> dict:
    cfg, state, tt, pg, pd = setup(name, spec)
    variables = {"params": state.g.params, "batch_stats": state.g.batch_stats}
    params = make_fuse_params(variables, cfg.to_dict())

    ir, vis = random_pair(1, cfg.crop_size)
    ir2, vis2 = ir[0, ..., 0], vis[0, ..., 0]  # one (H, W) pair, as fuse takes it
    x = jnp.asarray(np.concatenate([ir, vis], -1))  # (1, H, W, 2)
    x_t = nchw(np.concatenate([ir, vis], -1))

    t0 = time.perf_counter()
    fuse(params, ir2, vis2, bn="running")  # eval-mode BatchNorm, as the torch twin
    fuse_first_s = time.perf_counter() - t0

    apply_fn = state.g.apply_fn
    fwd = jax.jit(lambda v, x: apply_fn(v, x, train=False))
    t0 = time.perf_counter()
    fwd_c = fwd.lower(variables, x).compile(compiler_options=inference_compiler_options(cfg.conv_impl))
    compile_s = time.perf_counter() - t0

    g = tt.g.eval()

    def theirs():
        with torch.inference_mode():
            g(x_t).numpy()

    fns = {
        "torch": theirs,
        "ours": lambda: jax.block_until_ready(fwd_c(variables, x)),
        "ours_fuse": lambda: fuse(params, ir2, vis2, bn="running"),
        # fuse's default BatchNorm mode: each image's own statistics (no torch twin: torch's eval
        # forward uses running statistics, the speed anchor either way)
        "ours_fuse_image": lambda: fuse(params, ir2, vis2, bn="image"),
    }
    if resolve_backend("auto") == "onnxruntime":  # installed: the same calls run by ONNX Runtime
        for bn in ("running", "image"):
            fuse(params, ir2, vis2, bn=bn, backend="onnxruntime")  # builds the session
            fns[f"ours_fuse_{bn}_ort"] = functools.partial(fuse, params, ir2, vis2, bn, backend="onnxruntime")
    times = interleaved(fns, args.warmup, args.iters)
    extra = {}
    for key in [k for k in fns if k.startswith("ours_fuse_")]:
        extra[f"{key}_ms"] = ms(times[key])
        extra[f"ratio_{key[5:]}"] = round(ms(times[key]) / ms(times["torch"]), 3)
    if "ours_fuse_image_ort" in fns:
        extra["image_vs_running_ort"] = round(ms(times["ours_fuse_image_ort"]) / ms(times["ours_fuse_running_ort"]), 3)
    extra["image_vs_running_xla"] = round(ms(times["ours_fuse_image"]) / ms(times["ours_fuse"]), 3)
    return {
        "workload": name,
        "kind": "g_eval",
        **describe(cfg),
        "params_g": pg,
        "ours_ms": ms(times["ours"]),
        "ours_fuse_ms": ms(times["ours_fuse"]),
        "torch_ms": ms(times["torch"]),
        "ratio": round(ms(times["ours"]) / ms(times["torch"]), 3),
        "ratio_fuse": round(ms(times["ours_fuse"]) / ms(times["torch"]), 3),
        "ours_compile_s": round(compile_s, 2),
        "ours_fuse_first_call_s": round(fuse_first_s, 2),
        **extra,
        **stats("ours", times["ours"]),
        **stats("ours_fuse", times["ours_fuse"]),
        **stats("torch", times["torch"]),
        "iters": args.iters,
        "warmup": args.warmup,
    }


def bench_check(name: str, spec: dict, args) -> dict:
    """Same weights on both sides -> same outputs (small model, size not a multiple of 16)."""
    out = {"workload": name, "kind": "check"}
    results = {}
    for d_arch in ("pix2pix70", "paper65"):
        cfg = dataclasses.replace(
            Config(num_downs=4, ngf=8, ndf=8, d_arch=d_arch, crop_size=(72, 88), batch_size=2), **OVERRIDES
        )
        state = create_train_state(cfg)
        tt = torch_trainer(cfg)
        check_param_counts(name, state, tt)
        try:
            torch_nets.load_flax_generator(tt.g, jax.device_get(state.g.variables()))
            torch_nets.load_flax_discriminator(tt.d_ir, jax.device_get(state.d_ir.variables()))
            torch_nets.load_flax_discriminator(tt.d_vis, jax.device_get(state.d_vis.variables()))
        except (KeyError, ValueError, RuntimeError) as e:  # the Flax modules' layout changed: nothing to compare
            out.update(status="skipped", reason=f"cannot map Flax variables to torch: {e}")
            return out
        ir, vis = random_pair(cfg.batch_size, cfg.crop_size, seed=1)
        x = np.concatenate([ir, vis], -1)
        r = {}
        for train in (False, True):
            tt.g.train(train), tt.d_ir.train(train)
            with torch.no_grad():
                g_t = tt.g(nchw(x)).numpy().transpose(0, 2, 3, 1)
                d_t = tt.d_ir(nchw(ir)).numpy()
            g_j, _ = jax.jit(functools.partial(state.g.apply_fn, train=train, mutable=["batch_stats"]))(
                state.g.variables(), x
            )
            d_j, _ = jax.jit(functools.partial(state.d_ir.apply_fn, train=train, mutable=["batch_stats"]))(
                state.d_ir.variables(), ir
            )
            mode = "train" if train else "eval"
            r[f"g_{mode}_max_abs_diff"] = float(np.max(np.abs(np.asarray(g_j) - g_t)))
            r[f"d_{mode}_max_abs_diff"] = float(np.max(np.abs(np.asarray(d_j) - d_t)))
        for m in (tt.g, tt.d_ir, tt.d_vis):
            m.train()
        batch = {"ir": jnp.asarray(ir), "vis": jnp.asarray(vis)}
        _, m_j = jax.jit(functools.partial(train_step, cfg=cfg))(state, batch)
        m_t = tt.step(nchw(ir), nchw(vis))
        for k in ("loss_d_ir", "loss_d_vis", "loss_g"):
            r[f"{k}_rel_diff"] = float(abs(float(m_j[k]) - float(m_t[k])) / abs(float(m_j[k])))
        results[d_arch] = {k: float(f"{v:.2e}") for k, v in r.items()}
    worst = max(v for r in results.values() for v in r.values())
    out.update(results, max_diff=worst, status="ok" if worst < 1e-3 else "MISMATCH")
    return out


RUNNERS = {"train": bench_train, "eval": bench_eval, "check": bench_check}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per side first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: os.cpu_count())")
    p.add_argument(
        "--omp_wait_policy",
        choices=["passive", "default"],
        default="passive",
        help="torch's OpenMP threads: passive (sleep when idle; the default here) or "
        "default (libgomp's spin-then-sleep); ignored when OMP_WAIT_POLICY is set",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=parse_override,
        metavar="FIELD=VALUE",
        help="override a Config field for our side in every workload, e.g. --set conv_impl=xla (repeatable)",
    )
    p.add_argument("--list", action="store_true", help="print the workload names and exit")
    args = p.parse_args()
    OVERRIDES.update(args.set)
    if args.list:
        print("\n".join(WORKLOADS))
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")
    # On a busy machine libgomp's spin-waiting makes torch's multi-threaded ops several times
    # slower whenever a worker thread is preempted (the 'demo' step here: ~1 s instead of ~0.2 s
    # at load 4.7 on 2 cores); passive waiting avoids that at a small wake-up cost per op.
    if "OMP_WAIT_POLICY" not in os.environ and args.omp_wait_policy == "passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    global torch, torch_nets
    try:
        import torch
    except ImportError:
        sys.exit('compare_torch.py needs PyTorch: pip install -e ".[bench]"')
    import torch_nets

    torch.set_num_threads(args.threads or os.cpu_count() or 1)

    t_start = time.perf_counter()
    ratios, failed = {}, []
    for name in names:
        spec = WORKLOADS[name]
        row = RUNNERS[spec["kind"]](name, spec, args)
        print(json.dumps(row), flush=True)
        if "ratio" in row:
            ratios[name] = row["ratio"]
        if row.get("status") == "MISMATCH":
            failed.append(name)
    summary = {
        "summary": True,
        "ratios": ratios,
        "geomean_ratio": (
            round(math.exp(statistics.mean(math.log(r) for r in ratios.values())), 3) if ratios else None
        ),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "iters": args.iters,
        "warmup": args.warmup,
        "overrides": {k: str(v) for k, v in OVERRIDES.items()},
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    if failed:
        summary["check_failed"] = failed
    print(json.dumps(summary), flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
