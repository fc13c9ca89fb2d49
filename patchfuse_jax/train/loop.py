"""The training loop: ``train_and_evaluate(cfg, workdir)``.

Reads top to bottom: setup, data, state (fresh or resumed), compile, loop (log, samples,
checkpoints), finish. Re-running with the same workdir resumes from its latest checkpoint; the
data of step s depends only on (seed, s), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from patchfuse_jax import io
from patchfuse_jax import workdir as wd
from patchfuse_jax.checkpoint import CheckpointError, Checkpoints
from patchfuse_jax.fusing.api import generator_fn
from patchfuse_jax.fusing.saved import export_generator, make_fuse_params
from patchfuse_jax.nn.models import receptive_field
from patchfuse_jax.train import data
from patchfuse_jax.train.config import (
    Config,
    ConfigChangeError,
    ConfigError,
    architecture_mismatch,
    config_changes,
    global_batch,
)
from patchfuse_jax.train.parallel import Parallel
from patchfuse_jax.train.state import TrainState, create_train_state, param_count
from patchfuse_jax.train.validation import CRITERIA, Validator

log = logging.getLogger("patchfuse_jax")


class NonFiniteError(FloatingPointError):
    """A loss became NaN/Inf; the message names the step."""


def _write_samples(path: str, host_state: TrainState, cfg: Config, samples: dict[str, np.ndarray]) -> None:
    """PNG grid, one row per sample: IR | visible | fused."""
    g = generator_fn(cfg.generator_arch)
    x = jnp.concatenate([samples["ir"], samples["vis"]], -1)
    fused = np.asarray(g(host_state.g.variables(), x))
    rows = [
        np.concatenate([a[..., 0], b[..., 0], f[..., 0]], axis=1)
        for a, b, f in zip(samples["ir"], samples["vis"], fused)
    ]
    io.save_image(path, np.concatenate(rows, axis=0))


@contextlib.contextmanager
def _stop_after_step():
    """Ctrl-C or SIGTERM inside a step takes effect when the step returns.

    The step donates its input state, so an interrupt in the middle would leave nothing to save.
    The signal is held and re-raised (to the handler that was installed) on leaving the block; a
    second signal stops at once. Outside the main thread signals cannot be caught, so it is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum, frame):
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if held:
        log.warning("stopping after step (signal %d)", held[0])
        signal.raise_signal(held[0])


