"""Benchmark: all metrics on the 20 RoadScene test pairs of one method, cold start included.

    python bench/metrics.py [--data_dir=../shared/data] [--split=splits/roadscene_test.txt]
                            [--metrics=all] [--workers=2]

Prints one JSON object. The fused images come from published outputs in
``peers/roadscene`` when one method covers every test stem, else from the built-in GFF baseline
(fused once up front and timed separately; outputs written as 8-bit PNG). Then, each in a fresh
process (wall time from process start, imports included):

* ``serial``: per-metric timing, one image and one metric at a time (``per_metric_s_per_image``);
* ``cli``: ``evaluate.py`` on the same images, serial (``--workers=0``) and with a process pool.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

T0 = time.perf_counter()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stems(split: str, ir_dir: str) -> tuple[list[str], str]:
    if os.path.isfile(split):
        with open(split, encoding="utf-8") as fh:
            stems = [ln.split("#", 1)[0].strip() for ln in fh]
        return [s for s in stems if s], split
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(ir_dir))
    return names[:20], f"first 20 sorted stems of {ir_dir} ({split} absent)"


def _peer_coverage(data_dir: str, stems: list[str]) -> dict[str, dict[str, str]]:
    """``{method: {stem: fused_path}}`` for published RoadScene outputs (via peers/MANIFEST.csv)."""
    import re

    out: dict[str, dict[str, str]] = {}
    manifest = os.path.join(data_dir, "peers", "MANIFEST.csv")
    if not os.path.isfile(manifest):
        return out
    root = os.path.dirname(os.path.dirname(os.path.abspath(data_dir)))  # paths start with shared/data/
    with open(manifest, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["group"] != "roadscene":
                continue
            m = re.search(r"= RoadScene (\S+)\.\w+", row.get("note") or "")
            stem = m.group(1) if m else None
            if stem is None and "/roadscene/ir/" in row["ir"]:
                stem = os.path.splitext(os.path.basename(row["ir"]))[0]
            if stem in stems:
                out.setdefault(row["method"], {})[stem] = os.path.join(root, row["fused"])
    return out


def _child(args) -> dict:
    """Runs in a fresh process: import, read, every metric on every image, timed one by one."""
    t_imp = time.perf_counter()
    import numpy as np

    from patchfuse_jax import io
    from patchfuse_jax.eval import metrics as M

    import_s = time.perf_counter() - t_imp
    names = M.resolve_metrics(args.metrics)
    stems = args.stems.split(",")
    t = time.perf_counter()
    folders = [io.list_images(d) for d in (args.ir_dir, args.vis_dir, args.fused_dir)]
    data = [tuple(M.as_metric_input(io.read_image(f[s])) for f in folders) for s in stems]
    read_s = time.perf_counter() - t
    per_metric = {k: 0.0 for k in names}
    t = time.perf_counter()
    nan = 0
    for a, b, f in data:
        for k in names:
            t1 = time.perf_counter()
            v = M.METRICS[k](a, b, f)
            per_metric[k] += time.perf_counter() - t1
            nan += not np.isfinite(v)
    metrics_s = time.perf_counter() - t
    n = len(data)
    return {
        "import_s": round(import_s, 3),
        "read_s": round(read_s, 3),
        "metrics_s": round(metrics_s, 3),
        "in_process_total_s": round(time.perf_counter() - T0, 3),
        "nonfinite_values": int(nan),
        "per_metric_s_per_image": {k: round(v / n, 4) for k, v in per_metric.items()},
        "metrics_only_images_per_s": round(n / metrics_s, 3),
        "mean_pixels_per_image": int(np.mean([a.size for a, _, _ in data])),
    }


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(json.dumps({"error": f"{' '.join(cmd[:2])} failed", "stderr": p.stderr[-2000:]}))
    return wall, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    ap.add_argument("--split", default=os.path.join(REPO, "splits", "roadscene_test.txt"))
    ap.add_argument("--metrics", default="all")
    ap.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for k in ("stems", "ir_dir", "vis_dir", "fused_dir"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return

    ir_dir, vis_dir = (os.path.join(args.data_dir, "roadscene", k) for k in ("ir", "vis"))
    if not (os.path.isdir(ir_dir) and os.path.isdir(vis_dir)):
        print(
            json.dumps(
                {
                    "skipped": True,
                    "error": f"RoadScene data not found under {args.data_dir} "
                    "(expected roadscene/ir and roadscene/vis; set --data_dir)",
                }
            )
        )
        return
    from patchfuse_jax import io
    from patchfuse_jax.eval.baselines import BASELINES

    stems, stems_from = _stems(args.split, ir_dir)
    irs, viss = io.list_images(ir_dir), io.list_images(vis_dir)
    coverage = _peer_coverage(args.data_dir, stems)
    full = [m for m, d in coverage.items() if len(d) == len(stems)]
    out: dict = {
        "n_images": len(stems),
        "stems_from": stems_from,
        "cpu_count": os.cpu_count(),
        "peer_outputs_covering_test_stems": {m: f"{len(d)}/{len(stems)}" for m, d in coverage.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        fused_dir = os.path.join(tmp, "fused")
        os.makedirs(fused_dir)
        if full:
            method = full[0]
            for s, p in coverage[method].items():
                os.symlink(p, os.path.join(fused_dir, s + os.path.splitext(p)[1]))
            out["method"] = f"{method} (published outputs, peers/roadscene)"
        else:
            method = "GFF"
            t = time.perf_counter()
            for s in stems:
                ir = io.load_gray(irs[s]).astype("float64")
                vis = io.load_gray(viss[s]).astype("float64")
                io.save_image(os.path.join(fused_dir, s + ".png"), BASELINES["GFF"](ir, vis))
            out["method"] = "GFF (built-in baseline; no published outputs cover the test stems)"
            out["gff_fuse_s_per_image"] = round((time.perf_counter() - t) / len(stems), 4)

        me = os.path.abspath(__file__)
        wall, p = _timed(
            [
                sys.executable,
                me,
                "--child",
                f"--metrics={args.metrics}",
                f"--stems={','.join(stems)}",
                f"--ir_dir={ir_dir}",
                f"--vis_dir={vis_dir}",
                f"--fused_dir={fused_dir}",
            ]
        )
        child = json.loads(p.stdout.strip().splitlines()[-1])
        out["serial"] = {"cold_total_s": round(wall, 3), "images_per_s": round(len(stems) / wall, 3), **child}

        split_file = os.path.join(tmp, "split.txt")
        with open(split_file, "w", encoding="utf-8") as fh:
            fh.write("\n".join(stems) + "\n")
        out["cli"] = {}
        for w in sorted({0, args.workers}):
            wall, _ = _timed(
                [
                    sys.executable,
                    os.path.join(REPO, "evaluate.py"),
                    f"--ir_dir={ir_dir}",
                    f"--vis_dir={vis_dir}",
                    f"--split={split_file}",
                    f"--method={method}={fused_dir}",
                    f"--metrics={args.metrics}",
                    f"--out_dir={os.path.join(tmp, f'out{w}')}",
                    f"--workers={w}",
                    "--noprogress",
                ]
            )
            out["cli"][f"workers={w}"] = {"cold_total_s": round(wall, 3), "images_per_s": round(len(stems) / wall, 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
