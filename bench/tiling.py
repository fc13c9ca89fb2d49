"""Tiled vs untiled ``fuse``: peak memory (RSS) and time for a huge pair, and the difference
between the two on a real image. Prints one JSON line per measurement.

    python bench/tiling.py                       # shipped model, 4000x3000 pair, tile 1024
    python bench/tiling.py --size=4000x3000 --tile=1024 --overlap=64

Each measurement runs in its own process, so that peak RSS (``ru_maxrss``) is that of one call.
The huge pair is a real RoadScene pair (FLIR_00006 when ../shared/data is present, else
synthetic) resized to ``--size`` with bilinear interpolation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "roadscene")
STEM = "FLIR_00006"


def _pair():
    from patchfuse_jax import io

    try:
        return (
            io.read_image(os.path.join(DATA, "ir", STEM + ".jpg")),
            io.read_image(os.path.join(DATA, "vis", STEM + ".jpg")),
            STEM,
        )
    except io.ImageError:
        from patchfuse_jax.train.synthetic import SyntheticPairs

        ir, vis = SyntheticPairs(1, (480, 640), 0).get(0)
        return (ir * 255).astype(np.uint8), (vis * 255).astype(np.uint8), "synthetic"


def _resize(img: np.ndarray, hw) -> np.ndarray:
    from PIL import Image  # imageio's dependency; bilinear, uint8 in and out

    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR))


def _rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def _child(args) -> None:
    from patchfuse_jax import fuse, pretrained

    ir, vis, name = _pair()
    if args.size:
        ir, vis = _resize(ir, args.size), _resize(vis, args.size)
    params = pretrained()
    tile = args.tile or None
    rss_inputs = _rss_gb()  # peak so far: libraries + the inputs
    t0 = time.perf_counter()
    out = fuse(params, ir, vis, color=vis.ndim == 3, tile=tile, overlap=args.overlap)
    secs = time.perf_counter() - t0
    if args.save:
        np.save(args.save, out)
    print(
        json.dumps(
            {
                "image": name,
                "size": list(ir.shape[:2]),
                "tile": tile,
                "overlap": args.overlap if tile else None,
                "seconds": round(secs, 2),
                "peak_rss_gb_before_fuse": rss_inputs,
                "peak_rss_gb": _rss_gb(),
            }
        )
    )


def _run_child(extra: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *extra], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="3000x4000", help="HxW of the huge pair (default 3000x4000)")
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--small_tile", type=int, default=256, help="tile for the real-size comparison")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.size = [int(v) for v in args.size.split("x")] if args.size else None
        _child(args)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "a.npy"), os.path.join(tmp, "b.npy")
        for size, tile in ((None, args.small_tile), (args.size, args.tile)):
            # A real image at its own size (small tiles), then the huge pair: untiled vs tiled.
            size_arg = f"--size={size or ''}"
            r0 = _run_child([size_arg, "--tile=0", f"--save={a}"])
            r1 = _run_child([size_arg, f"--tile={tile}", f"--overlap={args.overlap}", f"--save={b}"])
            d = np.abs(np.load(a) - np.load(b))
            print(
                json.dumps(
                    {
                        "untiled": r0,
                        "tiled": r1,
                        "max_abs_diff_to_untiled": round(float(d.max()), 4),
                        "mean_abs_diff_to_untiled": round(float(d.mean()), 5),
                        "max_abs_diff_8bit_levels": round(float(d.max()) * 255, 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
