"""Tiled inference for images too large to fuse at once (``fuse(..., tile=N, overlap=M)``).

The image is covered by equal ``th x tw`` tiles whose starts step by ``tile - overlap`` (the last
tile of a row/column ends at the image border, so every tile has the same shape and the
generator compiles once). Each tile is fused on its own; the outputs are blended with a
separable raised-cosine window that ramps over ``overlap`` pixels at each tile edge, i.e.
``out = sum_t w_t * y_t / sum_t w_t``. The window never reaches 0, so pixels seen by one tile only
(image borders) take that tile's value. Peak memory of the generator is that of one tile;
only the blended output and its weight sum are image-sized (two float32 arrays).

Tiles are not exact: a U-Net's receptive field spans the whole tile, and InstanceNorm or
``bn="image"`` statistics are per tile. Larger tiles and overlaps bring the result closer to the
untiled one; docs/inference.md reports the difference on a real image.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with at least
    ``overlap`` shared pixels between neighbours; ``[0]`` when ``size <= tile``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def ramp(length: int, overlap: int) -> np.ndarray:
    """1-D window of ``length``: raised cosine over the first and last ``overlap`` samples (values
    in (0, 1]), 1 in between. float64."""
    w = np.ones(length)
    n = min(overlap, length // 2)
    if n > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        w[:n] = r
        w[length - n :] = r[::-1]
    return w


def check_tile(tile, overlap: int, multiple: int) -> tuple[int, int]:
    """``tile`` (int or ``(th, tw)``) rounded up to a multiple of ``multiple`` (the generator's
    ``2**num_downs``); ValueError unless ``0 <= overlap < min(tile) / 2``."""
    sizes = (tile, tile) if np.ndim(tile) == 0 else tuple(tile)
    if len(sizes) != 2 or min(int(v) for v in sizes) < 1:
        raise ValueError(f"fuse: tile={tile!r}: expected a positive size N or (H, W)")
    th, tw = (-(-int(v) // multiple) * multiple for v in sizes)
    if not 0 <= int(overlap) < min(th, tw) / 2:
        raise ValueError(
            f"fuse: overlap={overlap!r} must be >= 0 and less than half the tile "
            f"({th}x{tw} after rounding up to a multiple of {multiple})"
        )
    return th, tw


def fuse_tiled(
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ir: np.ndarray,
    vis: np.ndarray,
    tile_hw: tuple[int, int],
    overlap: int,
) -> np.ndarray:
    """Blends ``run(ir_tile, vis_tile) -> fused_tile`` (all ``float32 (th, tw)``) over tiles of
    ``ir``/``vis`` (``float32 (H, W)``); returns ``float32 (H, W)``."""
    h, w = ir.shape
    th, tw = min(tile_hw[0], h), min(tile_hw[1], w)
    out = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    window = np.outer(ramp(th, overlap), ramp(tw, overlap)).astype(np.float32)
    for y0 in tile_starts(h, th, overlap):
        for x0 in tile_starts(w, tw, overlap):
            sl = np.s_[y0 : y0 + th, x0 : x0 + tw]
            out[sl] += window * run(ir[sl], vis[sl])
            weight[sl] += window
    return out / weight
