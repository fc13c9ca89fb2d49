"""PyTorch twins of patchfuse_jax's networks and training step, for bench/compare_torch.py only.

The project never imports this file (or torch). Layout is NCHW; images float32 in [0, 1].

* ``Generator``: the same pix2pix U-Net as ``patchfuse_jax.nn.models.Generator`` (same layers,
  widths, bias/no-bias choices, BatchNorm placement; ``nn.ConvTranspose2d(4, 2, 1)`` where ours
  computes the identical function as a sub-pixel 3x3 conv).
* ``Discriminator``: the same PatchGAN as ``patchfuse_jax.nn.models.Discriminator``.
* ``TorchTrainer.step``: the same work as ``patchfuse_jax.train.step.train_step`` (one G forward;
  D_ir and D_vis one Adam step each; G one Adam step against the updated discriminators).
* ``load_flax_generator`` / ``load_flax_discriminator``: copy Flax variables into these modules
  (used by ``compare_torch.py --only=check`` to show both compute the same function).
"""

from __future__ import annotations

import contextlib
import re

import torch
import torch.nn.functional as F
from torch import nn


def conv_padding(kernel: int) -> int:
    return (kernel - 1) // 2


def receptive_field(layers):
    """``(size, stride, padding)`` of a conv stack, as ``patchfuse_jax.nn.models.receptive_field``."""
    size, jump, pad = 1, 1, 0
    for k, s in layers:
        size += (k - 1) * jump
        pad += conv_padding(k) * jump
        jump *= s
    return size, jump, pad


def batch_norm(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # == flax momentum 0.9


class Generator(nn.Module):
    """pix2pix U-Net, ``(B, 2, H, W)`` -> ``(B, 1, H, W)`` in [0, 1] (BatchNorm variant)."""

    def __init__(self, num_downs: int = 8, ngf: int = 64, in_ch: int = 2, out_ch: int = 1):
        super().__init__()
        self.num_downs = num_downs
        feats = [min(ngf * 2**i, 8 * ngf) for i in range(num_downs)]
        self.down = nn.ModuleList()
        self.down_norm = nn.ModuleList()
        cin = in_ch
        for level, f in enumerate(feats):
            normed = 0 < level < num_downs - 1
            self.down.append(nn.Conv2d(cin, f, 4, 2, 1, bias=not normed))
            self.down_norm.append(batch_norm(f) if normed else nn.Identity())
            cin = f
        # up[level]: decoder of encoder level ``level`` (innermost first when iterating reversed).
        self.up = nn.ModuleList()
        self.up_norm = nn.ModuleList()
        for level in range(num_downs):
            cin = feats[level] * (1 if level == num_downs - 1 else 2)
            cout = feats[level - 1] if level > 0 else out_ch
            self.up.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=level == 0))
            self.up_norm.append(batch_norm(cout) if level > 0 else nn.Identity())

    def forward(self, x):
        h, w = x.shape[2:]
        m = 2**self.num_downs
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        skips = []
        for level, (conv, norm) in enumerate(zip(self.down, self.down_norm)):
            if level > 0:
                x = F.leaky_relu(x, 0.2)
            x = norm(conv(x))
            skips.append(x)
        for level in reversed(range(self.num_downs)):
            if level < self.num_downs - 1:
                x = torch.cat([skips[level], x], 1)
            x = self.up_norm[level](self.up[level](F.relu(x)))
        return torch.sigmoid(x)[:, :, :h, :w]


class Discriminator(nn.Module):
    """PatchGAN, ``(B, 1, H, W)`` in [0, 1] -> ``(B, h, w)`` raw LSGAN scores."""

    def __init__(self, layers, ndf: int = 64, in_ch: int = 1):
        super().__init__()
        n = len(layers)
        mods = []
        cin = in_ch
        for i, (k, s) in enumerate(layers):
            last = i == n - 1
            normed = 0 < i < n - 1
            cout = 1 if last else min(ndf * 2**i, 8 * ndf)
            mods.append(nn.Conv2d(cin, cout, k, s, conv_padding(k), bias=not normed))
            if not last:
                if normed:
                    mods.append(batch_norm(cout))
                mods.append(nn.LeakyReLU(0.2))
            cin = cout
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x * 2.0 - 1.0)[:, 0]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------- losses


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    hw = size // 2
    shift = (2 * hw - size + 1) / 2
    f = torch.exp(-0.5 * ((torch.arange(size, dtype=torch.float32) - hw + shift) / sigma) ** 2)
    return f / f.sum()


