"""``python -m patchfuse_jax COMMAND`` (also installed as the ``patchfuse`` console script).

Commands::

    export   --workdir=W --out=model.msgpack [--step=S] [--dtype=float32|float16]
    export   --format=onnx --out=model.onnx [--workdir=W_or_file_or_pretrained] [--bn=image|running]
    fuse     --ir_dir=A --vis_dir=B --out_dir=C [--split=FILE] [--checkpoint=W_or_file [--step=S]]
             [--color] [--tile=N --overlap=M] [--bits=8|16] [--ir_norm=none|minmax|percentile]
             [--bn=running|image] [--batch_size=K] [--overwrite] [--no-progress] [--homography=H.json]
    fuse     --ir_video=ir.mp4_or_DIR --vis_video=vis.mp4_or_DIR --out=fused.mp4_or_DIR [--color]
             [--side_by_side] [--start=N] [--frames=N] [--sync=strict|drop] [--fps=F] [...as above]
    align    --ir=a.png --vis=b.png --out=H.json [--points=pts.csv]

Every command is one ``_Command`` in ``COMMANDS``: a name, a help line, a function adding its
arguments to an argparse sub-parser and a function running it; add one there to add a command
(the work lives in its own module, e.g. ``fuse_folder`` for ``fuse``). Errors print one line on
stderr and exit with status 1 (no traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, NamedTuple

PROG = "patchfuse"


class CommandError(Exception):
    """A command cannot run; the message is printed as the one-line error."""


class _Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


# --- export --------------------------------------------------------------------------------------


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir",
        "--checkpoint",
        dest="workdir",
        default=None,
        help="training run folder (or an exported file to re-export); with --format=onnx "
        "also 'pretrained', the shipped weights, which are its default",
    )
    p.add_argument("--out", required=True, help="file to write, e.g. model.msgpack or model.onnx")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage type of the weights (float16 halves the file; loaded as float32)",
    )
    p.add_argument(
        "--format",
        choices=("msgpack", "onnx"),
        default="msgpack",
        help="msgpack (default: patchfuse_jax's own file) or onnx (ONNX Runtime, TensorRT; docs/onnx.md)",
    )
    p.add_argument(
        "--bn",
        choices=("running", "image"),
        default=None,
        help="--format=onnx: BatchNorm mode baked into the model (default: image)",
    )
    p.add_argument("--opset", type=int, default=None, help="--format=onnx: ONNX opset (default 17)")


def _export_onnx_run(args: argparse.Namespace) -> None:
    from patchfuse_jax.fusing.onnx import DEFAULT_OPSET, export_onnx
    from patchfuse_jax.fusing.saved import load_checkpoint, pretrained

    if args.dtype != "float32":
        raise CommandError(f"{PROG} export: error: --dtype={args.dtype}: the ONNX export is float32 only")
    shipped = args.workdir in (None, "pretrained")
    if shipped and args.step is not None:
        raise CommandError(f"{PROG} export: error: --step needs --workdir=W (the shipped weights hold one step)")
    params = pretrained() if shipped else load_checkpoint(args.workdir, args.step)
    source = "the shipped weights" if shipped else args.workdir
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    meta = export_onnx(
        params,
        args.out,
        bn=args.bn or "image",
        opset=opset,
        source="pretrained" if shipped else os.path.basename(os.path.normpath(source)),
    )
    arch = params.arch.describe()
    n = int(meta["bytes"])
    size = f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    print(
        f"wrote {args.out} ({size}): ONNX generator (opset {opset}, bn={meta['bn']}, inputs "
        f"padded to multiples of {meta['pad_multiple']}) at step {params.step} of {source} ({arch})"
    )


def _export_run(args: argparse.Namespace) -> None:
    from patchfuse_jax.fusing.saved import export_generator

    if args.format == "onnx":
        return _export_onnx_run(args)
    if args.bn is not None or args.opset is not None:
        raise CommandError(f"{PROG} export: error: --bn and --opset apply to --format=onnx only")
    if args.workdir is None:
        raise CommandError(
            f"{PROG} export: error: the following arguments are required: --workdir (see {PROG} export --help)"
        )
    meta = export_generator(args.workdir, args.out, step=args.step, dtype=args.dtype)
    arch = " ".join(f"{k}={v}" for k, v in sorted(meta["arch"].items()))
    n = meta["bytes"]
    size = f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    print(f"wrote {args.out} ({size}): generator at step {meta['step']} of {args.workdir} ({arch}, {meta['dtype']})")


# --- fuse (patchfuse_jax/fusing/folder.py, video.py) -----------------------------------------------


def _fuse_arguments(p: argparse.ArgumentParser) -> None:
    from patchfuse_jax.fusing import folder, video  # light: numpy only

    folder.add_arguments(p)
    video.add_arguments(p)


def _fuse_run(args: argparse.Namespace) -> None:
    from patchfuse_jax.fusing import folder, video

    (video if args.ir_video or args.vis_video else folder).run(args)


# --- align (patchfuse_jax/fusing/align.py) --------------------------------------------------------------


def _align_arguments(p: argparse.ArgumentParser) -> None:
    from patchfuse_jax.fusing.align import add_arguments  # light: numpy only

    add_arguments(p)


def _align_run(args: argparse.Namespace) -> None:
    from patchfuse_jax.fusing.align import run

    run(args)


COMMANDS = (
    _Command(
        "export",
        "write a training run's generator (weights, architecture, provenance) "
        "to one .msgpack file, or as ONNX (--format=onnx)",
        _export_arguments,
        _export_run,
    ),
    _Command(
        "fuse",
        "fuse every IR/visible pair of two folders (matched by file stem) into "
        "OUT_DIR/<stem>.png, or two videos / frame folders into a video (--ir_video, "
        "--vis_video, --out)",
        _fuse_arguments,
        _fuse_run,
    ),
    _Command(
        "align",
        "estimate the homography that maps a visible image onto its IR image "
        "(automatic, or from clicked points) into H.json",
        _align_arguments,
        _align_run,
    ),
)


# --- main ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 1 (argparse's default: usage + status 2)
        raise CommandError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="patchfuse_jax: IR + visible image fusion.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is meant for the user (imported only once a command ran)."""
    from patchfuse_jax.checkpoint import CheckpointError
    from patchfuse_jax.io import ImageError
    from patchfuse_jax.train.config import ConfigError

    return CheckpointError, ConfigError, ImageError, ValueError, OSError


def main(argv: list[str] | None = None) -> int:
    """Runs the command in ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    command = ""
    # orbax logs warnings through absl (e.g. "Given directory is read only"): keep stderr to the
    # one line of an error.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        args = parser.parse_args(argv)
        command = args.command or ""
        if getattr(args, "_run", None) is None:
            raise CommandError(
                f"{PROG}: error: choose a command: {', '.join(c.name for c in COMMANDS)} (see {PROG} --help)"
            )
        args._run(args)
    except CommandError as e:
        print(str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (PATCHFUSE_DEBUG=1 shows it)
        if os.environ.get("PATCHFUSE_DEBUG"):
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        if not isinstance(e, _known_errors()):
            text = f"{type(e).__name__}: {text} (PATCHFUSE_DEBUG=1 shows the traceback)"
        print(f"{PROG} {command}: error: {text}" if command else f"{PROG}: error: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
