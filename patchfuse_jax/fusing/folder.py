"""``patchfuse fuse``: fuse every IR/visible pair of two folders into PNG files.

    python -m patchfuse_jax fuse --ir_dir=A --vis_dir=B --out_dir=C [--split=FILE]
        [--checkpoint=WORKDIR_or_exported.msgpack [--step=S]] [--color] [--tile=N --overlap=M]
        [--bits=8|16] [--ir_norm=none|minmax|percentile [--percentiles=1,99]]
        [--bn=running|image] [--batch_size=K] [--overwrite] [--no-progress] [--homography=H.json]

(Videos and frame folders: ``--ir_video/--vis_video/--out``, ``patchfuse_jax.fusing.video``.) With
``--homography`` every visible image is first warped onto its IR image (``patchfuse_jax.fusing.align``).
Pairs are matched by file stem exactly as ``evaluate.py`` matches them
(:func:`patchfuse_jax.io.match_pairs`, ``--split`` files by ``read_split``). Without
``--checkpoint`` the package's shipped weights (``pretrained()``) are used; the model (source,
step, architecture) is named on stderr. Every output is ``C/<stem>.png`` at the input's exact
size: gray, or RGB with ``--color`` when the visible image has colour; 8-bit, or 16-bit with
``--bits=16``. Images whose padded shape (a multiple of ``2**num_downs``), layout and dtype are
equal are fused together, up to ``--batch_size`` at a time (with ``--tile``: one at a time).
Existing outputs are skipped unless ``--overwrite``; outputs are written atomically, so an
interrupted run never leaves a half-written PNG behind that a rerun would skip.

Everything that can be checked before computing is: the options, the folders and the pairing,
the output folder (created, must be writable, must not be an input folder), every pair's size
and readability (from the file headers), the model and the tile size. Errors are one line
naming the folder, file or option (:class:`FuseFolderError`, ``ImageError``; all
``ValueError``); an image whose pixels cannot be decoded stops the run (outputs written so far
are kept and skipped by a rerun). Library use: ``fuse_folder(ir_dir, vis_dir, out_dir, ...)``
returns a :class:`Report`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from patchfuse_jax import io
from patchfuse_jax.fusing import options
from patchfuse_jax.fusing.options import FuseFolderError

DEFAULT_BATCH_SIZE = 8
DEFAULT_OVERLAP = 32
OUT_EXT = ".png"


# --- arguments -----------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``patchfuse fuse`` (see the module docstring)."""
    p.add_argument("--ir_dir", default=None, help="folder of infrared images")
    p.add_argument("--vis_dir", default=None, help="folder of visible images (paired by file stem)")
    p.add_argument(
        "--out_dir", default=None, help="folder for the fused images, OUT_DIR/<stem>.png (created if needed)"
    )
    p.add_argument(
        "--split", default=None, help="file of stems to fuse, one per line ('#' comments); default: all pairs"
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a training workdir or an exported .msgpack file (default: the package's "
        "shipped weights; 'pretrained' names them explicitly)",
    )
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a workdir (default: the latest)")
    p.add_argument(
        "--color", action="store_true", help="RGB output for colour visible images (fuse the BT.601 Y, keep Cb/Cr)"
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="fuse in overlapping N x N tiles (huge images; memory bounded by the tile)",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"tile overlap in pixels (default {DEFAULT_OVERLAP}; less than half the tile)",
    )
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth (default 8)")
    p.add_argument(
        "--ir_norm",
        choices=("none", "minmax", "percentile"),
        default="none",
        help="IR normalisation, e.g. for 14-bit counts in 16-bit files (default none)",
    )
    p.add_argument(
        "--percentiles",
        type=options.percentiles,
        default=(1.0, 99.0),
        metavar="LOW,HIGH",
        help="percentiles of --ir_norm=percentile (default 1,99)",
    )
    p.add_argument(
        "--bn",
        choices=("running", "image"),
        default="image",
        help="BatchNorm statistics: each image's own (default, as in training at batch 1) or the saved running averages",
    )
    p.add_argument(
        "--backend",
        choices=options.BACKEND_CHOICES,
        default=None,
        help="the generator's runtime: xla (JAX; default for folders), onnxruntime (the same function "
        "exported to ONNX; often faster on CPU), or auto (onnxruntime when installed; default for videos)",
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images of equal padded shape fused together (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist (default: skip them)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar on stderr (--no-progress: none)",
    )
    p.add_argument(
        "--homography",
        default=None,
        metavar="H.json",
        help="warp every visible image onto its IR image first (patchfuse align; one "
        "homography for a fixed camera rig)",
    )


def run(args: argparse.Namespace) -> None:
    """``patchfuse fuse`` on folders from parsed arguments: fuses, then prints one summary line
    on stdout (``__main__`` sends ``--ir_video``/``--vis_video`` to ``patchfuse_jax.fusing.video``)."""
    missing = [f"--{k}" for k in ("ir_dir", "vis_dir", "out_dir") if not getattr(args, k)]
    if missing:
        raise FuseFolderError(
            f"missing {', '.join(missing)} (folders need --ir_dir, --vis_dir and "
            "--out_dir; videos --ir_video, --vis_video and --out)"
        )
    for flag in ("out", "side_by_side", "frames", "fps"):
        if getattr(args, flag, None):
            raise FuseFolderError(f"--{flag} is for videos (--ir_video/--vis_video); folders write to --out_dir")
    report = fuse_folder(args.ir_dir, args.vis_dir, args.out_dir, split=args.split, **options.shared_kwargs(args))
    print(report.summary())


# --- the work ------------------------------------------------------------------------------------


@dataclass
class Report:
    """What ``fuse_folder`` did: ``written`` and ``skipped`` stems, the model's description."""

    out_dir: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    model: str = ""

    def summary(self) -> str:
        text = f"fused {len(self.written)} image(s) into {self.out_dir}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} whose output exists (--overwrite redoes them)"
        return text


def _header_hw(path: str) -> tuple[int, int]:
    """``(H, W)`` of an image from its header (cheap); ImageError naming the file otherwise."""
    import imageio.v3 as iio

    try:
        props = iio.improps(path)
        shape = tuple(props.shape)
        if getattr(props, "is_batch", False) or len(shape) not in (2, 3):
            raise ValueError(shape)
    except Exception:  # noqa: BLE001 - let read_image produce (or not) the one-line error
        shape = io.read_image(path).shape
    return int(shape[0]), int(shape[1])


def _check_sizes(pending: dict[str, tuple[str, str]], hom=None) -> dict[str, tuple[int, int]]:
    """``{stem: (H, W)}`` of the IR images; with a homography ``hom`` the visible image may
    differ in size (checked against ``hom`` and its coverage instead)."""
    hw, checked = {}, set()
    for stem, (ir_path, vis_path) in pending.items():
        a, b = _header_hw(ir_path), _header_hw(vis_path)
        if hom is not None:
            if (a, b) not in checked:
                for w in hom.check_sizes(a, b, f"{stem}: {ir_path} / {vis_path}"):
                    options.stderr(f"{options.PROG}: warning: {w}")
                checked.add((a, b))
            hw[stem] = a
            continue
        if a != b:
            raise FuseFolderError(
                f"{stem}: ir {ir_path} is {a[0]}x{a[1]} but vis {vis_path} is "
                f"{b[0]}x{b[1]} (H x W); a pair must have one size"
            )
        hw[stem] = a
    return hw


def _padded(hw: tuple[int, int], m: int) -> tuple[int, int]:
    return -(-hw[0] // m) * m, -(-hw[1] // m) * m


def _reflect_pad(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``x`` reflect-padded at the bottom/right to ``hw``, as ``fuse`` pads its input."""
    widths = [(0, hw[0] - x.shape[0]), (0, hw[1] - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, widths, mode="reflect") if any(w for _, w in widths) else x


def _read_pair(stem, ir_path, vis_path, color: bool, warps=None):
    """``io.read_pair``; ``warps``: ``(hom, cache)``, the visible image warped onto the IR grid
    first (as ``fuse(..., homography=)`` does), one ``align.Warp`` per pair of sizes."""
    warp = None
    if warps is not None:
        from patchfuse_jax.fusing import align

        hom, cache = warps

        def warp(vis, ir_hw):
            key = (ir_hw, vis.shape[:2])
            if key not in cache:
                cache[key] = align.Warp(hom.H, vis.shape[:2], ir_hw)
            return cache[key](vis)

    try:
        return io.read_pair(ir_path, vis_path, color=color, warp=warp, stem=stem)
    except io.DataError as e:
        raise FuseFolderError(str(e)) from None


_NAME = re.compile(r"^(ir|vis)(?:\[(\d+)\])?: ")


def _name_files(message: str, stems, pairs) -> str:
    """``fuse``'s warnings name ``ir`` / ``vis[i]``: put the file instead."""
    m = _NAME.match(message)
    if not m:
        return f"{', '.join(stems)}: {message}"
    i = int(m.group(2) or 0)
    if i >= len(stems):
        return message
    path = pairs[stems[i]][0 if m.group(1) == "ir" else 1]
    return f"{path}: {message[m.end() :]}"


def _fuse_batch(fuse_fn, params, kwargs, stems, images, pairs) -> list[np.ndarray]:
    """Fuses equal-shape pairs in one call; returns one float32 image per stem."""
    irs = [a for a, _ in images]
    viss = [b for _, b in images]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if len(images) == 1:
                out = [np.asarray(fuse_fn(params, irs[0], viss[0], **kwargs))]
            else:
                out = list(np.asarray(fuse_fn(params, irs, viss, **kwargs)))
        except ValueError as e:
            where = stems[0] if len(stems) == 1 else f"one of {', '.join(stems)}"
            raise FuseFolderError(f"{where}: {' '.join(str(e).split())}") from None
    for msg in dict.fromkeys(str(w.message) for w in caught):
        options.stderr(f"{options.PROG}: warning: {_name_files(msg, stems, pairs)}")
    return out


def _to_pixels(y: np.ndarray, hw: tuple[int, int], stem: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape[:2] != hw or y.ndim not in (2, 3):
        raise FuseFolderError(f"{stem}: fuse returned shape {y.shape}, expected {hw[0]}x{hw[1]}")
    return y


def fuse_folder(
    ir_dir,
    vis_dir,
    out_dir,
    *,
    split=None,
    checkpoint=None,
    step=None,
    color=False,
    tile=None,
    overlap=DEFAULT_OVERLAP,
    bits=8,
    ir_norm="none",
    percentiles=(1.0, 99.0),
    bn="image",
    batch_size=DEFAULT_BATCH_SIZE,
    overwrite=False,
    progress=True,
    params=None,
    homography=None,
    backend="xla",
) -> Report:
    """Fuses every pair of ``ir_dir`` / ``vis_dir`` (or the stems of the ``split`` file) into
    ``out_dir/<stem>.png``; see the module docstring. ``params`` (``FuseParams``) replaces
    ``checkpoint``. ``homography`` (``H.json`` or a 3x3 array, vis -> IR): every visible image is
    warped onto its IR image first (``patchfuse_jax.fusing.align``). Returns a :class:`Report`."""
    from tqdm import tqdm

    options.check_options(batch_size, ir_norm, percentiles, bits, step, checkpoint)
    hom = None
    if homography is not None:
        from patchfuse_jax.fusing import align

        hom = align.as_homography(homography)
    stems = None if split is None else io.read_split(split)
    pairs = io.match_pairs(os.fspath(ir_dir), os.fspath(vis_dir), stems)

    out_dir = os.fspath(out_dir)
    for flag, d in (("--ir_dir", ir_dir), ("--vis_dir", vis_dir)):
        if os.path.exists(out_dir) and os.path.realpath(out_dir) == os.path.realpath(d):
            raise FuseFolderError(
                f"--out_dir {out_dir}: is the {flag} folder; outputs would replace inputs of the same name"
            )
    try:
        io.prepare_out_dir(out_dir)
    except ValueError as e:
        raise FuseFolderError(str(e)) from None

    from patchfuse_jax.fusing.api import fuse as fuse_fn

    kwargs = dict(bn=bn, color=color, tile=tile, overlap=overlap, ir_norm=ir_norm, percentiles=tuple(percentiles))
    kwargs["backend"] = options.resolve_backend(backend)
    out_path = {s: os.path.join(out_dir, s + OUT_EXT) for s in pairs}
    pending = {s: p for s, p in pairs.items() if overwrite or not os.path.exists(out_path[s])}
    hw = _check_sizes(pending, hom)  # size mismatches and unreadable headers, before computing
    if params is None:
        params, model = options.load_model(checkpoint, step)
    else:
        model = f"given FuseParams, step {params.step}"
    options.check_tile(tile, overlap, params.arch.multiple)

    # All checked: from here on only an image that cannot be decoded stops the run.
    report = Report(out_dir, model=model)
    report.skipped = [s for s in pairs if s not in pending]
    options.stderr(f"{options.PROG}: model: {model}; backend: {kwargs['backend']}")
    if report.skipped:
        options.stderr(
            f"{options.PROG}: skipping {len(report.skipped)} of {len(pairs)} pair(s) whose output "
            f"exists in {out_dir} (--overwrite redoes them)"
        )

    # Batches: pairs of one padded shape, in stem order (with --tile: one pair each). Pairs of
    # different sizes but one padded shape are reflect-padded here exactly as fuse pads each
    # image (bottom/right, to a multiple of 2**num_downs), fused together and cropped back: the
    # generator sees the same input as for the pair alone. Not with --ir_norm=percentile, whose
    # percentiles the padding would change: there a batch holds one exact size.
    m = params.arch.multiple
    pad = tile is None and ir_norm != "percentile"
    groups: dict[tuple, list[str]] = {}
    for s in pending:
        h, w = hw[s]
        key = (s,) if tile is not None else _padded((h, w), m) if pad else (h, w)
        groups.setdefault(key, []).append(s)
    chunks = [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]

    warp_cache: dict = {}
    bar = tqdm(total=len(pending), desc="fuse", unit="img", file=sys.stderr, disable=not progress or not pending)
    try:
        for chunk in chunks:
            try:
                images = {
                    s: _read_pair(s, *pending[s], color=color, warps=None if hom is None else (hom, warp_cache))
                    for s in chunk
                }
            except io.ImageError as e:
                raise FuseFolderError(
                    f"{e}; stopped after writing {len(report.written)} of {len(pending)} output(s) (a rerun skips them)"
                ) from None
            sizes = {s: images[s][0].shape[:2] for s in chunk}
            if pad:
                images = {s: tuple(_reflect_pad(x, _padded(sizes[s], m)) for x in images[s]) for s in chunk}
            # One fuse call per shape/dtype/layout (a batch is stacked: they must be equal).
            by_layout: dict[tuple, list[str]] = {}
            for s in chunk:
                a, b = images[s]
                by_layout.setdefault((a.shape, a.dtype.str, b.shape, b.dtype.str), []).append(s)
            for group in by_layout.values():
                outs = _fuse_batch(fuse_fn, params, kwargs, group, [images[s] for s in group], pairs)
                for s, y in zip(group, outs):
                    h, w = sizes[s]
                    y = _to_pixels(y, images[s][0].shape[:2], s)[:h, :w]
                    io.save_image(out_path[s], y, bits=bits)
                    report.written.append(s)
                    bar.update(1)
                    bar.set_postfix_str(s, refresh=False)
    finally:
        bar.close()
    return report
