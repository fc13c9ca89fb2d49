"""Loss functions of the paper (Eq. 1-8). All are means over batch and patch cells.

Shapes: discriminator outputs ``d (B, h, w)``; weight maps ``w (B, h, w)`` (or None = ones);
images ``(B, H, W, 1)`` float in [0, 1].
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp

REAL, FAKE = 1.0, 0.0  # LSGAN labels a and b


def _wmean(x: jax.Array, w: jax.Array | None) -> jax.Array:
    return jnp.mean(x if w is None else w * x)


def lsgan_d_loss(d_real: jax.Array, d_fake: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """Eq. 2/3: ``1/2 E[W (D(x) - a)^2] + 1/2 E[W (D(G(x)) - b)^2]``; ``w=None`` is Eq. 3."""
    return 0.5 * _wmean((d_real - REAL) ** 2, w) + 0.5 * _wmean((d_fake - FAKE) ** 2, w)


def lsgan_g_loss(d_fake: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """Eq. 7/8: ``1/2 E[W (D(f) - a)^2]``; ``w=None`` is Eq. 8."""
    return 0.5 * _wmean((d_fake - REAL) ** 2, w)


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image SSIM ``(B,)`` of ``(B, H, W, C)`` images in [0, 1] (dm-pix: 11x11 Gaussian,
    sigma 1.5, k1=0.01, k2=0.03, valid window positions)."""
    return dm_pix.ssim(x, y, max_val=1.0)


def content_loss(fused: jax.Array, ir: jax.Array, vis: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eq. 5 terms against both sources, each source weighted equally:

    ``L_ssim = 1 - (SSIM(f, ir) + SSIM(f, vis)) / 2`` and
    ``L_mse = (MSE(f, ir) + MSE(f, vis)) / 2``. Returns ``(L_ssim, L_mse)``.
    """
    l_ssim = 1.0 - 0.5 * (jnp.mean(ssim(fused, ir)) + jnp.mean(ssim(fused, vis)))
    l_mse = 0.5 * (jnp.mean((fused - ir) ** 2) + jnp.mean((fused - vis) ** 2))
    return l_ssim, l_mse


def image_gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward differences of ``(B, H, W, C)`` images: ``(B, H, W-1, C)`` along W and
    ``(B, H-1, W, C)`` along H."""
    return x[:, :, 1:] - x[:, :, :-1], x[:, 1:] - x[:, :-1]


def detail_loss(fused: jax.Array, ir: jax.Array, vis: jax.Array) -> jax.Array:
    """Not in the paper (``--detail_weight``): the mean absolute difference between the fused
    image's gradient magnitude and the larger of the sources', per direction,

    ``L_detail = 1/2 sum_{d in x,y} mean | |grad_d f| - max(|grad_d ir|, |grad_d vis|) |``,

    which asks for the stronger source's detail at full contrast where Average fusion keeps
    half of each (the max-gradient loss common in learnt fusion)."""
    terms = []
    for gf, gi, gv in zip(image_gradients(fused), image_gradients(ir), image_gradients(vis)):
        terms.append(jnp.mean(jnp.abs(jnp.abs(gf) - jnp.maximum(jnp.abs(gi), jnp.abs(gv)))))
    return 0.5 * (terms[0] + terms[1])


def local_std(x: jax.Array, size: int = 7) -> jax.Array:
    """Standard deviation of ``(B, H, W, C)`` images over each ``size x size`` window (valid
    positions): ``(B, H - size + 1, W - size + 1, C)``."""

    def box(v):
        return jax.lax.reduce_window(v, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), "VALID") / (size * size)

    var = box(x * x) - box(x) ** 2
    return jnp.sqrt(jnp.maximum(var, 0.0) + 1e-6)


def contrast_loss(fused: jax.Array, ir: jax.Array, vis: jax.Array, size: int = 7) -> jax.Array:
    """Not in the paper (``--contrast_weight``): the mean absolute difference between the fused
    image's local contrast and the larger of the sources',

    ``L_con = mean | sd_k(f) - max(sd_k(ir), sd_k(vis)) |``,

    ``sd_k`` the standard deviation over ``size x size`` windows (``--contrast_window``, 7 by
    default; larger windows ask for contrast between regions, e.g. a warm target against its
    surroundings, rather than texture). The detail term asks for the stronger
    source's pixel-to-pixel gradients; this asks for its contrast over a neighbourhood, which
    Average fusion halves wherever the sources disagree."""
    target = jnp.maximum(local_std(ir, size), local_std(vis, size))
    return jnp.mean(jnp.abs(local_std(fused, size) - target))


