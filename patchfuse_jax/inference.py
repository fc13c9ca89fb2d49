"""The library call: ``fuse(params, ir, vis)``, ``load_checkpoint(path)`` and ``pretrained()``.

Inputs: one pair or a batch; gray, gray stored as RGB, RGB, RGBA; uint8, uint16 or float in
[0, 1]; numpy or jax arrays or lists (rules: ``patchfuse_jax.layouts``). Output: float32 numpy in
[0, 1], ``(H, W)`` / ``(B, H, W)``, or RGB with ``color=True``. Any H x W: inputs are
reflect-padded to a multiple of ``2**num_downs`` (as the generator itself would) and cropped
back, so there is one compilation per (architecture, BatchNorm mode, padded shape). Images too
large for memory: ``tile=`` (``patchfuse_jax.tiling``).

BatchNorm at inference (``bn``): ``"image"`` (default, ``DEFAULT_BN``) normalises every image
with its own statistics (train-mode BatchNorm on a batch of one, as pix2pix does at test time and
as the paper's batch-1 training sees it); each image of a batch is computed on its own, so its
result does not depend on the others. ``"running"`` normalises with the running statistics saved
in training (eval-mode BatchNorm). On RoadScene with a batch-1 BatchNorm model, ``"image"`` was
better on validation (docs/inference.md), hence the default. Models trained with ``norm=instance``
have no BatchNorm and give the same result for both.

``load_checkpoint`` reads only the generator (its parameters and BatchNorm statistics) of a
training workdir, not the discriminators or the optimiser states, or a file written by
``export_generator`` / ``python -m patchfuse_jax export`` (see ``patchfuse_jax.export`` and
``docs/inference.md``).
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from patchfuse_jax import layouts, tiling
from patchfuse_jax.checkpoint import quiet_orbax, CheckpointError, Checkpoints
from patchfuse_jax.config import generator_arch
from patchfuse_jax.convs import inference_compiler_options
from patchfuse_jax.models import Generator

BN_MODES = ("running", "image")
DEFAULT_BN = "image"


@flax.struct.dataclass
class FuseParams:
    """What ``fuse`` needs: the generator's variables and its architecture ``arch`` (sorted
    ``(key, value)`` pairs of ``Generator`` arguments, see ``config.GENERATOR_KEYS``).

    ``step`` and ``config_json`` (the training run's config as JSON, ``""`` when unknown) are
    provenance only; ``config`` decodes the latter."""
    variables: Any
    arch: tuple = flax.struct.field(pytree_node=False, default=())
    step: int = flax.struct.field(pytree_node=False, default=0)
    config_json: str = flax.struct.field(pytree_node=False, default="")

    @property
    def arch_dict(self) -> dict[str, Any]:
        return generator_arch(dict(self.arch))

    @property
    def num_downs(self) -> int:
        return int(self.arch_dict["num_downs"])

    @property
    def config(self) -> dict[str, Any]:
        """The training run's config dict (``{}`` when unknown)."""
        return json.loads(self.config_json) if self.config_json else {}


def make_fuse_params(variables, config: dict[str, Any], step: int = 0) -> FuseParams:
    """``FuseParams`` from generator variables and a (saved) config dict."""
    return FuseParams(variables=variables, arch=tuple(sorted(generator_arch(config).items())),
                      step=int(step), config_json=json.dumps(dict(config), sort_keys=True))


def _bn_mode(bn: str, arch: dict[str, Any]) -> str:
    if bn not in BN_MODES:
        raise ValueError(f"fuse: bn={bn!r}: expected 'running' (BatchNorm with the statistics saved "
                         "in training) or 'image' (each image's own statistics, as pix2pix at test time)")
    return bn if arch["norm"] == "batch" else "running"  # no BatchNorm: one program for both


@functools.lru_cache(maxsize=None)
def _generator_fn(arch: tuple, bn: str):
    model = Generator(**dict(arch))
    options = inference_compiler_options(model.impl)
    if bn == "running":
        return jax.jit(lambda variables, x: model.apply(variables, x, train=False),
                       compiler_options=options)

    def one(variables, x):  # train-mode BatchNorm on a batch of one image: its own statistics
        y, _ = model.apply(variables, x[None], train=True, mutable=["batch_stats"])
        return y[0]

    return jax.jit(jax.vmap(one, in_axes=(None, 0)), compiler_options=options)


def generator_fn(arch: dict[str, Any], bn: str = DEFAULT_BN):
    """Jitted generator ``(variables, x (B, H, W, 2)) -> (B, H, W, 1)`` for the architecture
    ``arch`` (a config dict) and BatchNorm mode ``bn`` (see the module docstring); cached."""
    arch = generator_arch(arch)
    return _generator_fn(tuple(sorted(arch.items())), _bn_mode(bn, arch))


# --- Checking variables against an architecture ------------------------------------------------

@functools.lru_cache(maxsize=None)
def _expected_shapes(arch: tuple) -> dict[str, tuple[int, ...]]:
    model = Generator(**dict(arch))
    side = 2 ** dict(arch)["num_downs"]
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, side, side, 2)),
                                                 train=False))
    return {k: tuple(v.shape) for k, v in _flatten(abstract).items()}


