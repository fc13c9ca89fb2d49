"""What ``patchfuse fuse`` checks and loads before it fuses, for folders
(``patchfuse_jax.fusing.folder``) and videos (``patchfuse_jax.fusing.video``) alike: the options
that ``fuse`` does not check itself, the model, and the one-line error they raise."""

from __future__ import annotations

import argparse
import re
import sys

from patchfuse_jax.fusing import tiling

PROG = "patchfuse fuse"


class FuseFolderError(ValueError):
    """A bad setup of ``patchfuse fuse``; the message is the one-line error."""


def percentiles(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 1,99), got {text!r}") from None
    return lo, hi


def stderr(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)  # keeps a running progress bar intact


def check_options(batch_size, ir_norm, percentiles, bits, step, checkpoint):
    """The options fuse does not check itself (--tile/--overlap: ``check_tile``)."""
    if batch_size < 1:
        raise FuseFolderError(f"--batch_size={batch_size}: must be at least 1")
    lo, hi = percentiles
    if ir_norm == "percentile" and not 0.0 <= lo < hi <= 100.0:
        raise FuseFolderError(f"--percentiles={lo:g},{hi:g}: expected 0 <= LOW < HIGH <= 100")
    if bits not in (8, 16):
        raise FuseFolderError(f"--bits={bits}: expected 8 or 16")
    if step is not None and checkpoint in (None, "pretrained"):
        raise FuseFolderError("--step needs --checkpoint=WORKDIR (the shipped weights hold one step)")


def check_tile(tile, overlap, multiple) -> None:
    """``--tile``/``--overlap`` as ``fuse`` will check them, before anything is computed."""
    if tile is None:
        return
    try:
        tiling.check_tile(tile, overlap, multiple)
    except ValueError as e:
        raise FuseFolderError(f"--tile={tile} --overlap={overlap}: {re.sub(r'^fuse: ', '', str(e))}") from None


def load_model(checkpoint, step):
    from patchfuse_jax.checkpoint import CheckpointError
    from patchfuse_jax.fusing.saved import load_checkpoint, pretrained

    try:
        if checkpoint in (None, "pretrained"):
            params = pretrained()
            source = "the shipped default weights (patchfuse_jax/weights/default.msgpack)"
        else:
            params = load_checkpoint(checkpoint, step)
            source = checkpoint
    except CheckpointError as e:
        raise FuseFolderError(f"--checkpoint: {e}") from None
    arch = params.arch.describe()
    return params, f"{source}, step {params.step} ({arch})"


# The options of ``patchfuse fuse`` that folders and videos share, as keyword arguments of
# ``fuse_folder`` / ``fuse_video``.
SHARED = (
    "checkpoint",
    "step",
    "color",
    "tile",
    "overlap",
    "bits",
    "ir_norm",
    "percentiles",
    "bn",
    "batch_size",
    "overwrite",
    "progress",
    "homography",
)


def shared_kwargs(args: argparse.Namespace) -> dict:
    """``{name: args.name}`` for the ``SHARED`` options, and ``backend`` when given (else the
    work function's default: ``xla`` for folders, ``auto`` for videos)."""
    kwargs = {k: getattr(args, k) for k in SHARED}
    if getattr(args, "backend", None):
        kwargs["backend"] = args.backend
    return kwargs


BACKEND_CHOICES = ("auto", "xla", "onnxruntime")


def resolve_backend(backend: str) -> str:
    """``auto``: ONNX Runtime when ``onnx`` and ``onnxruntime`` are installed (the same function,
    faster on CPU), else XLA; ``xla`` / ``onnxruntime`` as given (``fusing.api.fuse``)."""
    import importlib.util

    if backend not in BACKEND_CHOICES:
        raise FuseFolderError(f"--backend={backend}: expected one of {', '.join(BACKEND_CHOICES)}")
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if backend == "auto":
        return "xla" if missing else "onnxruntime"
    if backend == "onnxruntime" and missing:
        raise FuseFolderError(f"--backend=onnxruntime needs {' and '.join(missing)}: pip install 'patchfuse_jax[onnx]'")
    return backend