def global_contrast_loss(fused: jax.Array, ir: jax.Array, vis: jax.Array) -> jax.Array:
    """Not in the paper (``--global_contrast_weight``): ``mean_b | sd(f) - max(sd(ir), sd(vis)) |``
    with ``sd`` each image's standard deviation over all its pixels: the fused image should span
    the stronger source's range of grey levels (the field's SD metric; Average fusion narrows it
    wherever the sources disagree)."""

    def sd(x):
        return jnp.std(x, axis=(1, 2, 3))

    return jnp.mean(jnp.abs(sd(fused) - jnp.maximum(sd(ir), sd(vis))))


def correlation(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-image Pearson correlation ``(B,)`` of ``(B, H, W, C)`` images over their pixels."""
    xc = x - jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    yc = y - jnp.mean(y, axis=(1, 2, 3), keepdims=True)
    num = jnp.sum(xc * yc, axis=(1, 2, 3))
    return num / jnp.sqrt(jnp.sum(xc * xc, axis=(1, 2, 3)) * jnp.sum(yc * yc, axis=(1, 2, 3)) + 1e-12)


def correlation_loss(fused: jax.Array, ir: jax.Array, vis: jax.Array) -> jax.Array:
    """Not in the paper (``--cc_weight``): ``L_cc = 1 - (corr(f, ir) + corr(f, vis)) / 2``, mean
    over the batch: the field's CC metric as a loss. Unlike L_mse it does not change when the
    fused image's contrast is stretched, so it keeps the sources' structure without holding the
    output at the pixel average's contrast (issue 20)."""
    return 1.0 - 0.5 * jnp.mean(correlation(fused, ir) + correlation(fused, vis))


def ir_intensity_loss(fused: jax.Array, ir: jax.Array, w: jax.Array) -> jax.Array:
    """Not in the paper (``--ir_intensity_weight``): W weighting a content term, so that the
    fused image keeps the IR intensity where W is high,

    ``L_int = sum(w |f - ir|) / sum(w)`` over the batch,

    with ``w (B, H, W, 1)`` the per-pixel weight map (``weightmap.pixel_weight_map``). Elsewhere
    (w = 0) the term is silent and Eq. 5 and the detail term decide. Normalised by the weight's
    sum, so its scale does not depend on how much of the image is warm."""
    return jnp.sum(w * jnp.abs(fused - ir)) / jnp.maximum(jnp.sum(w), 1e-6)


def generator_loss(
    l_ssim,
    l_mse,
    adv_ir,
    adv_vis,
    *,
    gamma: float,
    lam: float,
    ssim_weight: float = 1.0,
    mse_weight: float = 1.0,
    l_detail=0.0,
    detail_weight: float = 0.0,
    l_int=0.0,
    int_weight: float = 0.0,
    l_con=0.0,
    con_weight: float = 0.0,
    l_cc=0.0,
    cc_weight: float = 0.0,
    l_gcon=0.0,
    gcon_weight: float = 0.0,
) -> jax.Array:
    """Eq. 6: ``L_G = L_ssim + L_mse + gamma * L_adv_ir + lambda * L_adv_vis``; the content
    terms may be weighted (``ssim_weight``, ``mse_weight``; the paper's weights are 1), and
    ``detail_weight * l_detail``, ``int_weight * l_int``, ``con_weight * l_con``,
    ``gcon_weight * l_gcon`` and ``cc_weight * l_cc`` added (0 in the paper)."""
    return (
        ssim_weight * l_ssim
        + mse_weight * l_mse
        + gamma * adv_ir
        + lam * adv_vis
        + detail_weight * l_detail
        + int_weight * l_int
        + con_weight * l_con
        + gcon_weight * l_gcon
        + cc_weight * l_cc
    )
