"""The entry points' process settings (patchfuse_jax.train.runtime)."""

import json
import os
import subprocess
import sys

import pytest

from patchfuse_jax.train import runtime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_huge_pages_environment_adds_the_tunable_once():
    env = runtime.huge_pages_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    kept = runtime.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # Already named (any value, =0 opts out): nothing to do, no re-execution.
    assert runtime.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert runtime.huge_pages_environment({"GLIBC_TUNABLES": "x=1:glibc.malloc.hugetlb=1"}) is None


@pytest.mark.skipif(not runtime._glibc(), reason="re-execution is for Linux with glibc only")
def test_use_huge_pages_reexecutes_once_with_the_same_arguments(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(
        "import json, os, sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from patchfuse_jax.train import runtime\n"
        "print('start', flush=True)\n"
        "runtime.use_huge_pages()\n"
        "print(json.dumps([sys.argv[1:], os.environ.get('GLIBC_TUNABLES')]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-u", str(script), "--flag=a b", "x"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Printed 'start' twice (the process ran again from the top), then the result once.
    assert out[:2] == ["start", "start"]
    assert json.loads(out[2]) == [["--flag=a b", "x"], "glibc.malloc.hugetlb=1"]
    env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=0"  # the opt-out: no re-execution
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "start" and json.loads(out[1]) == [[], "glibc.malloc.hugetlb=0"]
    del env["GLIBC_TUNABLES"]  # no file to run again (python -u -c): no re-execution
    out = subprocess.run(
        [sys.executable, "-u", "-c", script.read_text()], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "start" and json.loads(out[1]) == [[], None]
