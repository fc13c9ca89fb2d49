"""The explicit training state: one pytree holding all three networks, the step and the key."""

from __future__ import annotations

from typing import Any

import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from patchfuse_jax.nn.models import Discriminator, Generator
from patchfuse_jax.train.config import Config

CPU_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class NetState(train_state.TrainState):
    """A Flax TrainState (params, optax state, apply_fn, tx) plus BatchNorm statistics."""

    batch_stats: Any = None

    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats}


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: ``step`` (completed steps), ``rng`` (raw uint32 key
    data of the run's base key; per-step keys are ``fold_in(key, step)``), and the
    generator ``g`` and the two discriminators ``d_ir``, ``d_vis``."""

    step: jax.Array
    rng: jax.Array
    g: NetState
    d_ir: NetState
    d_vis: NetState


def make_models(cfg: Config, axis_name: str | None = None) -> tuple[Generator, Discriminator]:
    """The generator and the (shared architecture) discriminator module for ``cfg``."""
    dtype = jnp.dtype(cfg.compute_dtype)
    gen = cfg.generator_arch.generator(impl=cfg.conv_impl, axis_name=axis_name, dtype=dtype)
    disc = Discriminator(
        layers=cfg.d_layers, ndf=cfg.ndf, norm=cfg.norm, impl=cfg.conv_impl, axis_name=axis_name, dtype=dtype
    )
    return gen, disc


def learning_rate_schedule(cfg: Config) -> optax.Schedule:
    """``constant``; ``linear``: constant for the first half of ``num_steps``, then linearly to 0
    (pix2pix's schedule); ``cosine``: cosine decay to 0 at ``num_steps``."""
    lr, n = cfg.learning_rate, cfg.num_steps
    if cfg.lr_schedule == "linear":
        return optax.join_schedules([optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, n - n // 2)], [n // 2])
    if cfg.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(lr, n)
    return optax.constant_schedule(lr)


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    return optax.adam(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2)


def pix2pix_init(variables, key: jax.Array):
    """pix2pix's ``init_weights('normal', 0.02)``: conv kernels ~ N(0, 0.02), norm scales ~
    N(1, 0.02), biases 0. ``variables``: a module's init output (only ``params`` change). The
    generator's ``residual`` layer (``--output=residual_average``) keeps its zero init, so such a
    generator starts as Average fusion."""
    flat = flax.traverse_util.flatten_dict(variables["params"])
    keys = jax.random.split(key, len(flat))
    out = {}
    for k_rng, (path, v) in zip(keys, sorted(flat.items())):
        if path[-1] == "kernel" and "residual" not in path:  # the residual head stays zero
            v = 0.02 * jax.random.normal(k_rng, v.shape, v.dtype)
        elif path[-1] == "scale":
            v = 1.0 + 0.02 * jax.random.normal(k_rng, v.shape, v.dtype)
        elif path[-1] == "bias":
            v = jnp.zeros_like(v)
        out[path] = v
    return {**variables, "params": flax.traverse_util.unflatten_dict(out)}


def create_train_state(cfg: Config, axis_name: str | None = None) -> TrainState:
    """Initialises all networks from ``cfg.seed`` (deterministic).

    The three ``init`` calls run as one program compiled without XLA's backend optimisations on
    CPU: threefry key derivation otherwise compiles slowly there (docs/benchmarks.md,
    'Measurements behind the code'), and init runs once.
    """
    gen, disc = make_models(cfg, axis_name)
    tx = make_optimizer(cfg)
    side = max(2**cfg.num_downs, 64)
    x_g = jnp.zeros((1, side, side, 2), jnp.float32)
    x_d = jnp.zeros((1, 64, 64, 1), jnp.float32)

    def init(seed):
        rng = jax.random.key(seed)
        rng, k_g, k_i, k_v = jax.random.split(rng, 4)
        v_g, v_i, v_v = (
            gen.init(k_g, x_g, train=False),
            disc.init(k_i, x_d, train=False),
            disc.init(k_v, x_d, train=False),
        )
        if cfg.init == "pix2pix":
            v_g, v_i, v_v = (pix2pix_init(v, jax.random.fold_in(k, 1)) for v, k in ((v_g, k_g), (v_i, k_i), (v_v, k_v)))
        return jax.random.key_data(rng), v_g, v_i, v_v

    opts = CPU_FAST_COMPILE if jax.default_backend() == "cpu" else None
    compiled = jax.jit(init).lower(jnp.int32(cfg.seed)).compile(compiler_options=opts)
    rng, v_g, v_i, v_v = compiled(jnp.int32(cfg.seed))

    def net(module, v):
        net = NetState.create(apply_fn=module.apply, params=v["params"], batch_stats=v.get("batch_stats", {}), tx=tx)
        return net.replace(step=jnp.zeros((), jnp.int32))  # not weakly typed: one compile

    return TrainState(
        step=jnp.zeros((), jnp.int32), rng=rng, g=net(gen, v_g), d_ir=net(disc, v_i), d_vis=net(disc, v_v)
    )


def param_count(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
