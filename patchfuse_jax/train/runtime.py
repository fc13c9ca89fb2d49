"""Process settings of the command-line entry points (``train.py``, the benchmarks); the library
calls (``fuse``, ``train_step``) never change the process. Imports nothing heavy: call
``use_huge_pages`` before importing jax.

XLA:CPU allocates each executable's temporary buffer anew per call (a large one for the
paper's training step) with ``posix_memalign``; glibc serves allocations that large with a
fresh ``mmap`` and returns them with ``munmap``, so every step faults the whole buffer in again
as zeroed 4 KB pages, a noticeable share of the step's CPU time spent in the kernel. With the
glibc tunable ``glibc.malloc.hugetlb=1`` malloc asks for transparent huge pages on its mmapped
chunks (``madvise(MADV_HUGEPAGE)``; the kernel's THP mode ``madvise``, as here): far fewer
faults and much less kernel time (docs/benchmarks.md, 'Measurements behind the code';
docs/design.md). Tunables are read at process start only, hence the re-execution. Numerics do
not change.
"""

from __future__ import annotations

import os
import sys

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # no such confstr name: not glibc
        return False


def huge_pages_environment(environ: dict[str, str]) -> dict[str, str] | None:
    """``environ`` with ``glibc.malloc.hugetlb=1`` added to ``GLIBC_TUNABLES``, or None if it
    already sets that tunable (any value: ``=0`` opts out)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(t.split("=", 1)[0] == HUGE_PAGES_TUNABLE for t in tunables.split(":") if t):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{HUGE_PAGES_TUNABLE}=1"]))}


def use_huge_pages() -> None:
    """Re-execute this Python process (same interpreter, options and arguments) with
    ``glibc.malloc.hugetlb=1`` unless ``GLIBC_TUNABLES`` already names it. Only for a script or
    ``-m`` module run on Linux with glibc; elsewhere (and under ``-c``, stdin, the REPL) a no-op.
    Call it first thing in ``__main__``."""
    env = huge_pages_environment(dict(os.environ))
    if env is None or not _glibc() or not sys.executable or not os.path.isfile(sys.argv[0]):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
