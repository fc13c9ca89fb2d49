"""patchfuse_jax: IR + visible image fusion with dual PatchGAN discriminators (JAX/Flax).

Library entry points::

    from patchfuse_jax import fuse, load_checkpoint, pretrained
    params = load_checkpoint("runs/demo")   # a workdir or an exported .msgpack file
    params = pretrained()                   # the weights shipped in the package, if any
    fused = fuse(params, ir, vis)           # float32 in [0, 1]; per-image BatchNorm (bn="image")

Command line: ``python -m patchfuse_jax export --workdir=W --out=model.msgpack`` (or ``patchfuse``).
"""

__version__ = "0.1.0"

_LAZY = {
    "fuse": "fusing.api",
    "load_checkpoint": "fusing.saved",
    "FuseParams": "fusing.saved",
    "pretrained": "fusing.saved",
    "export_generator": "fusing.saved",
    "CheckpointError": "checkpoint",
}


def __getattr__(name):  # lazy: `import patchfuse_jax` does not import jax
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["fuse", "load_checkpoint", "pretrained", "export_generator", "FuseParams", "CheckpointError"]
