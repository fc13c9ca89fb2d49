"""Run configuration: one frozen dataclass, validated once; ``train.py``'s flags are generated
from it (``define_flags`` / ``config_from_flags``).

Defaults are the paper's main setting (Section 4): weighted loss in D_ir and G (``dg``), average
pooling, lambda = 0.5, gamma = 0.1, Adam with learning rate 1e-4, 256x512 crops (the paper's
512x256 images), 65x65 PatchGAN patches.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from absl import flags

from patchfuse_jax.nn.arch import GeneratorArch
from patchfuse_jax.nn.convs import CONV_IMPLS
from patchfuse_jax.nn.models import DISCRIMINATOR_PRESETS, parse_discriminator_layers, receptive_field

WEIGHT_MODES = ("none", "d", "g", "dg")
NORMS = ("batch", "instance")
UPSAMPLES = ("transpose", "resize")
OUTPUTS = ("direct", "residual_average")
PARALLEL = ("none", "pmap")

# Changing any of these makes a checkpoint unusable (different parameter shapes/semantics).
ARCHITECTURE_KEYS = ("num_downs", "ngf", "ndf", "d_arch", "norm", "upsample", "input_skip", "output")
# Keys a run may change when it resumes a workdir (the resume guard, trainer.check_config_change,
# ignores them); a change of any other key stops the run unless --allow_config_change:
# - num_steps: how far to train. Not ignored with a linear/cosine --lr_schedule, whose learning
#   rate at every step depends on num_steps.
# - log_every, checkpoint_every, sample_every, keep_checkpoints: outputs, not the training.
# - eval_every, eval_split: validation only (a best.json made on another split is restarted).
# - conv_impl: speed only; every choice computes the same function.
# - batch_size, parallel, per_device_batch_size: compared through the global batch they give
#   (config.json records it as "global_batch"), which must stay the same: N devices x B images
#   train as one device with N*B.
# Architecture keys (ARCHITECTURE_KEYS) are refused even with --allow_config_change.
RESUME_SAFE_KEYS = (
    "num_steps",
    "log_every",
    "checkpoint_every",
    "sample_every",
    "keep_checkpoints",
    "eval_every",
    "eval_split",
    "selection",
    "conv_impl",
    "batch_size",
    "parallel",
    "per_device_batch_size",
)
HW_KEYS = ("crop_size", "synthetic_size")  # tuples (H, W); flags take "HxW"


class ConfigError(ValueError):
    """A flag has a value that cannot be used; the message names the flag."""


class ConfigChangeError(ConfigError):
    """A workdir is resumed with flags that change what is trained; the message lists them."""


def _field(default, help: str):
    """A Config field with its flag's help text (``define_flags`` reads it)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Config:
    """Every training option. Each field is a ``train.py`` flag of the same name, default and help
    (``define_flags``): adding a field here is all it takes to add a flag."""

    # Model.
    num_downs: int = _field(8, "U-Net depth (number of stride-2 levels); 2**num_downs must divide the padded input.")
    ngf: int = _field(64, "Generator width (features of the first conv).")
    ndf: int = _field(64, "Discriminator width.")
    d_arch: str = _field(
        "paper65", "PatchGAN layers: pix2pix70 | paper65 | e.g. '4s2,4s2,4s2,4s1,4s1' (kernel s stride per conv)."
    )
    norm: str = _field("batch", "batch (paper) | instance.")
    upsample: str = _field(
        "transpose", "Decoder upsampling: transpose (pix2pix 4x4 stride-2) | resize (nearest + 3x3 conv)."
    )
    input_skip: bool = _field(
        False,
        "Generator: concatenate the full-resolution input to the last "
        "decoder features, then a 3x3 conv (not in the paper).",
    )
    output: str = _field(
        "direct",
        "Generator output: direct (sigmoid of the last layer, the paper) | "
        "residual_average (a learnt correction of the pixel average of "
        "the sources, starting at exactly the average; not in the paper).",
    )
    conv_impl: str = _field(
        "auto",
        "Conv formulation (patchfuse_jax/nn/convs.py): auto (fast on CPU, "
        "xla elsewhere) | fast | xla. Same function, speed only.",
    )
    compute_dtype: str = _field(
        "float32",
        "float32 | bfloat16 activations/convs (mixed precision: params, Adam state, losses, BN stats stay float32).",
    )
    # Loss (Eq. 2-8).
    weight_mode: str = _field(
        "dg", "Where the IR weight map W is used: none | d (D_ir, Eq. 2) | g (G, Eq. 7) | dg (both)."
    )
    weight_pooling: str = _field("avg", "IR weight map pooling: avg | max | none (all ones).")
    weight_scale: str = _field("raw", "raw (pooled [0,1] intensities) | mean1 (each weight map divided by its mean).")
    gamma: float = _field(0.1, "Weight of the IR adversarial loss L_adv_ir (Eq. 6).")
    lam: float = _field(0.5, "lambda: weight of the visible adversarial loss L_adv_vis (Eq. 6).")
    ssim_weight: float = _field(1.0, "Weight of L_ssim in Eq. 6 (paper: 1).")
    mse_weight: float = _field(1.0, "Weight of L_mse in Eq. 6 (paper: 1).")
    detail_weight: float = _field(
        0.0, "Weight of a max-gradient detail term added to Eq. 6 (losses.detail_loss; not in the paper: 0)."
    )
    ir_intensity_weight: float = _field(
        0.0,
        "Weight of a W-weighted intensity term added to Eq. 6: "
        "keep the IR intensity where the per-pixel W is high "
        "(losses.ir_intensity_loss; not in the paper: 0).",
    )
    contrast_weight: float = _field(
        0.0,
        "Weight of a local-contrast term added to Eq. 6: the 7x7 "
        "standard deviation of the stronger source "
        "(losses.contrast_loss; not in the paper: 0).",
    )
    contrast_window: int = _field(7, "Window (pixels per side) of the local-contrast term's standard deviations.")
    global_contrast_weight: float = _field(
        0.0,
        "Weight of a global-contrast term added to Eq. 6: "
        "each image's standard deviation vs the stronger "
        "source's (losses.global_contrast_loss; not in "
        "the paper: 0).",
    )
    cc_weight: float = _field(
        0.0,
        "Weight of a correlation term added to Eq. 6: 1 - the mean "
        "Pearson correlation with the sources (losses.correlation_loss; "
        "not in the paper: 0).",
    )
    init: str = _field("flax", "flax (LeCun normal convs) | pix2pix (N(0, 0.02) convs, N(1, 0.02) norm scales).")
    # Optimiser (the same Adam for all three networks).
    learning_rate: float = _field(1e-4, "Adam learning rate (all networks).")
    lr_schedule: str = _field(
        "constant",
        "constant | linear (constant, then linearly to 0 over the second half; pix2pix) | cosine (to 0 at num_steps).",
    )
    adam_b1: float = _field(0.5, "Adam beta1 (pix2pix's 0.5; the paper does not state it).")
    adam_b2: float = _field(0.999, "Adam beta2.")
    # Data.
    data_dir: str = _field("synthetic", "Pair folder DIR/{ir,vis}, or 'synthetic'.")
    train_split: str = _field("", "File of stems to train on (default: every pair in data_dir).")
    crop_size: tuple[int, int] = _field((256, 512), "Training crop HxW (random crops with flips).")
    batch_size: int = _field(1, "Global batch size.")
    synthetic_size: tuple[int, int] = _field((128, 128), "Synthetic image HxW.")
    synthetic_pairs: int = _field(64, "Number of synthetic pairs.")
    # Loop.
    num_steps: int = _field(10000, "Total training steps.")
    seed: int = _field(0, "Seed of initialisation and data order.")
    log_every: int = _field(50, "Steps between metrics.jsonl lines.")
    checkpoint_every: int = _field(1000, "Steps between checkpoints.")
    sample_every: int = _field(500, "Steps between sample grids (PNG).")
    keep_checkpoints: int = _field(3, "Checkpoints kept in the workdir.")
    # Evaluation during training (validation.Validator).
    eval_every: int = _field(
        0, "Steps between validation runs (0 = none); the best step is exported to WORKDIR/best.msgpack."
    )
    eval_split: str = _field("", "File of validation stems in --data_dir (e.g. splits/roadscene_val.txt).")
    selection: str = _field(
        "mean_rank",
        "Best-step criterion (validation.py): mean_rank (mean rank "
        "over the 14 metrics among Average, Max, LP, GFF and the v1 "
        "model) | wins_average (wins over Average on the 6 paper "
        "metrics, then mean margin; before 2026-12-05).",
    )
    # Parallelism (see docs/parallel.md).
    parallel: str = _field("none", "none | pmap (data-parallel over all devices).")
    per_device_batch_size: int = _field(
        0, "pmap: images per device; global batch = this x device count (0: batch_size / devices)."
    )

    def __post_init__(self):
        def need(cond, flag, msg):
            if not cond:
                raise ConfigError(f"--{flag}={getattr(self, flag)!r}: {msg}")

        for name, choices in (
            ("weight_mode", WEIGHT_MODES),
            ("norm", NORMS),
            ("parallel", PARALLEL),
            ("upsample", UPSAMPLES),
            ("output", OUTPUTS),
            ("conv_impl", CONV_IMPLS),
            ("init", ("flax", "pix2pix")),
            ("compute_dtype", ("float32", "bfloat16")),
            ("lr_schedule", ("constant", "linear", "cosine")),
            ("weight_pooling", ("avg", "max", "none")),
            ("weight_scale", ("raw", "mean1")),
        ):
            need(getattr(self, name) in choices, name, f"expected one of {', '.join(choices)}")
        try:
            parse_discriminator_layers(self.d_arch)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name in (
            "num_downs",
            "ngf",
            "ndf",
            "batch_size",
            "num_steps",
            "log_every",
            "checkpoint_every",
            "sample_every",
            "keep_checkpoints",
            "synthetic_pairs",
        ):
            need(getattr(self, name) >= 1, name, "must be a positive integer")
        need(self.num_downs <= 10, "num_downs", "at most 10")
        for name in HW_KEYS:
            v = getattr(self, name)
            need(len(v) == 2 and all(int(x) >= 1 for x in v), name, "expected HxW with positive sizes")
        need(self.per_device_batch_size >= 0, "per_device_batch_size", "must be >= 0")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(self.gamma >= 0 and self.lam >= 0, "gamma", "gamma and lam must be >= 0")
        need(self.ssim_weight >= 0 and self.mse_weight >= 0, "ssim_weight", "ssim_weight and mse_weight must be >= 0")
        need(self.detail_weight >= 0, "detail_weight", "must be >= 0")
        need(self.ir_intensity_weight >= 0, "ir_intensity_weight", "must be >= 0")
        need(self.contrast_weight >= 0, "contrast_weight", "must be >= 0")
        need(self.cc_weight >= 0, "cc_weight", "must be >= 0")
        need(self.global_contrast_weight >= 0, "global_contrast_weight", "must be >= 0")
        need(
            2 <= self.contrast_window <= min(self.crop_size),
            "contrast_window",
            "must be at least 2 and at most the crop size",
        )
        need(self.selection in ("mean_rank", "wins_average"), "selection", "expected one of mean_rank, wins_average")
        need(self.eval_every >= 0, "eval_every", "must be >= 0")
        need(
            not (self.eval_every and not self.eval_split),
            "eval_every",
            "needs --eval_split (a file of validation stems in --data_dir)",
        )
        need(min(self.crop_size) >= 11, "crop_size", "must be at least 11x11 (SSIM window)")
        geom = receptive_field(self.d_layers)
        need(
            min(self.crop_size) >= geom.stride * 2,
            "crop_size",
            f"too small for the discriminator (output stride {geom.stride})",
        )

    @property
    def generator_arch(self) -> GeneratorArch:
        return GeneratorArch.from_config(self.to_dict())

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
        for k in HW_KEYS:
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