def _check_finite(pending: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, float]]]:
    """Fetches queued per-step metrics; raises NonFiniteError at the first non-finite loss."""
    out = []
    for step, m in jax.device_get(pending):
        m = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in m.items()}
        bad = [k for k, v in m.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteError(
                f"step {step}: non-finite values in {', '.join(sorted(bad))} "
                f"(loss_g={m['loss_g']}, loss_d_ir={m['loss_d_ir']}, loss_d_vis={m['loss_d_vis']}). "
                "Training stopped; the last good checkpoint is kept. Try a lower --learning_rate."
            )
        out.append((step, m))
    return out


def _truncate_metrics(path: str, last_step: int) -> None:
    """Drops lines logged after ``last_step`` by an interrupted run (they will be redone) and a
    last line cut by a crash (which the next line would otherwise be glued to)."""
    if os.path.exists(path):
        wd.write_jsonl(path, [r for r in wd.read_jsonl(path) if r["step"] <= last_step])


def _prepare_workdir(workdir: str) -> None:
    """Creates ``workdir``; ConfigError (one line) when it is a file or cannot be written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir}: is a file, not a folder")
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise ConfigError(f"--workdir={workdir}: cannot write there ({e.strerror or e})") from None


def _workdir_config(workdir: str, ckpts: Checkpoints, step: int) -> dict[str, Any]:
    """The config the workdir was last trained with: config.json, else the checkpoint's."""
    path = os.path.join(workdir, wd.CONFIG)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s unreadable (%s); using the config of checkpoint %d", path, e, step)
    return ckpts.config_dict(step)


def check_config_change(saved: dict[str, Any], now: dict[str, Any], workdir: str, step: int, allow: bool) -> list[str]:
    """The changes of training keys (config.config_changes) between the workdir's config and the
    new one; ConfigChangeError listing them unless ``allow``."""
    changes = config_changes(saved, now)
    if changes and not allow:
        raise ConfigChangeError(
            f"{workdir} was trained to step {step} with other settings: {'; '.join(changes)}. "
            "Use the workdir's flags (its config.json), a new --workdir, or --allow_config_change "
            "to continue with the new ones (the old config goes to config_history.jsonl)."
        )
    return changes


def _write_config(workdir: str, now: dict[str, Any], old: dict[str, Any] | None, step: int) -> None:
    """Writes config.json; an ``old`` config is first appended to config_history.jsonl as
    ``{"from_step", "until_step", "config"}``: it trained steps from_step+1..until_step."""
    if old is not None:
        path = os.path.join(workdir, wd.CONFIG_HISTORY)
        history = wd.read_jsonl(path)
        first = history[-1]["until_step"] if history else 0
        wd.write_jsonl(path, history + [{"from_step": first, "until_step": step, "config": old}])
    with open(os.path.join(workdir, wd.CONFIG), "w") as f:
        f.write(json.dumps(now, indent=2, sort_keys=True))


def train_and_evaluate(
    cfg: Config, workdir: str, *, show_progress: bool = True, allow_config_change: bool = False
) -> TrainState:
    """Trains to ``cfg.num_steps`` (resuming from ``workdir``); returns the final state.

    Resuming with a config that changes what is trained (config.config_changes) raises
    ConfigChangeError unless ``allow_config_change``; then config.json gets the new config and
    the old one is appended to config_history.jsonl."""
    # --- Setup -----------------------------------------------------------------------------
    _prepare_workdir(workdir)
    par = Parallel(cfg)
    show_progress = show_progress and par.is_main
    ckpts = Checkpoints(workdir, keep=cfg.keep_checkpoints)
    latest = ckpts.latest_readable_step()  # damaged newer steps are set aside with a warning
    run_config = {**cfg.to_dict(), "global_batch": par.global_batch}  # what config.json holds
    old_config = None
    if latest is not None:
        diff = architecture_mismatch(ckpts.config_dict(latest), cfg)
        if diff:
            raise CheckpointError(
                f"{ckpts.directory}/{latest}: checkpoint was made with a different architecture "
                f"({'; '.join(diff)}). Use a new --workdir or the checkpoint's flags."
            )
        saved = _workdir_config(workdir, ckpts, latest)
        saved.setdefault("global_batch", global_batch(saved, par.n_global))  # older runs
        changes = check_config_change(saved, run_config, workdir, latest, allow_config_change)
        if changes:
            log.warning("config changed from step %d on (--allow_config_change): %s", latest, "; ".join(changes))
            old_config = saved
    if par.is_main:
        _write_config(workdir, run_config, old_config, latest or 0)
    geom = receptive_field(cfg.d_layers)
    log.info("discriminator patch (receptive field) %dx%d, stride %d", geom.size, geom.size, geom.stride)
    log.info(
        "global batch %d = %d per device x %d devices (%s)",
        par.global_batch,
        par.per_device,
        par.n_global,
        cfg.parallel,
    )

    # --- Data --------------------------------------------------------------------------------
    source = data.make_source(
        cfg.data_dir,
        cfg.train_split or None,
        seed=cfg.seed,
        synthetic_hw=cfg.synthetic_size,
        synthetic_pairs=cfg.synthetic_pairs,
    )
    data.check_source(source, cfg.crop_size)  # every pair readable, aligned and big enough: fail now
    samples = data.fixed_sample_batch(source, min(4, len(source)), cfg.crop_size)
    validator = None
    if cfg.eval_every and par.is_main:
        validator = Validator(cfg.data_dir, cfg.eval_split, cfg.selection)
        log.info(
            "validation: %d pairs of %s; Average fusion scores %s",
            len(validator),
            cfg.eval_split,
            {k: round(v, 4) for k, v in validator.average.items()},
        )

    # --- State (host copy: what checkpoints hold, whatever the device count) ------------------
    host_state = jax.device_get(create_train_state(cfg, par.axis_name))
    if latest is not None:
        latest, host_state = ckpts.restore_readable(latest, host_state)
        log.info("resumed from %s at step %d", ckpts.directory, latest)
    start = int(host_state.step)
    log.info(
        "parameters: G %d, D_ir %d, D_vis %d",
        param_count(host_state.g.params),
        param_count(host_state.d_ir.params),
        param_count(host_state.d_vis.params),
    )
    metrics_path = os.path.join(workdir, wd.METRICS)
    if par.is_main:
        _truncate_metrics(metrics_path, start)
    if start >= cfg.num_steps:
        log.info("already at step %d >= --num_steps=%d; nothing to do", start, cfg.num_steps)
        return host_state
    state = par.put_state(host_state)

    # --- Compile -------------------------------------------------------------------------------
    step_fn = par.compile_step(cfg)

    # --- Loop ----------------------------------------------------------------------------------
    batches = data.Batches(
        source,
        seed=cfg.seed,
        start_step=start,
        batch_size=par.global_batch,
        crop_hw=cfg.crop_size,
        start=par.slice[0],
        stop=par.slice[1],
        num_steps=cfg.num_steps - start,
    )
    bar = tqdm(total=cfg.num_steps, initial=start, disable=not show_progress, unit="step", dynamic_ncols=True)
    pending: list[tuple[int, dict[str, Any]]] = []
    step = start
    t_log = time.perf_counter()

    def flush_logs():
        nonlocal t_log
        if not pending:
            return
        done = _check_finite(pending)
        pending.clear()
        n = len(done)
        mean = {k: float(np.mean([m[k] for _, m in done])) for k in done[-1][1]}
        rate = n / max(time.perf_counter() - t_log, 1e-9)
        t_log = time.perf_counter()
        if par.is_main:
            with open(metrics_path, "a") as f:
                f.write(
                    json.dumps({"step": step, "steps_per_sec": rate, "images_per_sec": rate * par.global_batch, **mean})
                    + "\n"
                )
        bar.set_postfix(
            g=f"{mean['loss_g']:.3f}", d_ir=f"{mean['loss_d_ir']:.3f}", d_vis=f"{mean['loss_d_vis']:.3f}", refresh=False
        )

    last_saved = latest

    def save():
        # Every process decides alike (no directory reads) and calls save; orbax syncs them.
        nonlocal last_saved
        flush_logs()  # never checkpoint a state whose losses were not checked
        if last_saved != step:
            ckpts.save(par.host_state(state), cfg.to_dict())
            last_saved = step

    best_path = os.path.join(workdir, wd.BEST_JSON)
    best = None
    if validator is not None and os.path.exists(best_path):
        with open(best_path) as f:
            best = json.load(f)
        if best.get("eval_split", cfg.eval_split) != cfg.eval_split:
            log.warning(
                "%s was selected on %s; starting a new best on --eval_split=%s",
                best_path,
                best["eval_split"],
                cfg.eval_split,
            )
            best = None
        elif best.get("selection", "wins_average") != cfg.selection:
            log.warning(
                "%s was selected by --selection=%s; starting a new best by --selection=%s",
                best_path,
                best.get("selection", "wins_average"),
                cfg.selection,
            )
            best = None

    def run_eval():
        nonlocal best
        if validator is None:
            return
        host = par.host_state(state)
        params = make_fuse_params(host.g.variables(), cfg.to_dict(), step)
        t0 = time.perf_counter()
        res = validator.evaluate(params)
        log.info(
            "step %d validation (%.0f s): %s", step, time.perf_counter() - t0, {k: round(v, 4) for k, v in res.items()}
        )
        with open(metrics_path, "a") as f:
            f.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in res.items()}}) + "\n")
        if best is None or validator.key(res) > validator.key(best["val"]):
            export_generator(params, os.path.join(workdir, wd.BEST_EXPORT))
            best = {
                "step": step,
                "val": res,
                "average": validator.average,
                "eval_split": cfg.eval_split,
                "selection": cfg.selection,
                "criterion": CRITERIA[cfg.selection],
                "panel": validator.panel,
            }
            with open(best_path, "w") as f:
                json.dump(best, f, indent=2)

    def write_samples():
        host = par.host_state(state)
        if par.is_main:
            _write_samples(os.path.join(workdir, wd.SAMPLES, f"step_{step:07d}.png"), host, cfg, samples)

    try:
        for s, batch in batches:
            with _stop_after_step():
                state, metrics = step_fn(state, par.put_batch(batch))
                step = s + 1
                pending.append((step, par.metrics(metrics)))
            bar.update(1)
            if step % cfg.log_every == 0:
                flush_logs()
            if step % cfg.sample_every == 0:
                write_samples()
            if step % cfg.checkpoint_every == 0:
                save()
            if cfg.eval_every and step % cfg.eval_every == 0:
                run_eval()
    except (KeyboardInterrupt, data.DataError, io.ImageError) as e:  # keep the work done so far
        bar.close()
        if any(x.is_deleted() for x in jax.tree_util.tree_leaves(state)):
            log.warning("stopped inside a step: nothing saved; the latest checkpoint is kept")
        else:
            save()
            log.warning("stopped (%s): saved checkpoint at step %d in %s", type(e).__name__, step, ckpts.directory)
        raise
    finally:
        batches.close()
        ckpts.wait()  # a checkpoint being written finishes, whatever stopped the loop

    # --- Finish --------------------------------------------------------------------------------
    save()
    write_samples()
    if cfg.eval_every and step % cfg.eval_every != 0:
        run_eval()
    ckpts.wait()
    bar.close()
    return par.host_state(state)
