"""Data parallelism: the same ``train_step`` on one device (``jit``) or on every local device
(``pmap``, axis ``"batch"``), single- or multi-host. See docs/parallel.md.

* ``--parallel=none``: one device, global batch ``--batch_size``.
* ``--parallel=pmap``: global batch = ``per_device_batch_size * jax.device_count()`` (all hosts);
  gradients, BatchNorm statistics and metrics are averaged over the ``"batch"`` axis, so N
  devices x 1 image compute what one device computes on a batch of N. Each process loads only
  its own slice of the global batch (``data.sample_batch(start, stop)``), deterministic in
  (seed, step), and feeds each local device its own part.

Checkpoints always hold the unreplicated host state, so runs resume on any device count.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import jax
import numpy as np

from patchfuse_jax.nn.convs import cpu_compiler_options
from patchfuse_jax.train.config import Config, ConfigError
from patchfuse_jax.train.step import train_step

AXIS = "batch"
# XLA:CPU's copy insertion with region analysis: the paper step's executable then has none of the
# whole-buffer copies (parameters and Adam moments kept alive next to their donated, updated
# versions) that the default inserts, and runs faster (docs/benchmarks.md, 'Measurements behind
# the code'). Only buffer copies change, not the arithmetic. (jax.pmap takes no compiler options.)
STEP_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}
log = logging.getLogger("patchfuse_jax")


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Calls ``jax.distributed.initialize`` when the flags (or the platform's environment)
    describe a multi-process run; a no-op otherwise. On CPU, cross-process collectives use gloo."""
    env = any(
        k in os.environ
        for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE")
    )
    given = bool(coordinator_address) or num_processes > 1
    if not (given or env):
        return
    if given and not (coordinator_address and num_processes >= 1 and process_id >= 0):
        raise ConfigError("multi-process runs need all of --coordinator_address, --num_processes and --process_id")
    # Only affects CPU devices (GPU/TPU keep their own collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if given:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    else:
        jax.distributed.initialize()
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


class Parallel:
    """How one run maps its global batch and state onto devices (``cfg.parallel``)."""

    def __init__(self, cfg: Config):
        self.pmap = cfg.parallel == "pmap"
        self.n_local = jax.local_device_count() if self.pmap else 1
        self.n_global = jax.device_count() if self.pmap else 1
        if self.pmap:
            per_device = cfg.per_device_batch_size or cfg.batch_size // self.n_global
            if per_device < 1 or (not cfg.per_device_batch_size and cfg.batch_size % self.n_global):
                raise ConfigError(
                    f"--batch_size={cfg.batch_size}: not divisible over {self.n_global} devices; "
                    "set --per_device_batch_size"
                )
            self.per_device = per_device
        else:
            self.per_device = cfg.batch_size
        self.global_batch = self.per_device * self.n_global
        local = self.per_device * self.n_local
        self.slice = (
            (jax.process_index() * local, (jax.process_index() + 1) * local) if self.pmap else (0, self.global_batch)
        )
        self.axis_name = AXIS if self.pmap else None
        self.is_main = jax.process_index() == 0

    def compile_step(self, cfg: Config):
        """``train_step`` jitted (donated state; on CPU with ``STEP_COMPILER_OPTIONS``) or
        pmapped over the local devices."""
        if not self.pmap:
            return jax.jit(
                functools.partial(train_step, cfg=cfg),
                donate_argnums=0,
                compiler_options=cpu_compiler_options(STEP_COMPILER_OPTIONS),
            )
        return jax.pmap(functools.partial(train_step, cfg=cfg, axis_name=AXIS), axis_name=AXIS, donate_argnums=0)

    def put_state(self, host_state):
        """Host (unreplicated) state -> what the step takes."""
        if not self.pmap:
            return jax.device_put(host_state)
        devices = jax.local_devices()
        return jax.tree_util.tree_map(lambda x: _replicate(np.asarray(x), devices), host_state)

    def host_state(self, state):
        """What the step holds -> the host (unreplicated, numpy) state that checkpoints store."""
        if self.pmap:
            return jax.tree_util.tree_map(_first_local_copy, state)
        return jax.device_get(state)

    def put_batch(self, batch: dict[str, np.ndarray]):
        """This process's slice of the global batch -> ``(n_local, per_device, H, W, 1)`` for pmap."""
        if not self.pmap:
            return jax.device_put(batch)
        return {k: v.reshape(self.n_local, self.per_device, *v.shape[1:]) for k, v in batch.items()}

    def metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Metrics are already averaged over devices; keep this process's first copy, shape
        ``(1,)`` under pmap, still on device (no host sync per step)."""
        if not self.pmap:
            return metrics
        return jax.tree_util.tree_map(lambda x: x.addressable_shards[0].data, metrics)


def _first_local_copy(x: jax.Array) -> np.ndarray:
    """This process's copy on its first local device. Read from the local shard: indexing a
    multi-process array (``x[0]``) would be a computation every process must join."""
    return np.asarray(x.addressable_shards[0].data)[0]


def _replicate(x: np.ndarray, devices) -> jax.Array:
    """``x`` copied to every device, stacked on a new leading axis (how pmap lays out its
    arguments: one slice per local device)."""
    mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))
    return jax.device_put(np.broadcast_to(x, (len(devices), *x.shape)), sharding)
