"""What ``fuse`` accepts, turned into what the generator takes.

Input layouts (numpy/jax arrays, or lists of equal-shape arrays), per image:

* gray ``(H, W)`` or ``(H, W, 1)``; gray+alpha ``(H, W, 2)``; RGB ``(H, W, 3)``; RGBA
  ``(H, W, 4)`` (alpha is dropped). Gray stored as RGB (three equal channels, as TNO's PNGs) is
  taken as gray, bit-exact; other RGB becomes its BT.601 luma Y, as in training (``io.to_gray``).
* dtypes ``uint8`` (/255), ``uint16`` (/65535), float in [0, 1] (``io.to_unit_float``).

One pair vs a batch, decided by ``ir``: a 2-D array, or a 3-D array whose last axis is 1-4, is
ONE image; any other 3-D array ``(B, H, W)``, a 4-D array ``(B, H, W, C)`` or a list is a batch.
``vis`` must then have the same number of images and the same ``H x W``.

IR normalisation (``ir_norm``) for thermal cameras that store 14-bit radiometric counts in
16-bit files: ``"none"`` (default: dtype scaling only), ``"minmax"`` (each IR image's own
min..max to 0..1) or ``"percentile"`` (its ``percentiles[0]``..``percentiles[1]`` percentiles to
0..1, clipped; default 1 and 99). An input that spans under 5 % of its dtype's range draws a
warning naming it (for IR, only with ``ir_norm="none"``).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np

from patchfuse_jax import io

IR_NORMS = ("none", "minmax", "percentile")
LOW_RANGE = 0.05  # warn when an input spans less than this fraction of its dtype's range


@dataclasses.dataclass
class Prepared:
    """``ir``, ``vis``: ``float32 (B, H, W)`` in [0, 1] (``vis`` is luma Y); ``chroma``:
    ``float32 (B, 2, H, W)`` visible Cb/Cr for colour output, else None; ``single``: one pair."""

    ir: np.ndarray
    vis: np.ndarray
    chroma: np.ndarray | None
    single: bool


def _stack(x, name: str) -> np.ndarray:
    arrays = [np.asarray(a) for a in x]
    if not arrays:
        raise ValueError(f"fuse: {name} is an empty list")
    for i, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(
                f"fuse: {name}[{i}] has shape {a.shape} but {name}[0] has "
                f"{arrays[0].shape}; a batch needs equal shapes (fuse them one by one)"
            )
        if a.ndim not in (2, 3) or (a.ndim == 3 and not 1 <= a.shape[-1] <= 4):
            raise ValueError(f"fuse: {name}[{i}] must be (H, W) or (H, W, C) with C in 1-4; got {a.shape}")
    return np.stack(arrays)


def _is_one_image(a: np.ndarray) -> bool:
    return a.ndim == 2 or (a.ndim == 3 and 1 <= a.shape[-1] <= 4)


def _as_batch(x, name: str, single: bool) -> np.ndarray:
    """``(B, H, W)`` or ``(B, H, W, C)``."""
    if isinstance(x, (list, tuple)):
        if single:
            raise ValueError(f"fuse: {name} is a list (a batch) but ir is one image")
        return _stack(x, name)
    a = np.asarray(x)
    if single:
        if not _is_one_image(a):
            raise ValueError(
                f"fuse: ir is one image, so {name} must be (H, W) or (H, W, C) with C in 1-4; got {a.shape}"
            )
        return a[None]
    if a.ndim == 3 or (a.ndim == 4 and 1 <= a.shape[-1] <= 4):
        return a
    raise ValueError(
        f"fuse: {name} must be one image (H, W) / (H, W, C<=4) or a batch "
        f"(B, H, W) / (B, H, W, C<=4) / a list; got {a.shape}"
    )


def _warn_low_range(img: np.ndarray, name: str, hint: str = "") -> None:
    full = float(np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else 1.0
    lo, hi = float(img.min()), float(img.max())
    if (hi - lo) < LOW_RANGE * full:
        warnings.warn(
            f"{name}: values span {lo:g}..{hi:g}, under {LOW_RANGE:.0%} of the {img.dtype} range 0..{full:g}{hint}",
            stacklevel=4,
        )


def normalize_ir(ir: np.ndarray, mode: str, percentiles=(1.0, 99.0)) -> np.ndarray:
    """``ir`` float32 ``(H, W)`` in [0, 1] -> float32 in [0, 1] by ``mode`` (module docstring)."""
    if mode == "none":
        return ir
    if mode == "minmax":
        lo, hi = float(ir.min()), float(ir.max())
    else:
        lo, hi = (float(v) for v in np.percentile(ir, percentiles))
    if hi <= lo:  # a constant image: nothing to stretch
        return ir
    return np.clip((ir - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# Colour conversion runs in blocks of rows of about this many pixels, so that the float32
# temporaries stay in cache whatever the width (measured: docs/benchmarks.md).
BLOCK_PIXELS = 2**14


def _rows(width: int) -> int:
    return max(1, BLOCK_PIXELS // max(1, width))


# Full-range BT.601 (io.rgb_to_ycbcr / io.ycbcr_to_rgb) as float32 coefficients: Cb, Cr rows of
# the RGB -> YCbCr matrix and the chroma columns of its inverse.
_KR, _KB = io.BT601[0], io.BT601[2]
_TO_CB = (np.array([0.0, 0.0, 1.0]) - io.BT601) / (2.0 * (1.0 - _KB))
_TO_CR = (np.array([1.0, 0.0, 0.0]) - io.BT601) / (2.0 * (1.0 - _KR))
_CR_TO_R, _CB_TO_B = 2.0 * (1.0 - _KR), 2.0 * (1.0 - _KB)
_CB_TO_G, _CR_TO_G = -_KB * _CB_TO_B / io.BT601[1], -_KR * _CR_TO_R / io.BT601[1]


def _chroma(rgb: np.ndarray, name: str) -> np.ndarray:
    """``(H, W, 3)`` RGB (uint8/uint16/float) -> float32 ``(2, H, W)`` BT.601 Cb, Cr
    (``io.rgb_to_ycbcr`` in float32 arithmetic: within 1e-6 of it)."""
    out = np.empty((2,) + rgb.shape[:2], np.float32)
    rows = _rows(rgb.shape[1])
    for r in range(0, rgb.shape[0], rows):
        block = rgb[r : r + rows]
        unit = io.to_unit_float(block.astype(np.float32) if block.dtype.kind == "f" else block, name=name)
        planes = unit[..., 0], unit[..., 1], unit[..., 2]
        for k, coeffs in enumerate((_TO_CB, _TO_CR)):
            dst = out[k, r : r + rows]
            np.multiply(planes[0], np.float32(coeffs[0]), out=dst)
            dst += planes[1] * np.float32(coeffs[1])
            dst += planes[2] * np.float32(coeffs[2])
    return out


def to_rgb(y: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Fused luma ``(..., H, W)`` + Cb/Cr ``(..., 2, H, W)`` -> float32 RGB ``(..., H, W, 3)`` in
    [0, 1] (``io.ycbcr_to_rgb`` in float32 arithmetic, clipped; within 1e-6 of it)."""
    y = np.asarray(y, np.float32)
    out = np.empty(y.shape + (3,), np.float32)
    images = y.reshape(-1, *y.shape[-2:]), chroma.reshape(-1, *chroma.shape[-3:]), out.reshape(-1, *out.shape[-3:])
    rows = _rows(y.shape[-1])
    for (yi, ci, oi), r in itertools.product(zip(*images), range(0, y.shape[-2], rows)):
        yb, cb, cr = yi[r : r + rows], ci[0, r : r + rows], ci[1, r : r + rows]
        dst = oi[r : r + rows]
        np.add(yb, cr * np.float32(_CR_TO_R), out=dst[..., 0])
        g = yb + cb * np.float32(_CB_TO_G)
        np.add(g, cr * np.float32(_CR_TO_G), out=dst[..., 1])
        np.add(yb, cb * np.float32(_CB_TO_B), out=dst[..., 2])
        np.clip(dst, 0.0, 1.0, out=dst)
    return out


