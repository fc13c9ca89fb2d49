"""The library call ``fuse(params, ir, vis)``: one pair or a batch, any size, through the generator.

Inputs: one pair or a batch; gray, gray stored as RGB, RGB, RGBA; uint8, uint16 or float in
[0, 1]; numpy or jax arrays or lists (rules: ``patchfuse_jax.fusing.layouts``). Output: float32 numpy in
[0, 1], ``(H, W)`` / ``(B, H, W)``, or RGB with ``color=True``. Any H x W: inputs are
reflect-padded to a multiple of ``2**num_downs`` (as the generator itself would) and cropped
back, so there is one compilation per (architecture, BatchNorm mode, padded shape). Images too
large for memory: ``tile=`` (``patchfuse_jax.fusing.tiling``).

BatchNorm at inference (``bn``): ``"image"`` (default, ``DEFAULT_BN``) normalises every image
with its own statistics (train-mode BatchNorm on a batch of one, as pix2pix does at test time and
as the paper's batch-1 training sees it); each image of a batch is computed on its own, so its
result does not depend on the others. ``"running"`` normalises with the running statistics saved
in training (eval-mode BatchNorm). On RoadScene with a batch-1 BatchNorm model, ``"image"`` was
better on validation (docs/inference.md), hence the default. Models trained with ``norm=instance``
have no BatchNorm and give the same result for both.

Where ``FuseParams`` come from (``load_checkpoint``, ``pretrained``, exports):
``patchfuse_jax.fusing.saved``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from patchfuse_jax.fusing import layouts, tiling
from patchfuse_jax.fusing.saved import BN_MODES, DEFAULT_BN, FuseParams
from patchfuse_jax.nn.arch import GeneratorArch
from patchfuse_jax.nn.convs import inference_compiler_options

BACKENDS = ("xla", "onnxruntime")


def _bn_mode(bn: str, arch: GeneratorArch) -> str:
    if bn not in BN_MODES:
        raise ValueError(
            f"fuse: bn={bn!r}: expected 'running' (BatchNorm with the statistics saved "
            "in training) or 'image' (each image's own statistics, as pix2pix at test time)"
        )
    return bn if arch.norm == "batch" else "running"  # no BatchNorm: one program for both


@functools.lru_cache(maxsize=None)
def _generator_fn(arch: GeneratorArch, bn: str):
    model = arch.generator()
    options = inference_compiler_options(model.impl)
    if bn == "running":
        return jax.jit(lambda variables, x: model.apply(variables, x, train=False), compiler_options=options)

    def one(variables, x):  # train-mode BatchNorm on a batch of one image: its own statistics
        y, _ = model.apply(variables, x[None], train=True, mutable=["batch_stats"])
        return y[0]

    return jax.jit(jax.vmap(one, in_axes=(None, 0)), compiler_options=options)


def generator_fn(arch: GeneratorArch, bn: str = DEFAULT_BN):
    """Jitted generator ``(variables, x (B, H, W, 2)) -> (B, H, W, 1)`` for the architecture
    ``arch`` and BatchNorm mode ``bn`` (see the module docstring); cached."""
    return _generator_fn(arch, _bn_mode(bn, arch))


def _run(fn, params: FuseParams, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Generator on ``ir``, ``vis`` ``float32 (B, H, W)`` -> ``float32 (B, H, W)``."""
    x = np.stack([ir, vis], axis=-1)
    # Pad here exactly as the generator would (reflect, bottom/right, to a multiple of
    # 2**num_downs): same result, but one compilation per *padded* shape, e.g. at most 4 for all
    # 218 RoadScene sizes with num_downs=8. (With bn="image" the statistics are those of the
    # padded image, as they would be inside the generator.)
    _, h, w, _ = x.shape
    m = params.arch.multiple
    x = np.pad(x, ((0, 0), (0, (-h) % m), (0, (-w) % m), (0, 0)), mode="reflect")
    return np.asarray(fn(params.variables, x))[:, :h, :w, 0]