class SSIM(nn.Module):
    """Per-image SSIM ``(B,)`` exactly as dm_pix.ssim (11x11 Gaussian sigma 1.5, k1=0.01,
    k2=0.03, 'valid' windows, variance clipping). The Gaussian is separable; like dm-pix we
    filter with it as two 1-D passes (two ``conv2d`` calls, 11x1 then 1x11)."""

    def __init__(self, size: int = 11, sigma: float = 1.5):
        super().__init__()
        g = _gaussian_1d(size, sigma)
        self.register_buffer("gx", g.view(1, 1, 1, size))
        self.register_buffer("gy", g.view(1, 1, size, 1))

    def blur(self, z):  # (B, C, H, W), channels filtered independently
        c = z.shape[1]
        z = F.conv2d(z, self.gx.expand(c, 1, 1, -1), groups=c)
        return F.conv2d(z, self.gy.expand(c, 1, -1, 1), groups=c)

    def forward(self, a, b, k1=0.01, k2=0.03):
        mu0, mu1 = self.blur(a), self.blur(b)
        mu00, mu11, mu01 = mu0 * mu0, mu1 * mu1, mu0 * mu1
        eps = torch.finfo(torch.float32).eps ** 2
        s00 = torch.clamp(self.blur(a * a) - mu00, min=eps)
        s11 = torch.clamp(self.blur(b * b) - mu11, min=eps)
        s01 = self.blur(a * b) - mu01
        s01 = torch.sign(s01) * torch.minimum(torch.sqrt(s00 * s11), s01.abs())
        c1, c2 = k1**2, k2**2
        m = ((2 * mu01 + c1) * (2 * s01 + c2)) / ((mu00 + mu11 + c1) * (s00 + s11 + c2))
        return m.mean(dim=(1, 2, 3))


def _wmean(x, w):
    return (x if w is None else w * x).mean()


def lsgan_d_loss(d_real, d_fake, w=None):
    return 0.5 * _wmean((d_real - 1.0) ** 2, w) + 0.5 * _wmean(d_fake**2, w)


def lsgan_g_loss(d_fake, w=None):
    return 0.5 * _wmean((d_fake - 1.0) ** 2, w)


def ir_weight_map(ir, out_hw, layers):
    """Average of the IR pixels under each D cell's patch (``weight_pooling=avg``,
    ``weight_scale=raw``). ``avg_pool2d`` with the receptive field's size/stride/padding and
    ``count_include_pad=False`` gives the same windows and the same in-image mean as
    ``patchfuse_jax.train.weightmap.ir_weight_map`` when the output sizes agree (they do for the
    presets and the benchmarked sizes; asserted). Its cost (a dense size x size window) is
    higher than ours (separable), and negligible next to the convs either way."""
    size, stride, pad = receptive_field(layers)
    w = F.avg_pool2d(ir, size, stride, pad, count_include_pad=False)[:, 0]
    assert tuple(w.shape[1:]) == tuple(out_hw), (w.shape, out_hw)
    return w


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Train-mode forward that keeps BatchNorm running stats (momentum 0) and computes no
    parameter gradients: what ``train_step`` does with D in the G phase."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    moms = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    module.requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True)
        for m, mom in zip(bns, moms):
            m.momentum = mom


