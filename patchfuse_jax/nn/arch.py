"""``GeneratorArch``: the generator's architecture, one frozen (hashable) value.

It is what a checkpoint's config, an export file and ``FuseParams`` record of the generator,
what ``fuse`` compiles one program per, and what ``Generator`` is built from. Keys an older run
did not record take the defaults below, which are the paper's (and what those runs used).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class GeneratorArch:
    """``Generator`` arguments that change its parameters or its function (``impl`` does not:
    every conv formulation computes the same function)."""

    num_downs: int = 8  # U-Net depth; inputs are padded to a multiple of 2**num_downs
    ngf: int = 64  # features of the first conv
    norm: str = "batch"  # batch (paper) | instance
    upsample: str = "transpose"  # transpose (pix2pix) | resize (nearest + 3x3 conv)
    input_skip: bool = False  # full-resolution skip of the input into a final 3x3 conv
    output: str = "direct"  # direct (paper) | residual_average

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | "GeneratorArch") -> "GeneratorArch":
        """The architecture in a (saved) config dict or an export's ``arch`` map; other keys are
        ignored, missing ones take the defaults."""
        if isinstance(config, GeneratorArch):
            return config
        return cls(**{k: config[k] for k in KEYS if k in config})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (``2**num_downs``)."""
        return 2**self.num_downs

    def describe(self) -> str:
        """``"input_skip=False, ngf=64, ..."``: sorted ``key=value`` pairs, for messages."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.as_dict().items()))

    def generator(self, **kwargs):
        """``Generator`` of this architecture; ``kwargs``: ``impl``, ``axis_name``, ``dtype``."""
        from patchfuse_jax.nn.models import Generator

        return Generator(**self.as_dict(), **kwargs)


KEYS = tuple(f.name for f in dataclasses.fields(GeneratorArch))

__all__ = ["GeneratorArch", "KEYS"]