def fuse(
    params: FuseParams,
    ir,
    vis,
    bn: str = DEFAULT_BN,
    *,
    color: bool = False,
    tile=None,
    overlap: int = 32,
    ir_norm: str = "none",
    percentiles=(1.0, 99.0),
    homography=None,
    backend: str = "xla",
) -> np.ndarray:
    """Fuses one pair or a batch (layouts, dtypes and ``ir_norm``: ``patchfuse_jax.fusing.layouts``).

    Returns float32 in [0, 1]: ``(H, W)`` for one pair, ``(B, H, W)`` for a batch; with
    ``color=True`` and a colour visible image, RGB ``(H, W, 3)`` / ``(B, H, W, 3)``: the model
    fuses the visible BT.601 luma Y (as trained) and the visible Cb/Cr are put back
    (full-range BT.601, ``io.ycbcr_to_rgb``, clipped to [0, 1]); a gray visible image gives a
    gray result. ``bn``: see the module docstring. ``tile=N`` (or ``(H, W)``, rounded up to a
    multiple of ``2**num_downs``) fuses overlapping tiles blended over ``overlap`` pixels
    (``patchfuse_jax.fusing.tiling``): memory bounded by the tile, result close to, not equal to, the
    untiled one. ``homography`` (3x3 array, vis -> IR, or a path to ``H.json`` from
    ``patchfuse align``): each visible image is first warped onto its IR image's grid (bilinear,
    0 outside the visible image; ``patchfuse_jax.fusing.align``), so ``vis`` may differ in size.
    ``backend``: ``"xla"`` (JAX, the reference) or ``"onnxruntime"`` (the same generator exported
    to ONNX and run by ONNX Runtime, ``fusing.onnx.generator_session``; equal to the XLA result
    within 1e-5, often faster on CPU; needs the ``[onnx]`` extra)."""
    if not isinstance(params, FuseParams):
        raise TypeError("fuse: params must come from patchfuse_jax.load_checkpoint(path) or patchfuse_jax.pretrained()")
    if backend not in BACKENDS:
        raise ValueError(f"fuse: backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    fn = generator_fn(params.arch, bn)  # checks bn first
    if backend == "onnxruntime":
        from patchfuse_jax.fusing.onnx import generator_session

        fn = generator_session(params, bn)
    return fuse_with(
        fn,
        params,
        ir,
        vis,
        color=color,
        tile=tile,
        overlap=overlap,
        ir_norm=ir_norm,
        percentiles=percentiles,
        homography=homography,
    )


def fuse_with(
    fn,
    params: FuseParams,
    ir,
    vis,
    *,
    color: bool = False,
    tile=None,
    overlap: int = 32,
    ir_norm: str = "none",
    percentiles=(1.0, 99.0),
    homography=None,
) -> np.ndarray:
    """``fuse`` with a given generator function ``fn`` (``generator_fn(arch, bn)`` or
    ``fusing.onnx.generator_session(params, bn, ...)``): the same inputs, options and result."""
    tile_hw = None if tile is None else tiling.check_tile(tile, overlap, params.arch.multiple)
    if isinstance(ir, jax.Array):
        ir = np.asarray(ir)
    if isinstance(vis, jax.Array):
        vis = np.asarray(vis)
    if homography is not None:
        from patchfuse_jax.fusing.align import warp_inputs

        vis = warp_inputs(ir, vis, homography)
    prep = layouts.prepare(ir, vis, color=color, ir_norm=ir_norm, percentiles=percentiles)
    if tile_hw is None:
        y = _run(fn, params, prep.ir, prep.vis)
    else:
        one = lambda a, b: _run(fn, params, a[None], b[None])[0]  # noqa: E731
        y = np.stack([tiling.fuse_tiled(one, a, b, tile_hw, overlap) for a, b in zip(prep.ir, prep.vis)])
    if prep.chroma is not None:
        y = layouts.to_rgb(y, prep.chroma)
    return y[0] if prep.single else y


__all__ = ["BACKENDS", "BN_MODES", "DEFAULT_BN", "fuse", "fuse_with", "generator_fn"]