class TorchTrainer:
    """``patchfuse_jax.train.step.train_step`` in PyTorch: G, D_ir, D_vis with their own Adam."""

    def __init__(
        self,
        *,
        num_downs,
        ngf,
        ndf,
        d_layers,
        learning_rate=1e-4,
        b1=0.5,
        b2=0.999,
        weight_mode="dg",
        gamma=0.1,
        lam=0.5,
    ):
        self.g = Generator(num_downs, ngf)
        self.d_ir = Discriminator(d_layers, ndf)
        self.d_vis = Discriminator(d_layers, ndf)
        self.layers = tuple(d_layers)
        self.weight_d = weight_mode in ("d", "dg")
        self.weight_g = weight_mode in ("g", "dg")
        self.gamma, self.lam = gamma, lam
        self.ssim = SSIM()
        opt = lambda m: torch.optim.Adam(m.parameters(), lr=learning_rate, betas=(b1, b2), eps=1e-8)
        self.opt_g, self.opt_ir, self.opt_vis = opt(self.g), opt(self.d_ir), opt(self.d_vis)
        for m in (self.g, self.d_ir, self.d_vis):
            m.train()

    def step(self, ir, vis):
        """One training step on ``ir, vis (B, 1, H, W)``; returns the (detached) losses."""
        # 1. G forward (its graph is kept for step 3).
        fused = self.g(torch.cat([ir, vis], 1))
        fake = fused.detach()
        wmap = None

        # 2. Discriminators: one Adam step each on (source = real, detached fused = fake).
        def d_update(d, opt, real, weighted):
            nonlocal wmap
            d_real = d(real)
            d_fake = d(fake)
            w = None
            if weighted or self.weight_g:
                if wmap is None:
                    wmap = ir_weight_map(ir, d_real.shape[1:], self.layers)
                w = wmap if weighted else None
            loss = lsgan_d_loss(d_real, d_fake, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        loss_d_ir = d_update(self.d_ir, self.opt_ir, ir, self.weight_d)
        loss_d_vis = d_update(self.d_vis, self.opt_vis, vis, False)

        # 3. G against the updated discriminators (same fused image, no second G forward).
        with frozen(self.d_ir), frozen(self.d_vis):
            l_ssim = 1.0 - 0.5 * (self.ssim(fused, ir).mean() + self.ssim(fused, vis).mean())
            l_mse = 0.5 * (((fused - ir) ** 2).mean() + ((fused - vis) ** 2).mean())
            adv_ir = lsgan_g_loss(self.d_ir(fused), wmap if self.weight_g else None)
            adv_vis = lsgan_g_loss(self.d_vis(fused))
            loss_g = l_ssim + l_mse + self.gamma * adv_ir + self.lam * adv_vis
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        self.opt_g.step()
        return dict(loss_g=loss_g.detach(), loss_d_ir=loss_d_ir, loss_d_vis=loss_d_vis)


# ------------------------------------------------------------------- Flax -> torch weights


def _numbered(tree: dict, kind: str) -> list:
    """Flax auto-named submodules ``Kind_0, Kind_1, ...`` in creation order."""
    pat = re.compile(rf"^{kind}_(\d+)$")
    items = sorted((int(pat.match(k).group(1)), v) for k, v in tree.items() if pat.match(k))
    return [v for _, v in items]


def _t(x) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(x, dtype=np.float32))


def _load_conv(conv: nn.Conv2d, p: dict):
    conv.weight.data.copy_(_t(p["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW
    if conv.bias is not None:
        conv.bias.data.copy_(_t(p["bias"]))


def _load_upsample(conv: nn.ConvTranspose2d, p: dict):
    # Flax (4, 4, Cin, Cout) transposed-conv kernel (not transpose_kernel) == torch weight
    # (Cin, Cout, 4, 4) flipped in both spatial axes.
    conv.weight.data.copy_(_t(p["kernel"]).flip(0, 1).permute(2, 3, 0, 1))
    if conv.bias is not None:
        conv.bias.data.copy_(_t(p["bias"]))


def _load_bn(bn: nn.BatchNorm2d, p: dict, s: dict):
    bn.weight.data.copy_(_t(p["scale"]))
    bn.bias.data.copy_(_t(p["bias"]))
    bn.running_mean.copy_(_t(s["mean"]))
    bn.running_var.copy_(_t(s["var"]))


def load_flax_generator(g: Generator, variables: dict):
    """Copies Flax ``Generator`` variables (auto-named Conv_i / BatchNorm_i / Upsample2x_i, in
    creation order: encoder convs + norms, then decoder innermost first) into ``g``. Raises
    ``KeyError`` / ``ValueError`` when the Flax module is laid out differently."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    convs, ups = _numbered(params, "Conv"), _numbered(params, "Upsample2x")
    bns, bstats = _numbered(params, "BatchNorm"), _numbered(stats, "BatchNorm")
    n = g.num_downs
    if len(convs) != n or len(ups) != n or len(bns) != len(bstats) or len(bns) != 2 * n - 3:
        raise ValueError(f"unexpected Flax generator layout: {sorted(params)}")
    for conv, p in zip(g.down, convs):
        _load_conv(conv, p)
    normed = [m for m in g.down_norm if isinstance(m, nn.BatchNorm2d)]
    normed += [g.up_norm[level] for level in reversed(range(n)) if level > 0]
    for level, p in zip(reversed(range(n)), ups):
        _load_upsample(g.up[level], p)
    for bn, p, s in zip(normed, bns, bstats):
        _load_bn(bn, p, s)


def load_flax_discriminator(d: Discriminator, variables: dict):
    params, stats = variables["params"], variables.get("batch_stats", {})
    convs = [m for m in d.net if isinstance(m, nn.Conv2d)]
    bns = [m for m in d.net if isinstance(m, nn.BatchNorm2d)]
    pc, pb, sb = _numbered(params, "Conv"), _numbered(params, "BatchNorm"), _numbered(stats, "BatchNorm")
    if len(pc) != len(convs) or len(pb) != len(bns) or len(sb) != len(bns):
        raise ValueError(f"unexpected Flax discriminator layout: {sorted(params)}")
    for conv, p in zip(convs, pc):
        _load_conv(conv, p)
    for bn, p, s in zip(bns, pb, sb):
        _load_bn(bn, p, s)
