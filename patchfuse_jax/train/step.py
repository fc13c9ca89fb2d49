"""The training step: D_ir, D_vis and G updated in one pure function (one XLA program)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from patchfuse_jax.nn.models import receptive_field
from patchfuse_jax.train import losses
from patchfuse_jax.train.config import Config
from patchfuse_jax.train.state import NetState, TrainState
from patchfuse_jax.train.weightmap import ir_weight_map, pixel_weight_map


def _apply_train(net: NetState, params, batch_stats, x):
    """Train-mode forward; returns ``(output, new_batch_stats)``."""
    out, upd = net.apply_fn({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
    return out, upd.get("batch_stats", batch_stats)


def _mean(x, axis_name):
    return x if axis_name is None else lax.pmean(x, axis_name)


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, cfg: Config, axis_name: str | None = None
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step of the paper's training, ``(state, batch) -> (state, metrics)``.

    ``batch``: ``ir`` and ``vis`` of shape ``(B, H, W, 1)``, float32 in [0, 1].

    Update order:
      1. G forward (train mode) gives the fused image ``f`` (its VJP is kept for step 3).
      2. D_ir and D_vis take one Adam step on ``(source = real, stop_gradient(f) = fake)``
         (Eq. 2 with W when ``weight_mode`` is ``d``/``dg``, else Eq. 3's unweighted form; Eq. 3).
      3. G takes one Adam step on Eq. 6, its adversarial terms (Eq. 7 with W when
         ``weight_mode`` is ``g``/``dg``, Eq. 8) scored by the *updated* discriminators on the
         same ``f`` (no second G forward). BatchNorm statistics of the D calls in this step
         are not kept: the discriminators' statistics come from step 2 only.

    With ``axis_name`` (under ``pmap``) gradients, BatchNorm statistics and metrics are
    averaged over that axis; nothing else differs.
    """
    ir, vis = batch["ir"], batch["vis"]
    weight_d = cfg.weight_mode in ("d", "dg")
    weight_g = cfg.weight_mode in ("g", "dg")
    geom = receptive_field(cfg.d_layers)

    # 1. Generator forward.
    def g_forward(params):
        return _apply_train(state.g, params, state.g.batch_stats, jnp.concatenate([ir, vis], -1))

    fused, g_vjp, g_stats = jax.vjp(g_forward, state.g.params, has_aux=True)
    fake = lax.stop_gradient(fused)

    # 2. Discriminators.
    def d_loss(params, net, real, w):
        d_real, stats = _apply_train(net, params, net.batch_stats, real)
        d_fake, stats = _apply_train(net, params, stats, fake)
        wmap = None
        if w:
            wmap = ir_weight_map(ir, d_real.shape[1:], geom, cfg.weight_pooling, cfg.weight_scale)
        return losses.lsgan_d_loss(d_real, d_fake, wmap), (stats, d_real, d_fake, wmap)

    def d_update(net, real, w):
        (loss, (stats, d_real, d_fake, wmap)), grads = jax.value_and_grad(d_loss, has_aux=True)(
            net.params, net, real, w
        )
        grads = _mean(grads, axis_name)
        return (net.apply_gradients(grads=grads, batch_stats=stats), loss, optax.tree.norm(grads), d_real, d_fake, wmap)

    d_ir, loss_d_ir, gn_d_ir, d_ir_real, d_ir_fake, _ = d_update(state.d_ir, ir, weight_d)
    d_vis, loss_d_vis, gn_d_vis, d_vis_real, d_vis_fake, _ = d_update(state.d_vis, vis, False)

    # 3. Generator against the updated discriminators.
    def g_loss(f):
        l_ssim, l_mse = losses.content_loss(f, ir, vis)
        s_ir, _ = _apply_train(d_ir, d_ir.params, d_ir.batch_stats, f)
        s_vis, _ = _apply_train(d_vis, d_vis.params, d_vis.batch_stats, f)
        wmap = ir_weight_map(ir, s_ir.shape[1:], geom, cfg.weight_pooling, cfg.weight_scale)
        adv_ir = losses.lsgan_g_loss(s_ir, wmap if weight_g else None)
        adv_vis = losses.lsgan_g_loss(s_vis)
        terms = dict(l_ssim=l_ssim, l_mse=l_mse, adv_ir=adv_ir, adv_vis=adv_vis, w_mean=jnp.mean(wmap))
        l_detail = 0.0
        if cfg.detail_weight:
            l_detail = terms["l_detail"] = losses.detail_loss(f, ir, vis)
        l_int = 0.0
        if cfg.ir_intensity_weight:
            w_pix = pixel_weight_map(ir, geom.size)
            l_int = terms["l_int"] = losses.ir_intensity_loss(f, ir, w_pix)
        l_con = 0.0
        if cfg.contrast_weight:
            l_con = terms["l_con"] = losses.contrast_loss(f, ir, vis, cfg.contrast_window)
        l_gcon = 0.0
        if cfg.global_contrast_weight:
            l_gcon = terms["l_gcon"] = losses.global_contrast_loss(f, ir, vis)
        l_cc = 0.0
        if cfg.cc_weight:
            l_cc = terms["l_cc"] = losses.correlation_loss(f, ir, vis)
        total = losses.generator_loss(
            l_ssim,
            l_mse,
            adv_ir,
            adv_vis,
            gamma=cfg.gamma,
            lam=cfg.lam,
            ssim_weight=cfg.ssim_weight,
            mse_weight=cfg.mse_weight,
            l_detail=l_detail,
            detail_weight=cfg.detail_weight,
            l_int=l_int,
            int_weight=cfg.ir_intensity_weight,
            l_con=l_con,
            con_weight=cfg.contrast_weight,
            l_cc=l_cc,
            cc_weight=cfg.cc_weight,
            l_gcon=l_gcon,
            gcon_weight=cfg.global_contrast_weight,
        )
        return total, terms

    (loss_g, g_terms), d_fused = jax.value_and_grad(g_loss, has_aux=True)(fused)
    (g_grads,) = g_vjp(d_fused)
    g_grads = _mean(g_grads, axis_name)
    g = state.g.apply_gradients(grads=g_grads, batch_stats=g_stats)

    metrics = dict(
        loss_g=loss_g,
        loss_d_ir=loss_d_ir,
        loss_d_vis=loss_d_vis,
        **g_terms,
        d_ir_real=jnp.mean(d_ir_real),
        d_ir_fake=jnp.mean(d_ir_fake),
        d_vis_real=jnp.mean(d_vis_real),
        d_vis_fake=jnp.mean(d_vis_fake),
        grad_norm_g=optax.tree.norm(g_grads),
        grad_norm_d_ir=gn_d_ir,
        grad_norm_d_vis=gn_d_vis,
    )
    metrics = _mean(metrics, axis_name)
    new_state = TrainState(step=state.step + 1, rng=state.rng, g=g, d_ir=d_ir, d_vis=d_vis)
    return new_state, metrics
