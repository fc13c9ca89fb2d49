"""``python -m patchfuse_jax COMMAND`` (also installed as the ``patchfuse`` console script).

Commands::

    export   --workdir=W --out=model.msgpack [--step=S] [--dtype=float32|float16]
    fuse     --ir_dir=A --vis_dir=B --out_dir=C [--split=FILE] [--checkpoint=W_or_file [--step=S]]
             [--color] [--tile=N --overlap=M] [--bits=8|16] [--ir_norm=none|minmax|percentile]
             [--bn=running|image] [--batch_size=K] [--overwrite] [--no-progress]

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
    p.add_argument("--workdir", required=True,
                   help="training run folder (or an exported file to re-export)")
    p.add_argument("--out", required=True, help="file to write, e.g. model.msgpack")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage type of the weights (float16 halves the file; loaded as float32)")


def _export_run(args: argparse.Namespace) -> None:
    from patchfuse_jax.export import export_generator

    meta = export_generator(args.workdir, args.out, step=args.step, dtype=args.dtype)
    arch = " ".join(f"{k}={v}" for k, v in sorted(meta["arch"].items()))
    n = meta["bytes"]
    size = f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    print(f"wrote {args.out} ({size}): generator at step {meta['step']} "
          f"of {args.workdir} ({arch}, {meta['dtype']})")


# --- fuse (patchfuse_jax/fuse_folder.py) ---------------------------------------------------------

def _fuse_arguments(p: argparse.ArgumentParser) -> None:
    from patchfuse_jax.fuse_folder import add_arguments  # light: numpy only

    add_arguments(p)


def _fuse_run(args: argparse.Namespace) -> None:
    from patchfuse_jax.fuse_folder import run

    run(args)


COMMANDS = (
    _Command("export", "write a training run's generator (weights, architecture, provenance) "
             "to one .msgpack file", _export_arguments, _export_run),
    _Command("fuse", "fuse every IR/visible pair of two folders (matched by file stem) into "
             "OUT_DIR/<stem>.png", _fuse_arguments, _fuse_run),
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
    from patchfuse_jax.config import ConfigError
    from patchfuse_jax.io import ImageError

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
            raise CommandError(f"{PROG}: error: choose a command: {', '.join(c.name for c in COMMANDS)} "
                               f"(see {PROG} --help)")
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
        print(f"{PROG} {command}: error: {text}" if command else f"{PROG}: error: {text}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
