"""Peak memory of ``patchfuse fuse`` on videos against the clip's length: streaming keeps it flat.

    python bench/video_memory.py                          # 640x512, 2 s and 10 s at 25 fps, color
    python bench/video_memory.py --seconds=1,4 --size=128x160

Writes a pair of synthetic IR/visible clips per length (moving smooth patterns, H.264 through
imageio-ffmpeg), fuses each pair end to end with the command line (``python -m patchfuse_jax fuse
--ir_video --vis_video --out --color``, shipped model) in a fresh process, and prints one JSON line
per length: frames, wall seconds, frames/s of the whole command (decoding, fusing, encoding, the
first call's compilation included) and the process's peak resident memory (``ru_maxrss``); then a
summary line with the peak's growth from the shortest to the longest clip. Timings depend on what
else runs on the machine: say so with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# Runs the CLI in this process and reports its peak RSS (KiB on Linux) on the last line.
CHILD = (
    "import json, resource, sys\n"
    "from patchfuse_jax.__main__ import main\n"
    "rc = main(sys.argv[1:])\n"
    "print(json.dumps({'rc': rc, 'peak_rss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n"
)


def write_clip(path: str, n: int, hw: tuple[int, int], fps: float, seed: int, rgb: bool) -> None:
    """``n`` frames of a smooth moving pattern (a warm blob for IR, textured colour for visible)."""
    import imageio_ffmpeg

    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6.28)
    gen = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, quality=7, macro_block_size=1)
    gen.send(None)
    for t in range(n):
        base = 128 + 80 * np.sin((xx + 3 * t) / 23.0 + phase) * np.cos(yy / 17.0)
        if rgb:
            f = np.stack([base, np.roll(base, 5, 1), 255 - base], -1)
        else:
            cx, cy = (w / 2 + 0.3 * w * np.sin(t / 40.0)), h / 2
            blob = 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.08 * w) ** 2))
            f = np.stack([0.5 * base + blob] * 3, -1)
        gen.send(np.ascontiguousarray(np.clip(f, 0, 255).astype(np.uint8)))
    gen.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="512x640", help="HxW (rows x columns); default a FLIR camera's 640x512")
    p.add_argument("--seconds", default="2,10", help="clip lengths in seconds")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--batch_size", type=int, default=8)
    args = p.parse_args()
    hw = tuple(int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sec in (float(s) for s in args.seconds.split(",")):
            n = int(round(sec * args.fps))
            ir, vis, out = (os.path.join(tmp, f"{k}_{sec:g}s.mp4") for k in ("ir", "vis", "fused"))
            write_clip(ir, n, hw, args.fps, 0, rgb=False)
            write_clip(vis, n, hw, args.fps, 1, rgb=True)
            argv = ["fuse", f"--ir_video={ir}", f"--vis_video={vis}", f"--out={out}", "--color", "--no-progress"]
            argv.append(f"--batch_size={args.batch_size}")
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
            wall = time.perf_counter() - t
            if r.returncode != 0:
                sys.exit(f"video_memory: the command failed for {sec:g} s: {r.stderr.strip()[-500:]}")
            child = json.loads(r.stdout.strip().splitlines()[-1])
            row = {
                "size": f"{hw[1]}x{hw[0]}",
                "seconds": sec,
                "frames": n,
                "wall_s": round(wall, 2),
                "fps_end_to_end": round(n / wall, 2),
                "peak_rss_mb": round(child["peak_rss_kib"] / 1024, 1),
                "out_bytes": os.path.getsize(out),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    first, last = rows[0], rows[-1]
    print(
        json.dumps(
            {
                "summary": "peak RSS growth from the shortest to the longest clip",
                "frames": [first["frames"], last["frames"]],
                "peak_rss_mb": [first["peak_rss_mb"], last["peak_rss_mb"]],
                "growth_mb": round(last["peak_rss_mb"] - first["peak_rss_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
