"""Checkpoints in ``WORKDIR/checkpoints`` (orbax CheckpointManager): the TrainState pytree plus
the run's Config as JSON beside it in every step folder."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from patchfuse_jax.config import Config, architecture_mismatch


class CheckpointError(ValueError):
    """A workdir's checkpoint cannot be used (missing, incompatible architecture)."""


class Checkpoints:
    """Thin wrapper over ``ocp.CheckpointManager`` with items ``state`` and ``config``."""

    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointError(f"{workdir}: no checkpoints folder (expected {self.directory})")
        if read_only:
            options = ocp.CheckpointManagerOptions(max_to_keep=None, save_interval_steps=0,
                                                   create=False, read_only=True)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def config_dict(self, step: int) -> dict[str, Any]:
        out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(out["config"])

    def check_compatible(self, step: int, cfg: Config) -> None:
        """Raises CheckpointError listing architecture flags that differ from the checkpoint."""
        diff = architecture_mismatch(self.config_dict(step), cfg)
        if diff:
            raise CheckpointError(
                f"{self.directory}/{step}: checkpoint was made with a different architecture "
                f"({'; '.join(diff)}). Use a new --workdir or the checkpoint's flags.")

    def save(self, state, cfg: Config, *, force: bool = True) -> None:
        step = int(jax.device_get(state.step))
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(cfg.to_dict())),
            force=force)

    def restore(self, step: int, target):
        """Restores the state at ``step`` into the structure (and shardings) of ``target``."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        return out["state"]

    def restore_raw(self, step: int) -> dict[str, Any]:
        """The saved state as nested dicts of arrays (no target needed)."""
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return out["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
