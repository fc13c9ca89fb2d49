#!/usr/bin/env bash
# Wheel test: build the wheel of this repo, install it into a fresh virtual environment (dependencies
# from the package index), and use it from a folder outside the repo, so that only the installed
# files can be imported: the library API with the shipped weights, `patchfuse fuse` on two PNG pairs,
# and `patchfuse export` of the shipped model.
#
#     bash .ci/wheel_test.sh        # uses `python` of the current environment (PYTHON=... to override)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/patchfuse_wheel.XXXXXX")"
had_build=0
[ -e "$REPO/build" ] && had_build=1
cleanup() {
  rm -rf "$TMP"
  # pip builds in the tree; drop the build/ folder it made (stale files there could end in a later wheel)
  if [ "$had_build" = 0 ]; then rm -rf "$REPO/build"; fi
}
trap cleanup EXIT
t0=$SECONDS
step() { echo "wheel test: $* ($((SECONDS - t0)) s)"; }

# 1. The wheel; each module in it must be one of the tree (no leftovers of an older build/ folder).
(cd "$REPO" && "$PY" -m pip wheel -q --no-deps -w "$TMP/dist" .)
WHEEL="$(ls "$TMP"/dist/patchfuse_jax-*.whl)"
"$PY" - "$WHEEL" "$REPO" <<'EOF'
import os, sys, zipfile
wheel, repo = sys.argv[1:]
names = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("patchfuse_jax/")}
tree = {os.path.relpath(os.path.join(d, f), repo).replace(os.sep, "/")
        for d, _, fs in os.walk(os.path.join(repo, "patchfuse_jax")) for f in fs if f.endswith(".py")}
stale = sorted(n for n in names if n.endswith(".py") and n not in tree)
missing = sorted(tree - names)
assert not stale, f"wheel holds modules the tree does not (stale {repo}/build?): {stale}"
assert not missing, f"wheel lacks modules of the tree (a sub-package without __init__.py?): {missing}"
assert "patchfuse_jax/weights/default.msgpack" in names, "wheel lacks the shipped weights"
EOF
step "built $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) kB)"

# 2. A fresh virtual environment with the wheel and its dependencies.
"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "$WHEEL"
step "installed into a fresh venv: $("$VPY" -m pip list --disable-pip-version-check 2>/dev/null \
  | awk '$1 ~ /^(jax|jaxlib|flax|patchfuse[-_]jax)$/ {printf "%s %s  ", $1, $2}')"

# Outside the repo, without PYTHONPATH: only the installed package can be imported.
mkdir "$TMP/work" && cd "$TMP/work"
unset PYTHONPATH
export JAX_PLATFORMS=cpu

# 3a. The library API with the shipped weights.
"$VPY" - <<'EOF'
import os, sysconfig
import numpy as np
import patchfuse_jax
site = os.path.realpath(sysconfig.get_paths()["purelib"])
assert os.path.realpath(patchfuse_jax.__file__).startswith(site + os.sep), patchfuse_jax.__file__
params = patchfuse_jax.pretrained()
rng = np.random.default_rng(0)
ir, vis = (rng.integers(0, 256, (64, 80), dtype=np.uint8) for _ in range(2))
out = np.asarray(patchfuse_jax.fuse(params, ir, vis))
assert out.shape == (64, 80) and out.dtype == np.float32, (out.shape, out.dtype)
assert np.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1, (out.min(), out.max())
print(f"wheel test: api ok: {os.path.relpath(patchfuse_jax.__file__, site)} in site-packages, "
      f"pretrained() step {params.step}, fuse -> {out.shape} {out.dtype} in [{out.min():.3f}, "
      f"{out.max():.3f}]")
EOF

# 3b. The console script fuses two folders of PNG pairs.
"$VPY" - <<'EOF'
import os
import imageio.v3 as iio
import numpy as np
rng = np.random.default_rng(1)
for d in ("ir", "vis"):
    os.makedirs(d)
    for stem in ("a", "b"):
        iio.imwrite(f"{d}/{stem}.png", rng.integers(0, 256, (48, 64), dtype=np.uint8))
EOF
"$TMP/venv/bin/patchfuse" fuse --ir_dir ir --vis_dir vis --out_dir fused --no-progress > fuse.log 2>&1 \
  || { cat fuse.log; exit 1; }
"$VPY" - <<'EOF'
import imageio.v3 as iio
shapes = [iio.imread(f"fused/{stem}.png").shape for stem in ("a", "b")]
assert shapes == [(48, 64)] * 2, shapes
EOF
step "patchfuse fuse ok: fused/a.png fused/b.png (48x64)"

# 3c. The console script exports the shipped model; the file loads back.
SHIPPED="$("$VPY" -c 'import os, patchfuse_jax as p
print(os.path.join(os.path.dirname(p.__file__), "weights", "default.msgpack"))')"
"$TMP/venv/bin/patchfuse" export --workdir "$SHIPPED" --out model.msgpack > export.log 2>&1 \
  || { cat export.log; exit 1; }
test -s model.msgpack
"$VPY" -c 'import patchfuse_jax as p; assert p.load_checkpoint("model.msgpack").step == p.pretrained().step'
step "patchfuse export ok: model.msgpack ($(du -k model.msgpack | cut -f1) kB, loads back)"

echo "wheel test: ok ($((SECONDS - t0)) s)"
