"""The generator's saved form: ``FuseParams`` in memory, loaded from a training workdir's
checkpoint or from a one-file export, written as an export, and the weights shipped in the
package (``pretrained``). Every path by which weights reach ``fuse`` goes through here and is
checked against the architecture (``check_variables``).

``load_checkpoint(path)`` reads only the generator (its parameters and BatchNorm statistics) of
a training workdir (the newest readable checkpoint, or ``step``), never the discriminators or the
optimiser states; or an export file. A damaged newest checkpoint is skipped with one warning.

``export_generator(workdir_or_params, out_path)`` writes the generator's variables (parameters
and BatchNorm statistics), its architecture and its provenance (step, the run's config) as one
msgpack file (``flax.serialization``; no pickle). ``load_export(path)`` / ``load_checkpoint(path)``
read it back, checking a checksum and every shape against the architecture. ``pretrained()``
loads ``patchfuse_jax/weights/default.msgpack`` when this install ships one.

File layout (a msgpack map, see ``docs/inference.md``)::

    format            "patchfuse_jax.generator"
    format_version    1
    arch              {num_downs, ngf, norm, upsample, ...}   Generator arguments
    step              int                                      training step of the weights
    config            {...}                                    the run's full config ({} if unknown)
    dtype             "float32" | "float16"                    how the float arrays are stored
    patchfuse_jax_version, created (UTC ISO time),
                      source (name of the workdir or file it was exported from)
    variables_sha256  hex sha256 of ``variables``
    variables         bytes: flax.serialization.msgpack_serialize({"params": ..., "batch_stats": ...})
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.resources
import json
import os
import warnings
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from patchfuse_jax.checkpoint import CheckpointError, Checkpoints, one_line, quiet_orbax
from patchfuse_jax.io import write_bytes_atomic
from patchfuse_jax.nn.arch import KEYS as ARCH_KEYS
from patchfuse_jax.nn.arch import GeneratorArch

FORMAT = "patchfuse_jax.generator"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
DEFAULT_WEIGHTS = "weights/default.msgpack"  # inside the package


class NoPretrainedWeights(CheckpointError):
    """This install ships no default weights."""


# --- In memory ------------------------------------------------------------------------------

# How ``fuse`` may normalise a BatchNorm generator (``patchfuse_jax.fusing.api``): with the
# running statistics saved in training, or with each image's own.
BN_MODES = ("running", "image")
DEFAULT_BN = "image"


@flax.struct.dataclass
class FuseParams:
    """What ``fuse`` needs: the generator's ``variables`` (``params``, ``batch_stats``) and its
    architecture ``arch`` (a static :class:`GeneratorArch`: one compiled program per value).

    ``step`` and ``config_json`` (the training run's config as JSON, ``""`` when unknown) are
    provenance only; ``config`` decodes the latter."""

    variables: Any
    arch: GeneratorArch = flax.struct.field(pytree_node=False, default=GeneratorArch())
    step: int = flax.struct.field(pytree_node=False, default=0)
    config_json: str = flax.struct.field(pytree_node=False, default="")

    @property
    def config(self) -> dict[str, Any]:
        """The training run's config dict (``{}`` when unknown)."""
        return json.loads(self.config_json) if self.config_json else {}


def make_fuse_params(variables, config: dict[str, Any], step: int = 0) -> FuseParams:
    """``FuseParams`` from generator variables and a (saved) config dict."""
    return FuseParams(
        variables=variables,
        arch=GeneratorArch.from_config(config),
        step=int(step),
        config_json=json.dumps(dict(config), sort_keys=True),
    )


# --- Checking variables against an architecture ------------------------------------------------


@functools.lru_cache(maxsize=None)
def _expected_shapes(arch: GeneratorArch) -> dict[str, tuple[int, ...]]:
    model, side = arch.generator(), arch.multiple
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, side, side, 2)), train=False))
    return {k: tuple(v.shape) for k, v in _flatten(abstract).items()}


def _flatten(tree, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_variables(variables, arch: GeneratorArch, source: str) -> None:
    """Raises CheckpointError (naming ``source``) unless ``variables`` has exactly the entries
    and shapes of ``arch.generator()``."""
    want = _expected_shapes(arch)
    have = {k: tuple(np.shape(v)) for k, v in _flatten(variables).items()}
    problems = [f"{k} missing" for k in want if k not in have]
    problems += [f"{k} unexpected" for k in have if k not in want]
    problems += [f"{k} has shape {have[k]}, expected {want[k]}" for k in want if k in have and have[k] != want[k]]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{source}: weights do not fit the generator architecture ({arch.describe()}): "
            f"{'; '.join(problems[:3])}{more}"
        )


