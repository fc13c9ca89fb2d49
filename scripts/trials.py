"""Collect and tabulate model-search trials (issue 20; docs/RESULTS.md).

    python scripts/trials.py collect --runs=/work/runs/trials G2 G3 ...   # -> results/trials/
    python scripts/trials.py table [NAME ...]                             # markdown, from results/trials/

``collect`` copies each workdir's validation lines (``metrics.jsonl`` ``val_*``), ``config.json``
and ``best.json`` to ``results/trials/<NAME>_{val.jsonl,config.json,best.json}``. ``table``
prints every validation line of the named trials (default: every trial with the 14 metrics):
the 14 metrics, the mean rank among the selection panel, and wins over Average.
"""

import argparse
import glob
import json
import os
import shutil
import sys

from patchfuse_jax import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "results", "trials")
METRICS = ("CC", "MS_SSIM", "SCD", "FMI_dct", "SSIM_a", "PSNR", "CC_mean", "EN", "SD", "SF", "AG", "MI", "VIF", "Qabf")


def collect(runs: str, names: list[str]) -> None:
    os.makedirs(OUT, exist_ok=True)
    for n in names:
        wd = os.path.join(runs, n)
        rows = [r for r in workdir.read_metrics(wd) if any(k.startswith("val_") for k in r)]
        with open(os.path.join(OUT, f"{n}_val.jsonl"), "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        for f in (workdir.CONFIG, workdir.BEST_JSON):
            if os.path.exists(os.path.join(wd, f)):
                shutil.copy(os.path.join(wd, f), os.path.join(OUT, f"{n}_{f}"))
        print(f"{n}: {len(rows)} validation lines")


def table(names: list[str]) -> None:
    files = sorted(glob.glob(os.path.join(OUT, "*_val.jsonl")))
    if names:
        files = [os.path.join(OUT, f"{n}_val.jsonl") for n in names]
    head = "| trial | step | " + " | ".join(METRICS) + " | mean rank | wins |"
    print(head + "\n|---|---:|" + "---:|" * (len(METRICS) + 2))
    for path in files:
        n = os.path.basename(path)[: -len("_val.jsonl")]
        if names and n not in names:
            continue
        for line in open(path):
            r = json.loads(line)
            if "val_mean_rank" not in r:
                continue
            cells = [
                f"{r['val_' + m]:.2f}" if m in ("PSNR", "SD", "SF", "EN") else f"{r['val_' + m]:.4f}" for m in METRICS
            ]
            print(f"| {n} | {r['step']} | " + " | ".join(cells) + f" | {r['val_mean_rank']:.2f} | {r['val_wins']} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("collect", "table"))
    ap.add_argument("names", nargs="*")
    ap.add_argument("--runs", default=os.path.join(os.path.dirname(REPO), "runs", "trials"))
    a = ap.parse_args(argv)
    if a.command == "collect":
        collect(a.runs, a.names)
    else:
        table(a.names)


if __name__ == "__main__":
    sys.exit(main())
