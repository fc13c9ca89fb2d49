"""One-file generator exports and the package's default weights.

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
import hashlib
import json
import importlib.resources
import os
from typing import Any

import jax
import numpy as np
from flax import serialization

from patchfuse_jax.checkpoint import CheckpointError
from patchfuse_jax.io import write_bytes_atomic
from patchfuse_jax.config import GENERATOR_KEYS, generator_arch
from patchfuse_jax.inference import (FuseParams, _float32, _one_line, check_variables,
                                     load_checkpoint)

FORMAT = "patchfuse_jax.generator"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
DEFAULT_WEIGHTS = "weights/default.msgpack"  # inside the package


class NoPretrainedWeights(CheckpointError):
    """This install ships no default weights."""


def _to_numpy(tree, dtype: str):
    def conv(x):
        x = np.asarray(jax.device_get(x))
        return x.astype(dtype) if x.dtype.kind == "f" else x
    return {k: (_to_numpy(v, dtype) if isinstance(v, dict) or hasattr(v, "items") else conv(v))
            for k, v in tree.items()}


def export_bytes(params: FuseParams, *, dtype: str = "float32", source: str = "") -> bytes:
    """The export file's content for ``params`` (see the module docstring)."""
    from patchfuse_jax import __version__

    if dtype not in DTYPES:
        raise ValueError(f"--dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    variables = {"params": params.variables["params"],
                 "batch_stats": params.variables.get("batch_stats") or {}}
    check_variables(variables, params.arch_dict, source or "export")
    blob = serialization.msgpack_serialize(_to_numpy(variables, dtype))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": params.arch_dict,
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


def export_generator(src, out_path: str | os.PathLike, *, step: int | None = None,
                     dtype: str = "float32") -> dict[str, Any]:
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
        raise CheckpointError(f"{source}: {hint}, or the file is truncated/corrupt "
                              f"({_one_line(e)})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{source}: {hint}")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{source}: export format version {version!r} is newer than this "
                              f"patchfuse_jax reads ({FORMAT_VERSION}); upgrade patchfuse_jax")
    blob = doc.get("variables")
    if not isinstance(blob, bytes) or hashlib.sha256(blob).hexdigest() != doc.get("variables_sha256"):
        raise CheckpointError(f"{source}: export is corrupt (the weights' checksum does not match)")
    arch = doc.get("arch")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{source}: export is corrupt (no architecture)")
    unknown = sorted(set(arch) - set(GENERATOR_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: export uses architecture options this patchfuse_jax does "
                              f"not know ({', '.join(unknown)}); upgrade patchfuse_jax")
    return doc


def _metadata(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "variables"}


def load_export_bytes(data: bytes, source: str = "<bytes>") -> FuseParams:
    """``FuseParams`` from the content of an export file (``source`` names it in errors)."""
    doc = _unpack(data, source)
    try:
        variables = serialization.msgpack_restore(doc["variables"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{source}: export is corrupt ({_one_line(e)})") from None
    if not isinstance(variables, dict) or "params" not in variables:
        raise CheckpointError(f"{source}: export is corrupt (no params)")
    variables = _float32({"params": variables["params"],
                          "batch_stats": variables.get("batch_stats") or {}})
    arch = generator_arch(doc["arch"])
    check_variables(variables, arch, source)
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    return FuseParams(variables=jax.device_put(variables), arch=tuple(sorted(arch.items())),
                      step=int(doc.get("step", 0)),
                      config_json=json.dumps(config, sort_keys=True) if config else "")


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
            "made by `python -m patchfuse_jax export`")
    return load_export_bytes(res.read_bytes(), name)


__all__ = ["FORMAT", "FORMAT_VERSION", "NoPretrainedWeights", "default_weights", "export_bytes",
           "export_generator", "load_export", "load_export_bytes", "pretrained",
           "read_export_metadata"]