def _flatten(tree, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_variables(variables, arch: dict[str, Any], source: str) -> None:
    """Raises CheckpointError (naming ``source``) unless ``variables`` has exactly the entries
    and shapes of a ``Generator(**arch)``."""
    arch = generator_arch(arch)
    want = _expected_shapes(tuple(sorted(arch.items())))
    have = {k: tuple(np.shape(v)) for k, v in _flatten(variables).items()}
    problems = [f"{k} missing" for k in want if k not in have]
    problems += [f"{k} unexpected" for k in have if k not in want]
    problems += [f"{k} has shape {have[k]}, expected {want[k]}" for k in want
                 if k in have and have[k] != want[k]]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        desc = ", ".join(f"{k}={v}" for k, v in sorted(arch.items()))
        raise CheckpointError(f"{source}: weights do not fit the generator architecture ({desc}): "
                              f"{'; '.join(problems[:3])}{more}")


def _float32(tree):
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x, np.float32) if np.asarray(x).dtype.kind == "f" else np.asarray(x), tree)


# --- Loading ---------------------------------------------------------------------------------

def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _restore_generator(workdir: str, step: int | None) -> FuseParams:
    """Partial orbax restore of ``state.g.{params,batch_stats}`` (no other array is read)."""
    import orbax.checkpoint as ocp
    from etils import epath

    ckpts = Checkpoints(workdir, read_only=True)  # CheckpointError when there is no folder
    try:
        steps = sorted(ckpts.manager.all_steps())
        if not steps:
            raise CheckpointError(f"{workdir}: holds no checkpoint (in {ckpts.directory})")
        if step is None:
            step = steps[-1]
        elif int(step) not in steps:
            unfinished = [n for n in os.listdir(ckpts.directory)
                          if n.startswith(f"{int(step)}{ocp.step.TMP_DIR_SUFFIX}")]
            why = f" (only the unfinished, half-written {unfinished[0]})" if unfinished else ""
            raise CheckpointError(f"{workdir}: no checkpoint for step {step}{why}; it has steps "
                                  f"{', '.join(map(str, steps))}")
        step = int(step)
        step_dir = ocp.step.standard_name_format().find_step(epath.Path(ckpts.directory), step).path
        where = f"{workdir}: checkpoint at step {step} ({step_dir})"
        try:
            cfg = ckpts.config_dict(step)
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
            raise CheckpointError(f"{where} is corrupt or incomplete: cannot read its config "
                                  f"({_one_line(e)})") from None
        handler = ocp.PyTreeCheckpointHandler()
        try:
            tree = handler.metadata(step_dir / "state").tree
            g = tree.get("g") if isinstance(tree, dict) else None
            if not isinstance(g, dict) or "params" not in g:
                raise CheckpointError(f"{where} holds no generator (state.g.params)")
            wanted = {"params": g["params"]}
            if g.get("batch_stats"):
                wanted["batch_stats"] = g["batch_stats"]
            item = {"g": jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                                                wanted)}
            restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                                  item)
            out = handler.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{where} is corrupt or incomplete ({_one_line(e)})") from None
        finally:
            handler.close()
    finally:
        ckpts.close()
    variables = {"params": out["g"]["params"], "batch_stats": out["g"].get("batch_stats") or {}}
    variables = _float32(variables)
    check_variables(variables, generator_arch(cfg), where)
    return make_fuse_params(jax.device_put(variables), cfg, step)


def load_checkpoint(path: str | os.PathLike, step: int | None = None) -> FuseParams:
    """The generator of a training workdir (latest checkpoint, or ``step``) or of an exported
    file (``export_generator``). Only the generator is read from a workdir. Raises
    CheckpointError naming ``path`` when it cannot be used."""
    path = os.fspath(path)
    if os.path.isfile(path):
        from patchfuse_jax.export import load_export
        params = load_export(path)
        if step is not None and int(step) != params.step:
            raise CheckpointError(f"{path}: this export holds step {params.step} only, not step {step}")
        return params
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such workdir or exported file")
    with quiet_orbax():
        if step is not None:
            return _restore_generator(path, step)
        return _newest_readable_generator(path)