def _check_options(ir_norm: str, percentiles) -> None:
    if ir_norm not in IR_NORMS:
        raise ValueError(f"fuse: ir_norm={ir_norm!r}: expected one of {', '.join(IR_NORMS)}")
    p = tuple(float(v) for v in percentiles)
    if len(p) != 2 or not 0.0 <= p[0] < p[1] <= 100.0:
        raise ValueError(f"fuse: percentiles={percentiles!r}: expected (low, high) with 0 <= low < high <= 100")


def prepare(ir, vis, *, color: bool = False, ir_norm: str = "none", percentiles=(1.0, 99.0)) -> Prepared:
    """Checks and converts one pair or a batch (module docstring). ``color``: keep the visible
    Cb/Cr when ``vis`` has colour channels (3 or 4)."""
    _check_options(ir_norm, percentiles)
    single = not isinstance(ir, (list, tuple)) and _is_one_image(np.asarray(ir))
    irs, viss = _as_batch(ir, "ir", single), _as_batch(vis, "vis", single)
    if len(irs) != len(viss):
        raise ValueError(f"fuse: {len(irs)} IR images but {len(viss)} visible images")
    if irs.shape[1:3] != viss.shape[1:3]:
        where = "" if single else f" (batch of {len(irs)})"
        raise ValueError(f"fuse: ir and vis differ in size: ir {irs.shape[1:3]} vs vis {viss.shape[1:3]}{where}")
    if min(irs.shape[1:3]) < 1 or len(irs) == 0:
        raise ValueError(f"fuse: empty input: ir {irs.shape}, vis {viss.shape}")
    keep_color = color and viss.ndim == 4 and viss.shape[-1] in (3, 4)
    out_ir, out_vis, chroma = [], [], []
    for i, (a, b) in enumerate(zip(irs, viss)):
        tag = "" if single else f"[{i}]"
        g = io.to_gray(a, name=f"ir{tag}")
        u = io.to_unit_float(g.astype(np.float32) if g.dtype.kind == "f" else g, name=f"ir{tag}")
        if ir_norm == "none":
            _warn_low_range(
                g,
                f"ir{tag}",
                "; 14-bit counts in a 16-bit file? pass ir_norm='minmax' or 'percentile' (CLI: --ir_norm)",
            )
        out_ir.append(normalize_ir(u, ir_norm, percentiles))
        y = io.to_gray(b, name=f"vis{tag}")
        out_vis.append(io.to_unit_float(y.astype(np.float32) if y.dtype.kind == "f" else y, name=f"vis{tag}"))
        _warn_low_range(y, f"vis{tag}")
        if keep_color:
            chroma.append(_chroma(b[..., :3], f"vis{tag}"))
    return Prepared(np.stack(out_ir), np.stack(out_vis), np.stack(chroma) if keep_color else None, single)