def _float32(tree):
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x, np.float32) if np.asarray(x).dtype.kind == "f" else np.asarray(x), tree
    )


# --- Loading ---------------------------------------------------------------------------------


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
            unfinished = [
                n for n in os.listdir(ckpts.directory) if n.startswith(f"{int(step)}{ocp.step.TMP_DIR_SUFFIX}")
            ]
            why = f" (only the unfinished, half-written {unfinished[0]})" if unfinished else ""
            raise CheckpointError(
                f"{workdir}: no checkpoint for step {step}{why}; it has steps {', '.join(map(str, steps))}"
            )
        step = int(step)
        step_dir = ocp.step.standard_name_format().find_step(epath.Path(ckpts.directory), step).path
        where = f"{workdir}: checkpoint at step {step} ({step_dir})"
        try:
            cfg = ckpts.config_dict(step)
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types
            raise CheckpointError(f"{where} is corrupt or incomplete: cannot read its config ({one_line(e)})") from None
        handler = ocp.PyTreeCheckpointHandler()
        try:
            tree = handler.metadata(step_dir / "state").tree
            g = tree.get("g") if isinstance(tree, dict) else None
            if not isinstance(g, dict) or "params" not in g:
                raise CheckpointError(f"{where} holds no generator (state.g.params)")
            wanted = {"params": g["params"]}
            if g.get("batch_stats"):
                wanted["batch_stats"] = g["batch_stats"]
            item = {"g": jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted)}
            restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
            out = handler.restore(
                step_dir / "state",
                args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
            )
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{where} is corrupt or incomplete ({one_line(e)})") from None
        finally:
            handler.close()
    finally:
        ckpts.close()
    variables = {"params": out["g"]["params"], "batch_stats": out["g"].get("batch_stats") or {}}
    variables = _float32(variables)
    check_variables(variables, GeneratorArch.from_config(cfg), where)
    return make_fuse_params(jax.device_put(variables), cfg, step)


def load_checkpoint(path: str | os.PathLike, step: int | None = None) -> FuseParams:
    """The generator of a training workdir (latest checkpoint, or ``step``) or of an exported
    file (``export_generator``). Only the generator is read from a workdir. Raises
    CheckpointError naming ``path`` when it cannot be used."""
    path = os.fspath(path)
    if os.path.isfile(path):
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
            warnings.warn(
                f"{workdir}: checkpoint at step {damaged[0][0]} is damaged; loaded step {s} ({damaged[0][1]})",
                stacklevel=3,
            )
        return params
    raise CheckpointError(
        f"{workdir}: no readable checkpoint (damaged steps "
        f"{', '.join(str(s) for s, _ in damaged)}; newest: {damaged[0][1]})"
    )


# --- Export files ------------------------------------------------------------------------------


def _to_numpy(tree, dtype: str):
    def conv(x):
        x = np.asarray(jax.device_get(x))
        return x.astype(dtype) if x.dtype.kind == "f" else x

    return {
        k: (_to_numpy(v, dtype) if isinstance(v, dict) or hasattr(v, "items") else conv(v)) for k, v in tree.items()
    }


def export_bytes(params: FuseParams, *, dtype: str = "float32", source: str = "") -> bytes:
    """The export file's content for ``params`` (see the module docstring)."""
    from patchfuse_jax import __version__

    if dtype not in DTYPES:
        raise ValueError(f"--dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    variables = {"params": params.variables["params"], "batch_stats": params.variables.get("batch_stats") or {}}
    check_variables(variables, params.arch, source or "export")
    blob = serialization.msgpack_serialize(_to_numpy(variables, dtype))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": params.arch.as_dict(),
        "step": int(params.step),
        "config": params.config,
        "dtype": dtype,
        "patchfuse_jax_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "variables_sha256": hashlib.sha256(blob).hexdigest(),
        "variables": blob,
    }
    return serialization.msgpack_serialize(doc)


def export_generator(
    src, out_path: str | os.PathLike, *, step: int | None = None, dtype: str = "float32"
) -> dict[str, Any]:
    """Writes the generator of ``src`` (a workdir, an exported file or ``FuseParams``) to
    ``out_path`` as one file; ``step`` picks a checkpoint of a workdir (default: the latest).
    ``dtype="float16"`` halves the file (weights are cast back to float32 on loading).
    Returns the file's metadata (``read_export_metadata``). The file is written atomically."""
    if isinstance(src, FuseParams):
        if step is not None and int(step) != src.step:
            raise CheckpointError(f"export: the given FuseParams hold step {src.step}, not {step}")
        params, source = src, ""
    else:
        source = os.path.basename(os.path.normpath(os.path.abspath(os.fspath(src))))
        params = load_checkpoint(src, step)
    data = export_bytes(params, dtype=dtype, source=source)
    out_path = os.fspath(out_path)
    if os.path.isdir(out_path):
        raise CheckpointError(f"{out_path}: is a directory; --out needs a file name, e.g. model.msgpack")
    write_bytes_atomic(out_path, data)
    meta = _metadata(_unpack(data, out_path))
    meta["bytes"] = len(data)
    return meta


