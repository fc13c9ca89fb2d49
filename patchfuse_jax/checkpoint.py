"""Checkpoints in ``WORKDIR/checkpoints`` (orbax CheckpointManager): the TrainState pytree plus
the run's config dict as JSON beside it in every step folder (layout: ``patchfuse_jax.workdir``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from patchfuse_jax import workdir as wd


class CheckpointError(ValueError):
    """A workdir's checkpoint cannot be used (missing, incompatible architecture)."""


log = logging.getLogger("patchfuse_jax")


@contextlib.contextmanager
def quiet_orbax():
    """Silences orbax's informational absl warnings (e.g. "Given directory is read only") for code
    that only reads a checkpoint on a user's behalf; errors still propagate."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as one short line: ``Type: message``."""
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:limit]}{'...' if len(msg) > limit else ''}"


class Checkpoints:
    """Thin wrapper over ``ocp.CheckpointManager`` with items ``state`` and ``config``."""

    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), wd.CHECKPOINTS)
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointError(f"{workdir}: no checkpoints folder (expected {self.directory})")
        if read_only:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=None, save_interval_steps=0, create=False, read_only=True
            )
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def latest_readable_step(self) -> int | None:
        """The newest step whose config and state metadata can be read (damaged array data shows
        in :meth:`restore_readable`). Each newer, damaged step is moved
        (never deleted) to ``WORKDIR/damaged_checkpoints/<step>`` with one warning line naming
        it, so that training can save that step again. None without checkpoints; CheckpointError
        when there are checkpoints but none is readable."""
        damaged = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:  # cheap: the config and the state's tree metadata, not its arrays
                self.config_dict(step)
                self._state_metadata(step)
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore/json raise many types
                damaged.append(step)
                self._set_aside(step, e)
                continue
            return step
        if damaged:
            raise CheckpointError(
                f"{self.directory}: no readable checkpoint (steps {', '.join(map(str, damaged))} are "
                f"damaged; moved to {os.path.join(os.path.dirname(self.directory), wd.DAMAGED)})"
            )
        return None

    def _state_metadata(self, step: int):
        step_dir = ocp.step.standard_name_format().find_step(epath.Path(self.directory), step).path
        handler = ocp.PyTreeCheckpointHandler()
        try:
            return handler.metadata(step_dir / "state")
        finally:
            handler.close()

    def restore_readable(self, step: int, target):
        """``(step, state)``: the state at ``step`` restored into ``target``'s structure, or, when
        its arrays cannot be read, that step set aside (as :meth:`latest_readable_step`) and the
        newest readable older one restored instead."""
        while True:
            try:
                return step, self.restore(step, target)
            except Exception as e:  # noqa: BLE001
                self._set_aside(step, e)
            step = self.latest_readable_step()
            if step is None:
                raise CheckpointError(f"{self.directory}: no readable checkpoint left")

    def _set_aside(self, step: int, error: BaseException) -> None:
        src = ocp.step.standard_name_format().find_step(epath.Path(self.directory), step).path
        dest_root = os.path.join(os.path.dirname(self.directory), wd.DAMAGED)
        os.makedirs(dest_root, exist_ok=True)
        dest = os.path.join(dest_root, os.path.basename(str(src)))
        n = 1
        while os.path.exists(dest):
            dest = os.path.join(dest_root, f"{os.path.basename(str(src))}.{n}")
            n += 1
        shutil.move(str(src), dest)
        log.warning(
            "checkpoint at step %d is damaged (%s): moved to %s; resuming from an older one",
            step,
            one_line(error),
            dest,
        )
        self.manager.reload()

    def config_dict(self, step: int) -> dict[str, Any]:
        out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(out["config"])

    def save(self, state, config: dict[str, Any], *, force: bool = True) -> None:
        """Saves ``state`` at its step with the run's ``config`` dict beside it."""
        step = int(jax.device_get(state.step))
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
            force=force,
        )

    def restore(self, step: int, target):
        """Restores the state at ``step`` into the structure (and shardings) of ``target``."""
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return out["state"]

    def restore_raw(self, step: int) -> dict[str, Any]:
        """The saved state as nested dicts of arrays (no target needed)."""
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return out["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