def _newest_readable_generator(workdir: str) -> FuseParams:
    """The generator of the newest readable checkpoint; damaged newer ones are skipped (never
    touched) with one warning naming them; CheckpointError when none is readable."""
    ckpts = Checkpoints(workdir, read_only=True)  # CheckpointError when there is no folder
    try:
        steps = sorted(ckpts.manager.all_steps(), reverse=True)
    finally:
        ckpts.close()
    if not steps:
        raise CheckpointError(f"{workdir}: holds no checkpoint (in {ckpts.directory})")
    damaged = []
    for s in steps:
        try:
            params = _restore_generator(workdir, s)
        except CheckpointError as e:
            if "corrupt or incomplete" not in str(e):
                raise
            damaged.append((s, str(e)))
            continue
        if damaged:
            warnings.warn(f"{workdir}: checkpoint at step {damaged[0][0]} is damaged; loaded step {s} "
                          f"({damaged[0][1]})", stacklevel=3)
        return params
    raise CheckpointError(f"{workdir}: no readable checkpoint (damaged steps "
                          f"{', '.join(str(s) for s, _ in damaged)}; newest: {damaged[0][1]})")


def pretrained(path: str | os.PathLike | None = None) -> FuseParams:
    """The default weights shipped with the package (``patchfuse_jax/weights/default.msgpack``),
    an earlier shipped model by name (``"v1"``), or the exported file ``path``. Raises
    CheckpointError when this install ships none (:func:`patchfuse_jax.export.pretrained`)."""
    from patchfuse_jax.export import pretrained as _pretrained
    return _pretrained(path)


def _run(fn, params: FuseParams, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Generator on ``ir``, ``vis`` ``float32 (B, H, W)`` -> ``float32 (B, H, W)``."""
    x = np.stack([ir, vis], axis=-1)
    # Pad here exactly as the generator would (reflect, bottom/right, to a multiple of
    # 2**num_downs): same result, but one compilation per *padded* shape, e.g. at most 4 for all
    # 218 RoadScene sizes with num_downs=8. (With bn="image" the statistics are those of the
    # padded image, as they would be inside the generator.)
    _, h, w, _ = x.shape
    m = 2 ** params.num_downs
    x = np.pad(x, ((0, 0), (0, (-h) % m), (0, (-w) % m), (0, 0)), mode="reflect")
    return np.asarray(fn(params.variables, x))[:, :h, :w, 0]


def fuse(params: FuseParams, ir, vis, bn: str = DEFAULT_BN, *, color: bool = False,
         tile=None, overlap: int = 32, ir_norm: str = "none",
         percentiles=(1.0, 99.0), homography=None) -> np.ndarray:
    """Fuses one pair or a batch (layouts, dtypes and ``ir_norm``: ``patchfuse_jax.layouts``).

    Returns float32 in [0, 1]: ``(H, W)`` for one pair, ``(B, H, W)`` for a batch; with
    ``color=True`` and a colour visible image, RGB ``(H, W, 3)`` / ``(B, H, W, 3)``: the model
    fuses the visible BT.601 luma Y (as trained) and the visible Cb/Cr are put back
    (full-range BT.601, ``io.ycbcr_to_rgb``, clipped to [0, 1]); a gray visible image gives a
    gray result. ``bn``: see the module docstring. ``tile=N`` (or ``(H, W)``, rounded up to a
    multiple of ``2**num_downs``) fuses overlapping tiles blended over ``overlap`` pixels
    (``patchfuse_jax.tiling``): memory bounded by the tile, result close to, not equal to, the
    untiled one. ``homography`` (3x3 array, vis -> IR, or a path to ``H.json`` from
    ``patchfuse align``): each visible image is first warped onto its IR image's grid (bilinear,
    0 outside the visible image; ``patchfuse_jax.align``), so ``vis`` may differ in size."""
    if not isinstance(params, FuseParams):
        raise TypeError("fuse: params must come from patchfuse_jax.load_checkpoint(path) or "
                        "patchfuse_jax.pretrained()")
    fn = generator_fn(params.arch_dict, bn)  # checks bn first
    tile_hw = None if tile is None else tiling.check_tile(tile, overlap, 2 ** params.num_downs)
    if isinstance(ir, jax.Array):
        ir = np.asarray(ir)
    if isinstance(vis, jax.Array):
        vis = np.asarray(vis)
    if homography is not None:
        from patchfuse_jax.align import warp_inputs
        vis = warp_inputs(ir, vis, homography)
    prep = layouts.prepare(ir, vis, color=color, ir_norm=ir_norm, percentiles=percentiles)
    if tile_hw is None:
        y = _run(fn, params, prep.ir, prep.vis)
    else:
        one = lambda a, b: _run(fn, params, a[None], b[None])[0]  # noqa: E731
        y = np.stack([tiling.fuse_tiled(one, a, b, tile_hw, overlap)
                      for a, b in zip(prep.ir, prep.vis)])
    if prep.chroma is not None:
        y = layouts.to_rgb(y, prep.chroma)
    return y[0] if prep.single else y
