"""Winograd convolutions F(2x2, rxr) for r = 2 and 4 (exact re-expressions of the direct conv).

Lavin & Gray (2016), "Fast algorithms for convolutional neural networks". Along one axis, the
two outputs y = (y_0, y_1) of an (r + 1)-sample input tile d under the r-tap kernel g are
y = A^T [(G g) * (B^T d)] (Toom-Cook). In 2-D every 2x2 output tile takes the (r + 1)^2
products of the transformed input tile with the transformed kernel, so the conv becomes one
batched matmul ((r+1)^2, tiles, Cin) @ ((r+1)^2, Cin, Cout): per tile and channel pair 25
multiply-adds instead of 64 (r = 4: the discriminators' 256 -> 512 layer) and 9 instead of
16 (r = 2: the 4x4 stride-2 convs written over their space-to-depth input, used for their
gradients; ``space_to_depth_conv``). r = 4 interpolates at 0, 1, -1, 1/2 and infinity;
its float32 rounding error is about 3x the direct conv's (relative 3e-6 vs 1e-6 at Cin = 256).
r = 2 uses 0, -1 and infinity, whose transforms are sums and differences only. bfloat16
keeps the direct forms. The gradients are Winograd forms too: ``dM = A dY A^T`` per tile, then
the batched matmuls ``dV = dM G_k^T`` and ``dG_k = V^T dM``, then the adjoint transforms.

Shapes: NHWC inputs, HWIO kernels, no bias. Used by ``convs`` (which decides where) on CPU.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

TABLES = {  # r: (A^T (2, r+1), G (r+1, r), B^T (r+1, r+1))
    4: (((1, 1, 1, 1, 0), (0, 1, -1, 0.5, 1)),
        ((2, 0, 0, 0), (1, 1, 1, 1), (-1 / 3, 1 / 3, -1 / 3, 1 / 3),
         (-8 / 3, -4 / 3, -2 / 3, -1 / 3), (0, 0, 0, 1)),
        ((0.5, -1, -0.5, 1, 0), (0, -0.5, 0.5, 1, 0), (0, 0.5, -1.5, 1, 0), (0, -1, 0, 1, 0),
         (0, 0.5, -1, -0.5, 1))),
    2: (((1, 1, 0), (0, -1, 1)),
        ((1, 0), (-1, 1), (0, 1)),
        ((1, 1, 0), (0, 1, 0), (0, 1, 1))),
}
DTYPES = (jnp.float32, jnp.float64)  # bfloat16 keeps the direct forms


def _lin(coefs, terms):
    """``sum_i coefs[i] * terms[i]``, skipping zero coefficients (elementwise adds XLA fuses)."""
    out = None
    for c, t in zip(coefs, terms):
        if c:
            t = t if c == 1 else -t if c == -1 else t * c
            out = t if out is None else out + t
    return out


def _geometry(shape, r: int, pad: int):
    """Output size, tile counts, and the padding that makes the input ``2 t + r - 1`` long."""
    _, h, w, _ = shape
    ho, wo = h + 2 * pad - r + 1, w + 2 * pad - r + 1
    th, tw = -(-ho // 2), -(-wo // 2)
    widths = ((0, 0), (pad, 2 * th + r - 1 - h - pad), (pad, 2 * tw + r - 1 - w - pad), (0, 0))
    return (ho, wo), (th, tw), widths


def _input_transform(xp, r: int, th: int, tw: int):
    """``B^T d B`` of every (r+1)^2 tile (stride 2) of ``xp (B, 2th+r-1, 2tw+r-1, C)``:
    ``((r+1)^2, B*th*tw, C)``."""
    bt, n = TABLES[r][2], r + 1
    u = [_lin(bt[a], [xp[:, i:i + 2 * th - 1:2] for i in range(n)]) for a in range(n)]
    v = [_lin(bt[b], [u[a][:, :, j:j + 2 * tw - 1:2] for j in range(n)])
         for a in range(n) for b in range(n)]
    return jnp.stack(v).reshape(n * n, -1, xp.shape[-1])


def _shifted_sum(terms, axis: int, n: int):
    """``sum_u terms[u]`` with ``terms[u]`` placed at offset ``u`` along ``axis`` of length ``n``."""
    def place(u, t):
        widths = [(0, 0)] * t.ndim
        widths[axis] = (u, n - u - t.shape[axis])
        return jnp.pad(t, widths)
    return sum(place(u, t) for u, t in enumerate(terms))


def _input_transform_adjoint(dv, r: int, padded_hw):
    """Adjoint of ``_input_transform``: ``dv ((r+1)^2, B, th, tw, C)`` -> ``dxp (B, 2th+r-1, ...)``.
    Tile sample ``i`` of tile ``t`` is row ``2t + i``: even samples land on the even rows at
    offsets 0, 1, ..., odd ones on the odd rows; the two parities are then interleaved."""
    def fold(e, axis, n):
        half = n // 2 + 1
        y = jnp.stack([_shifted_sum(e[0::2], axis, half), _shifted_sum(e[1::2], axis, half)], axis + 1)
        return y.reshape(*y.shape[:axis], -1, *y.shape[axis + 2:])[(slice(None),) * axis + (slice(0, n),)]
    bt_t, n = tuple(zip(*TABLES[r][2])), r + 1
    du = [fold([_lin(bt_t[j], [dv[n * a + b] for b in range(n)]) for j in range(n)], 2, padded_hw[1])
          for a in range(n)]
    return fold([_lin(bt_t[i], du) for i in range(n)], 1, padded_hw[0])


def _kernel_matrix(r: int, dtype):
    """``G (x) G`` ((r+1)^2, r^2): row ``(r+1) a + b``, column ``r i + j``."""
    g, n = TABLES[r][1], r + 1
    return jnp.asarray([[g[a][i] * g[b][j] for i in range(r) for j in range(r)]
                        for a in range(n) for b in range(n)], dtype)


def _output_transform(m, r: int, b: int, th: int, tw: int):
    """``A^T M A`` of every tile: ``m ((r+1)^2, B*th*tw, Cout)`` -> ``(B, 2th, 2tw, Cout)``."""
    at, n = TABLES[r][0], r + 1
    m = m.reshape(n, n, b, th, tw, -1)
    y = [[_lin(at[p], [_lin(at[q], [m[a, c] for c in range(n)]) for a in range(n)])
          for q in (0, 1)] for p in (0, 1)]
    y = jnp.stack([jnp.stack(y[p], 3) for p in (0, 1)], 2)      # (B, th, 2, tw, 2, Cout)
    return y.reshape(b, 2 * th, 2 * tw, -1)


def _output_transform_adjoint(dy, r: int):
    """Adjoint of ``_output_transform``: ``dy (B, 2th, 2tw, Cout)`` -> ``((r+1)^2, B*th*tw, Cout)``."""
    at, n = TABLES[r][0], r + 1
    d = [dy[:, p::2, q::2] for p in (0, 1) for q in (0, 1)]
    return jnp.stack([_lin([at[p][a] * at[q][c] for p in (0, 1) for q in (0, 1)], d)
                      for a in range(n) for c in range(n)]).reshape(n * n, -1, dy.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_winograd(x, kernel, pad: int):
    """Stride-1 conv of ``x (B, H, W, Cin)`` with ``kernel (r, r, Cin, Cout)`` (r in ``TABLES``),
    zero padding ``pad`` on every side: ``(B, H + 2 pad - r + 1, W + 2 pad - r + 1, Cout)``."""
    return _conv_winograd_fwd(x, kernel, pad)[0]


def _conv_winograd_fwd(x, kernel, pad):
    r, _, cin, cout = kernel.shape
    (ho, wo), (th, tw), widths = _geometry(x.shape, r, pad)
    v = _input_transform(jnp.pad(x, widths), r, th, tw)                             # (n^2, T, Cin)
    gk = (_kernel_matrix(r, kernel.dtype) @ kernel.reshape(r * r, -1)).reshape(-1, cin, cout)
    y = _output_transform(jnp.einsum("tmc,tco->tmo", v, gk), r, x.shape[0], th, tw)[:, :ho, :wo]
    return y, (v, gk, x.shape)


def _conv_winograd_bwd(pad, res, dy):
    v, gk, x_shape = res
    b, h, w, cin = x_shape
    r = round(gk.shape[0] ** 0.5) - 1
    (ho, wo), (th, tw), widths = _geometry(x_shape, r, pad)
    dm = _output_transform_adjoint(jnp.pad(dy, ((0, 0), (0, 2 * th - ho), (0, 2 * tw - wo), (0, 0))), r)
    dgk = jnp.einsum("tmc,tmo->tco", v, dm)
    dv = jnp.einsum("tmo,tco->tmc", dm, gk).reshape(-1, b, th, tw, cin)
    dxp = _input_transform_adjoint(dv, r, (2 * th + r - 1, 2 * tw + r - 1))
    dk = (_kernel_matrix(r, dgk.dtype).T @ dgk.reshape(gk.shape[0], -1)).reshape(r, r, cin, -1)
    return dxp[:, pad:pad + h, pad:pad + w], dk


conv_winograd.defvjp(_conv_winograd_fwd, _conv_winograd_bwd)


def space_to_depth_conv(x, kernel, pad: int):
    """A stride-2 conv with an even ``2r x 2r`` kernel as a stride-1 ``r x r`` Winograd conv of
    the 2x2 space-to-depth input (``4 Cin`` channels: input row ``2q + s`` is row ``q`` of
    phase ``s``; kernel row ``2a + s`` is row ``a`` of phase ``s``)."""
    b, h, w, cin = x.shape
    k, cout = kernel.shape[0], kernel.shape[-1]
    hp, wp = h + 2 * pad, w + 2 * pad
    ho, wo = (hp - k) // 2 + 1, (wp - k) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad + hp % 2), (pad, pad + wp % 2), (0, 0)))
    xs = xp.reshape(b, xp.shape[1] // 2, 2, xp.shape[2] // 2, 2, cin).transpose(0, 1, 3, 2, 4, 5)
    ks = kernel.reshape(k // 2, 2, k // 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    y = conv_winograd(xs.reshape(*xs.shape[:3], 4 * cin), ks.reshape(k // 2, k // 2, 4 * cin, cout), 0)
    return y[:, :ho, :wo]
