"""Run configuration: one frozen dataclass, validated once; the flags of ``train.py`` mirror it.

Defaults are the paper's main setting (Section 4): weighted loss in D_ir and G (``dg``), average
pooling, lambda = 0.5, gamma = 0.1, Adam with learning rate 1e-4, 256x512 crops (the paper's
512x256 images), 65x65 PatchGAN patches.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from patchfuse_jax.models import CONV_IMPLS, DISCRIMINATOR_PRESETS, parse_discriminator_layers, receptive_field

WEIGHT_MODES = ("none", "d", "g", "dg")
NORMS = ("batch", "instance")
UPSAMPLES = ("transpose", "resize")
PARALLEL = ("none", "pmap")

# Changing any of these makes a checkpoint unusable (different parameter shapes/semantics).
ARCHITECTURE_KEYS = ("num_downs", "ngf", "ndf", "d_arch", "norm", "upsample", "input_skip")
# The Config fields that are ``Generator`` constructor arguments (its architecture). A saved
# config without one of them (older runs) means the Generator's default for it.
GENERATOR_KEYS = ("num_downs", "ngf", "norm", "upsample", "input_skip")


class ConfigError(ValueError):
    """A flag has a value that cannot be used; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Config:
    # Model.
    num_downs: int = 8            # U-Net depth: 2**num_downs must divide the padded input
    ngf: int = 64                 # generator width (features of the first conv)
    ndf: int = 64                 # discriminator width
    d_arch: str = "paper65"       # preset name or '4s2,4s2,...' (kernel s stride per conv)
    norm: str = "batch"           # batch (paper) | instance
    upsample: str = "transpose"   # decoder upsampling: transpose (pix2pix 4x4 stride-2) | resize
    input_skip: bool = False      # generator: full-resolution input skip into a final 3x3 conv
    conv_impl: str = "auto"       # auto | xla | fast: formulation of the upsampling conv (same function)
    compute_dtype: str = "float32"  # float32 | bfloat16 activations/convs; params, Adam, losses
    #                                 and BatchNorm statistics stay float32
    # Loss (Eq. 2-8).
    weight_mode: str = "dg"       # where W is used: none | d (D_ir, Eq. 2) | g (G, Eq. 7) | dg (both)
    weight_pooling: str = "avg"   # avg | max | none (all ones)
    weight_scale: str = "raw"     # raw pooled [0,1] intensities | mean1 (each map divided by its mean)
    gamma: float = 0.1            # weight of L_adv_ir (Eq. 6)
    lam: float = 0.5              # lambda, weight of L_adv_vis (Eq. 6)
    ssim_weight: float = 1.0      # weight of L_ssim in Eq. 6 (the paper: 1)
    mse_weight: float = 1.0       # weight of L_mse in Eq. 6 (the paper: 1)
    # Initialisation: flax (LeCun normal convs) | pix2pix (convs N(0, 0.02), norm scales N(1, 0.02)).
    init: str = "flax"
    # Optimiser (the same Adam for all three networks).
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # constant | linear (pix2pix: constant, then linear to 0 over
    #                               the second half) | cosine (to 0 at num_steps)
    adam_b1: float = 0.5          # pix2pix's beta1; the paper does not state it
    adam_b2: float = 0.999
    # Data.
    data_dir: str = "synthetic"   # a pair folder DIR/{ir,vis} or 'synthetic'
    train_split: str = ""         # file of stems to train on ('' = every pair in data_dir)
    crop_size: tuple[int, int] = (256, 512)   # H, W of random training crops
    batch_size: int = 1           # global batch size
    synthetic_size: tuple[int, int] = (128, 128)
    synthetic_pairs: int = 64
    # Loop.
    num_steps: int = 10000
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    sample_every: int = 500
    keep_checkpoints: int = 3
    # Evaluation during training (validation/Validator): every eval_every steps (0 = off) on the
    # pairs of data_dir listed in eval_split; the best step is exported to WORKDIR/best.msgpack.
    eval_every: int = 0
    eval_split: str = ""
    # Parallelism (see docs/parallel.md).
    parallel: str = "none"        # none | pmap
    per_device_batch_size: int = 0  # pmap: images per device (0 = batch_size / device count)

    def __post_init__(self):
        def need(cond, flag, msg):
            if not cond:
                raise ConfigError(f"--{flag}={getattr(self, flag)!r}: {msg}")

        for name, choices in (("weight_mode", WEIGHT_MODES), ("norm", NORMS), ("parallel", PARALLEL),
                              ("upsample", UPSAMPLES), ("conv_impl", CONV_IMPLS),
                              ("init", ("flax", "pix2pix")),
                              ("compute_dtype", ("float32", "bfloat16")),
                              ("lr_schedule", ("constant", "linear", "cosine")),
                              ("weight_pooling", ("avg", "max", "none")),
                              ("weight_scale", ("raw", "mean1"))):
            need(getattr(self, name) in choices, name, f"expected one of {', '.join(choices)}")
        try:
            parse_discriminator_layers(self.d_arch)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name in ("num_downs", "ngf", "ndf", "batch_size", "num_steps", "log_every",
                     "checkpoint_every", "sample_every", "keep_checkpoints", "synthetic_pairs"):
            need(getattr(self, name) >= 1, name, "must be a positive integer")
        need(self.num_downs <= 10, "num_downs", "at most 10")
        for name in ("crop_size", "synthetic_size"):
            v = getattr(self, name)
            need(len(v) == 2 and all(int(x) >= 1 for x in v), name, "expected HxW with positive sizes")
        need(self.per_device_batch_size >= 0, "per_device_batch_size", "must be >= 0")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(self.gamma >= 0 and self.lam >= 0, "gamma", "gamma and lam must be >= 0")
        need(self.ssim_weight >= 0 and self.mse_weight >= 0, "ssim_weight",
             "ssim_weight and mse_weight must be >= 0")
        need(self.eval_every >= 0, "eval_every", "must be >= 0")
        need(not (self.eval_every and not self.eval_split), "eval_every",
             "needs --eval_split (a file of validation stems in --data_dir)")
        need(min(self.crop_size) >= 11, "crop_size", "must be at least 11x11 (SSIM window)")
        geom = receptive_field(self.d_layers)
        need(min(self.crop_size) >= geom.stride * 2, "crop_size",
             f"too small for the discriminator (output stride {geom.stride})")

    @property
    def d_layers(self) -> tuple[tuple[int, int], ...]:
        return parse_discriminator_layers(self.d_arch)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_size"] = list(self.crop_size)
        d["synthetic_size"] = list(self.synthetic_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("crop_size", "synthetic_size"):
            if k in kw:
                kw[k] = tuple(int(x) for x in kw[k])
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def parse_hw(text: str, flag: str) -> tuple[int, int]:
    """``'256x512'`` / ``'256,512'`` / ``'128'`` -> ``(H, W)``."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        hw = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--{flag}={text!r}: expected HxW, e.g. 256x512") from None
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) < 1:
        raise ConfigError(f"--{flag}={text!r}: expected HxW with positive sizes, e.g. 256x512")
    return hw


def generator_arch(saved: dict[str, Any]) -> dict[str, Any]:
    """``Generator(**generator_arch(config_dict))`` kwargs from a (saved) config dict; keys an
    older run did not record take the Config default (which is what those runs used)."""
    default = Config().to_dict()
    return {k: saved.get(k, default[k]) for k in GENERATOR_KEYS}


def architecture_mismatch(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Human-readable list of architecture keys that differ between a checkpoint and ``cfg``."""
    now, default = cfg.to_dict(), Config().to_dict()
    return [f"{k}: checkpoint {saved.get(k, default[k])!r} vs now {now[k]!r}"
            for k in ARCHITECTURE_KEYS if saved.get(k, default[k]) != now[k]]


__all__ = ["Config", "ConfigError", "DISCRIMINATOR_PRESETS", "GENERATOR_KEYS", "parse_hw",
           "architecture_mismatch", "generator_arch"]