def _unpack(data: bytes, source: str) -> dict[str, Any]:
    """The file's top-level map, checked (format, version, checksum); ``variables`` still bytes."""
    hint = "not a patchfuse_jax export (expected a file written by `python -m patchfuse_jax export`)"
    try:
        doc = serialization.msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types on bad input
        raise CheckpointError(f"{source}: {hint}, or the file is truncated/corrupt ({one_line(e)})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{source}: {hint}")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: export format version {version!r} is newer than this "
            f"patchfuse_jax reads ({FORMAT_VERSION}); upgrade patchfuse_jax"
        )
    blob = doc.get("variables")
    if not isinstance(blob, bytes) or hashlib.sha256(blob).hexdigest() != doc.get("variables_sha256"):
        raise CheckpointError(f"{source}: export is corrupt (the weights' checksum does not match)")
    arch = doc.get("arch")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{source}: export is corrupt (no architecture)")
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        raise CheckpointError(
            f"{source}: export uses architecture options this patchfuse_jax does "
            f"not know ({', '.join(unknown)}); upgrade patchfuse_jax"
        )
    return doc


def _metadata(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "variables"}


def load_export_bytes(data: bytes, source: str = "<bytes>") -> FuseParams:
    """``FuseParams`` from the content of an export file (``source`` names it in errors)."""
    doc = _unpack(data, source)
    try:
        variables = serialization.msgpack_restore(doc["variables"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{source}: export is corrupt ({one_line(e)})") from None
    if not isinstance(variables, dict) or "params" not in variables:
        raise CheckpointError(f"{source}: export is corrupt (no params)")
    variables = _float32({"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}})
    arch = GeneratorArch.from_config(doc["arch"])
    check_variables(variables, arch, source)
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    return FuseParams(
        variables=jax.device_put(variables),
        arch=arch,
        step=int(doc.get("step", 0)),
        config_json=json.dumps(config, sort_keys=True) if config else "",
    )


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None


def load_export(path: str | os.PathLike) -> FuseParams:
    """``FuseParams`` from an exported file (``load_checkpoint`` calls this for files)."""
    path = os.fspath(path)
    return load_export_bytes(_read(path), path)


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """An export's metadata (format, arch, step, config, dtype, ...) without its weights."""
    path = os.fspath(path)
    return _metadata(_unpack(_read(path), path))


# Earlier shipped models, loadable by name (docs/MODEL.md): pretrained("v1").
VERSIONS = {"v1": "weights/v1.msgpack"}


def default_weights(version: str | None = None):
    """The packaged default weights, or those of an earlier ``version`` (an
    ``importlib.resources`` Traversable; may not exist)."""
    res = importlib.resources.files("patchfuse_jax")
    for part in (VERSIONS[version] if version else DEFAULT_WEIGHTS).split("/"):
        res = res / part
    return res


def pretrained(path: str | os.PathLike | None = None) -> FuseParams:
    """``FuseParams`` of the default weights shipped in the package
    (``patchfuse_jax/weights/default.msgpack``), of an earlier shipped model by name
    (``pretrained("v1")``: the model shipped until 2026-12-05, docs/MODEL.md), or of the exported
    file ``path``.

    Works offline from an editable or a wheel install. Raises ``NoPretrainedWeights`` (a
    CheckpointError) when this install ships no such weights."""
    version = None
    if path is not None:
        if os.fspath(path) not in VERSIONS:
            return load_export(path)
        version = os.fspath(path)
    res = default_weights(version)
    name = f"patchfuse_jax/{VERSIONS[version] if version else DEFAULT_WEIGHTS}"
    if not res.is_file():
        raise NoPretrainedWeights(
            f"no such weights are shipped in this install ({name} is missing): train a model and "
            "use load_checkpoint(workdir), or pass pretrained(path='model.msgpack') with a file "
            "made by `python -m patchfuse_jax export`"
        )
    return load_export_bytes(res.read_bytes(), name)


__all__ = [
    "BN_MODES",
    "DEFAULT_BN",
    "FORMAT",
    "FORMAT_VERSION",
    "FuseParams",
    "NoPretrainedWeights",
    "check_variables",
    "default_weights",
    "export_bytes",
    "export_generator",
    "load_checkpoint",
    "load_export",
    "load_export_bytes",
    "make_fuse_params",
    "pretrained",
    "read_export_metadata",
]
