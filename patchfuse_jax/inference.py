"""The library call: ``fuse(params, ir, vis)`` and ``load_checkpoint(workdir)``.

Input layouts (numpy or jax arrays; uint8, uint16, or float in [0, 1]):

* one pair: ``ir (H, W)`` or ``(H, W, 1)``; ``vis (H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` (RGB is
  converted to BT.601 luma Y);
* a batch: ``ir (B, H, W)`` or ``(B, H, W, 1)``; ``vis`` with the same leading dims, last dim
  1 or 3 allowed as above.

A 3-D ``ir`` whose last dim is 1 is one pair; any other 3-D ``ir`` is a batch of gray images.
Output: float32 numpy in [0, 1], ``(H, W)`` for one pair, ``(B, H, W)`` for a batch. Any H x W:
inputs are reflect-padded to a multiple of ``2**num_downs`` (as the generator itself would) and
cropped back, so there is one compilation per (architecture, padded shape).
"""
from __future__ import annotations

import functools
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from patchfuse_jax import io
from patchfuse_jax.checkpoint import CheckpointError, Checkpoints
from patchfuse_jax.models import Generator


@flax.struct.dataclass
class FuseParams:
    """What ``fuse`` needs: the generator's variables and its architecture."""
    variables: Any
    num_downs: int = flax.struct.field(pytree_node=False, default=8)
    ngf: int = flax.struct.field(pytree_node=False, default=64)
    norm: str = flax.struct.field(pytree_node=False, default="batch")
    step: int = flax.struct.field(pytree_node=False, default=0)


@functools.lru_cache(maxsize=None)
def generator_fn(num_downs: int, ngf: int, norm: str):
    """Jitted eval-mode generator ``(variables, x (B, H, W, 2)) -> (B, H, W, 1)`` (cached)."""
    model = Generator(num_downs=num_downs, ngf=ngf, norm=norm)
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def load_checkpoint(workdir: str | os.PathLike, step: int | None = None) -> FuseParams:
    """Generator variables of the latest (or given) checkpoint in ``workdir``."""
    workdir = os.fspath(workdir)
    ckpts = Checkpoints(workdir, read_only=True)
    step = ckpts.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{workdir}: holds no checkpoint")
    cfg = ckpts.config_dict(step)
    raw = ckpts.restore_raw(step)
    g = raw["g"]
    variables = {"params": g["params"], "batch_stats": g.get("batch_stats") or {}}
    return FuseParams(variables=jax.device_put(variables), num_downs=int(cfg["num_downs"]),
                      ngf=int(cfg["ngf"]), norm=str(cfg["norm"]), step=int(step))


def _as_unit(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "f" and x.dtype != np.float32:
        x = x.astype(np.float32)
    return io.to_unit_float(x, name=name)


def _split_layout(ir, vis) -> tuple[np.ndarray, np.ndarray, bool]:
    """Returns ``ir, vis`` as ``(B, H, W)`` float32 and whether the input was a single pair."""
    ir, vis = np.asarray(ir), np.asarray(vis)
    if ir.ndim == 2 or (ir.ndim == 3 and ir.shape[-1] == 1):
        single = True
        ir = ir.reshape(ir.shape[:2])[None]
        vis = vis[None]
    elif ir.ndim in (3, 4):
        single = False
        if ir.ndim == 4:
            if ir.shape[-1] != 1:
                raise ValueError(f"fuse: ir batch must be (B, H, W) or (B, H, W, 1), got {ir.shape}")
            ir = ir[..., 0]
    else:
        raise ValueError(f"fuse: ir must be (H, W), (H, W, 1), (B, H, W) or (B, H, W, 1); got {ir.shape}")
    if vis.ndim == 4:
        if vis.shape[-1] not in (1, 3):
            raise ValueError(f"fuse: vis must have 1 or 3 channels, got shape {vis.shape}")
        if vis.shape[-1] == 3:
            vis = np.stack([io.to_gray(v, name="vis") for v in vis])
        else:
            vis = vis[..., 0]
    if vis.shape != ir.shape:
        raise ValueError(f"fuse: ir and vis differ in size: ir {ir.shape[1:]} vs vis {vis.shape[1:]}"
                         + ("" if single else f" (batch of {ir.shape[0]})"))
    return _as_unit(ir, "ir"), _as_unit(vis, "vis"), single


def fuse(params: FuseParams, ir, vis) -> np.ndarray:
    """Fuses one pair or a batch; returns float32 in [0, 1] (layout: see module docstring)."""
    if not isinstance(params, FuseParams):
        raise TypeError("fuse: params must come from patchfuse_jax.load_checkpoint(workdir)")
    if isinstance(ir, jax.Array) or isinstance(vis, jax.Array):
        ir, vis = np.asarray(ir), np.asarray(vis)
    ir, vis, single = _split_layout(ir, vis)
    x = np.stack([ir, vis], axis=-1)
    # Pad here exactly as the generator would (reflect, bottom/right, to a multiple of
    # 2**num_downs): same result, but one compilation per *padded* shape, e.g. at most 4 for all
    # 218 RoadScene sizes with num_downs=8.
    b, h, w, _ = x.shape
    m = 2 ** params.num_downs
    x = np.pad(x, ((0, 0), (0, (-h) % m), (0, (-w) % m), (0, 0)), mode="reflect")
    out = np.asarray(generator_fn(params.num_downs, params.ngf, params.norm)(params.variables, x))
    out = out[:, :h, :w, 0]
    return out[0] if single else out
