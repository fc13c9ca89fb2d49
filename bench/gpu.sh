#!/usr/bin/env bash
# One prepared GPU benchmark for a lent NVIDIA H100/H200 (about 5-7 minutes; prints JSON lines:
# one per measurement, then a summary line). The work is in bench/gpu.py; see its docstring.
#
#   bash bench/gpu.sh                         # the GPU run
#   bash bench/gpu.sh --out=gpu.jsonl         # also write the lines to a file
#   bash bench/gpu.sh --cpu_smoke             # the same code path at tiny sizes, on any machine
#   PYTHON=python3 bash bench/gpu.sh ...      # choose the interpreter (default: python, else python3)
#
# On a lent device machine (it gets a copy of the working tree, not ../shared, and no network):
# * JAX must see the GPU. Where there is network: pip install -e ".[cuda]" (CUDA 13; ".[cuda12]"
#   for CUDA 12, see pyproject.toml's extras). The lent H200 image's python3 already has JAX with
#   the CUDA 13 plugin, flax, optax and orbax, but not dm-pix: carry its wheel (an ignored .whl/
#   folder, see the device tool's notes) and start the command with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
# * The input-pipeline part reads ../shared/data/roadscene, which does not travel; it then reports
#   null with a reason. To measure it there, copy RoadScene (about 10 MB) into an ignored folder of
#   the repo, carry it, and pass --data_dir=THAT/roadscene.
# * Without a GPU backend the full run stops at once with an error line (use --cpu_smoke).
# E.g. run(command='PYTHON=python3 bash bench/gpu.sh --out=$OUT/gpu.jsonl', carry=[...], timeout_s=540).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PYTHON" bench/gpu.py "$@"