def architecture_mismatch(saved: dict[str, Any], cfg: Config) -> list[str]:
    """Human-readable list of architecture keys that differ between a checkpoint and ``cfg``."""
    now, default = cfg.to_dict(), Config().to_dict()
    return [
        f"{k}: checkpoint {saved.get(k, default[k])!r} vs now {now[k]!r}"
        for k in ARCHITECTURE_KEYS
        if saved.get(k, default[k]) != now[k]
    ]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Declares one absl flag per Config field: same name, default and help; HxW tuples are
    strings such as ``256x512``."""
    types = typing.get_type_hints(Config)
    define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string, bool: flags.DEFINE_bool}
    for f in dataclasses.fields(Config):
        help_text = f.metadata["help"]
        if f.name in HW_KEYS:
            flags.DEFINE_string(f.name, "x".join(map(str, f.default)), help_text, flag_values=flag_values)
        else:
            define[types[f.name]](f.name, f.default, help_text, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Config:
    """The Config of parsed flags (declared by ``define_flags``); ConfigError names a bad one."""
    kw = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)}
    for k in HW_KEYS:
        kw[k] = parse_hw(kw[k], k)
    return Config(**kw)


def global_batch(saved: dict[str, Any], device_count: int) -> int:
    """The global batch of a (saved) config dict on ``device_count`` devices (as Parallel)."""
    d = {**Config().to_dict(), **saved}
    if d["parallel"] == "pmap" and d["per_device_batch_size"]:
        return d["per_device_batch_size"] * device_count
    return d["batch_size"]


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``--key: old (workdir) vs new (now)`` for each key that changes what is trained (not in
    RESUME_SAFE_KEYS; see there) between a workdir's config dict and the new one. Both dicts may
    hold ``global_batch``; keys an older run did not record take the Config default."""
    default = Config().to_dict()
    old, new = {**default, **saved}, {**default, **now}
    keys = [k for k in default if k not in RESUME_SAFE_KEYS]
    if new["lr_schedule"] != "constant" or old["lr_schedule"] != "constant":
        keys.append("num_steps")
    out = [f"--{k}: {_show(old[k])} (workdir) vs {_show(new[k])} (now)" for k in keys if old[k] != new[k]]
    gb_old, gb_new = saved.get("global_batch"), now.get("global_batch")
    if None not in (gb_old, gb_new) and gb_old != gb_new:
        out.append(
            f"global batch (--batch_size, --parallel, --per_device_batch_size): {gb_old} (workdir) vs {gb_new} (now)"
        )
    return out


__all__ = [
    "Config",
    "ConfigError",
    "ConfigChangeError",
    "DISCRIMINATOR_PRESETS",
    "RESUME_SAFE_KEYS",
    "architecture_mismatch",
    "config_changes",
    "config_from_flags",
    "define_flags",
    "global_batch",
    "parse_hw",
]
