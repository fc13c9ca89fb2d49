"""Frames per second of fusion: ``fuse`` with its XLA and ONNX Runtime backends, and a bare ONNX file.

    python bench/fuse_fps.py                                   # shipped model, all cases below
    python bench/fuse_fps.py --color                           # RGB visible frames, colour output
    python bench/fuse_fps.py --sizes=512x640 --batches=1 --backends=onnxruntime --repeats=10

Prints one JSON line per (backend, size, batch): ``first_call_s`` (the first call at that shape
in this process: XLA's compilation, or ONNX Runtime's session creation (first case only) and
first run), ``ms_per_frame`` (median over ``--repeats`` warm calls / batch) and ``fps``.
Backends: ``xla`` and ``onnxruntime`` are ``fuse(params, ir, vis, backend=...)`` as a user calls
it (uint8 frames in, float32 out: conversion, padding, the generator, crop and with ``--color``
the BT.601 colour conversion both ways); ``onnx_file`` is ``run_onnx`` on an ``export_onnx``
file (float32 [0, 1] gray in and out, padding and crop: what a JAX-free deployment runs; gray
even with ``--color``). No image decoding. Needs ``pip install patchfuse_jax[onnx]`` for the
ONNX Runtime rows. Timings depend on what else runs on the machine: say so with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hw(s: str) -> tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def _frames(batch: int, hw, color: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    ir = rng.integers(0, 256, (batch, *hw), dtype=np.uint8)
    vis = rng.integers(0, 256, (batch, *hw, 3) if color else (batch, *hw), dtype=np.uint8)
    return ir, vis


def _time(call, repeats: int) -> tuple[float, list[float]]:
    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return first, times


def _random_paper_model():
    import jax
    import jax.numpy as jnp

    from patchfuse_jax.fusing.saved import make_fuse_params
    from patchfuse_jax.nn.arch import GeneratorArch

    arch = GeneratorArch()  # the paper's (Config's defaults)
    variables = jax.jit(lambda: arch.generator().init(jax.random.key(0), jnp.zeros((1, 256, 256, 2)), train=False))()
    return make_fuse_params(variables, arch.as_dict())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint",
        default="pretrained",
        help="workdir, exported file, 'pretrained', or 'random_paper': random weights of the paper's "
        "architecture (ngf 64, 8 levels, BatchNorm; timings do not depend on the weights' values)",
    )
    p.add_argument("--sizes", default="512x640,1080x1920", help="HxW list (rows x columns)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--backends", default="xla,onnxruntime,onnx_file")
    p.add_argument("--color", action="store_true", help="RGB visible frames, fuse(..., color=True)")
    p.add_argument("--bn", default="image", choices=("image", "running"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--ort_threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default, one per core)"
    )
    args = p.parse_args()

    from patchfuse_jax import fuse, load_checkpoint, pretrained
    from patchfuse_jax.fusing.api import fuse_with

    if args.checkpoint == "random_paper":
        params = _random_paper_model()
    else:
        params = pretrained() if args.checkpoint == "pretrained" else load_checkpoint(args.checkpoint)
    m = params.arch.multiple
    session, session_s, tmp = None, 0.0, None
    for backend in args.backends.split(","):
        if backend == "onnx_file":
            from patchfuse_jax.fusing.onnx import export_onnx, onnx_session

            tmp = tempfile.TemporaryDirectory()
            path = os.path.join(tmp.name, "model.onnx")
            export_onnx(params, path, bn=args.bn)
            t = time.perf_counter()
            session = onnx_session(path, threads=args.ort_threads)
            session_s = time.perf_counter() - t
        elif backend == "onnxruntime":
            from patchfuse_jax.fusing.onnx import generator_session

            t = time.perf_counter()
            generator = generator_session(params, args.bn, threads=args.ort_threads)  # fuse's, at threads=0
            session_s = time.perf_counter() - t
        elif backend != "xla":
            sys.exit(f"error: --backends: unknown backend {backend!r} (xla, onnxruntime, onnx_file)")
        for size in args.sizes.split(","):
            hw = _hw(size)
            for batch in (int(b) for b in args.batches.split(",")):
                ir, vis = _frames(batch, hw, args.color)
                if backend == "onnx_file":
                    from patchfuse_jax.fusing.onnx import run_onnx

                    scale = np.float32(1 / 255)
                    vis_y = vis.mean(-1).astype(np.uint8) if args.color else vis
                    call = lambda: run_onnx(session, ir * scale, vis_y * scale, m)  # noqa: E731
                elif backend == "onnxruntime":  # fuse(..., backend="onnxruntime") with --ort_threads
                    call = lambda: fuse_with(generator, params, ir, vis, color=args.color)  # noqa: E731
                else:
                    call = lambda: fuse(params, ir, vis, bn=args.bn, color=args.color)  # noqa: E731
                first, times = _time(call, args.repeats)
                ms = 1e3 * statistics.median(times) / batch
                print(
                    json.dumps(
                        {
                            "backend": backend,
                            "checkpoint": args.checkpoint,
                            "step": params.step,
                            "size": f"{hw[0]}x{hw[1]}",
                            "batch": batch,
                            "bn": args.bn,
                            "color": args.color and backend != "onnx_file",
                            "first_call_s": round(first + session_s, 3),
                            "ms_per_frame": round(ms, 1),
                            "fps": round(1e3 / ms, 2),
                            "ms_per_frame_min": round(1e3 * min(times) / batch, 1),
                            "repeats": args.repeats,
                            "ort_threads": args.ort_threads if backend != "xla" else None,
                            "cpus": os.cpu_count(),
                            "load_avg_1min": round(os.getloadavg()[0], 2),
                        }
                    ),
                    flush=True,
                )
                session_s = 0.0  # counted once, in the backend's first row
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
