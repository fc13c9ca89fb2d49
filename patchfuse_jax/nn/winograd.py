"""Winograd convolutions F(m x m, r x r) (exact re-expressions of the direct conv).

Lavin & Gray (2016), "Fast algorithms for convolutional neural networks". Along one axis, the
m outputs y of an n = m + r - 1 sample input tile d under the r-tap kernel g are
y = A^T [(G g) * (B^T d)] (Toom-Cook at n - 1 finite points and infinity; ``transforms``
builds A^T, G, B^T from the points with exact fractions). In 2-D every m x m output tile takes
the n^2 products of the transformed input tile with the transformed kernel, so the conv becomes
one batched matmul (n^2, tiles, Cin) @ (n^2, Cin, Cout): per output and channel pair n^2 / m^2
multiply-adds instead of r^2. ``POINTS`` lists the forms used (docs/design.md has the choice
of points and their float32 error):

* F(4x4, 4x4), the discriminators' 256 -> 512 layer: 49 / 16 = 3.1 instead of 16;
* F(2x2, 4x4): 25 / 4 = 6.25 (8x8 stride-2 kernels through ``space_to_depth_conv``; none in
  the shipped networks);
* F(2x2, 2x2), the gradients of the 4x4 stride-2 convs written over their space-to-depth input
  (``space_to_depth_conv``) and of the decoder upsampling's 2x2 conv form: 9 / 4 instead of 4.
  Its points 0, -1 and infinity make every transform sums and differences.

bfloat16 keeps the direct forms. The gradients are Winograd forms too: ``dM = A dY A^T`` per
tile, then the batched matmuls ``dV = dM G_k^T`` and ``dG_k = V^T dM``, then the adjoint
transforms. Shapes: NHWC inputs, HWIO kernels, no bias. Used by ``convs`` (which decides
where) on CPU.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

# (m, r): the n - 1 = m + r - 2 finite interpolation points (infinity is always the last).
POINTS = {
    (2, 2): (0, -1),
    (2, 4): (0, 1, -1, Fraction(1, 2)),
    (4, 4): (0, 1, -1, Fraction(1, 2), Fraction(-1, 2), 2),
}
DTYPES = (jnp.float32, jnp.float64)  # bfloat16 keeps the direct forms


@functools.cache
def transforms(m: int, r: int):
    """``(A^T (m, n), G (n, r), B^T (n, n))`` as tuples of floats, for ``POINTS[(m, r)]``.

    With V_k the (n, k) evaluation matrix (row j: p_j^0 .. p_j^(k-1); the infinity row picks the
    leading coefficient) and f_j = prod_{l != j} (p_j - p_l) (1 at infinity), Toom-Cook
    multiplies polynomials as ``conv(a, g) = V_n^-1 [(V_m a) * (V_r g)]``; its transpose is the
    correlation: A^T = V_m^T, G = diag(1/f) V_r, B^T = diag(f) V_n^-T.
    """
    pts = [Fraction(p) for p in POINTS[(m, r)]]
    n = m + r - 1
    assert len(pts) == n - 1

    def vander(k):
        return [[p**i for i in range(k)] for p in pts] + [[Fraction(int(i == k - 1)) for i in range(k)]]

    f = [math.prod(p - q for q in pts if q != p) for p in pts] + [Fraction(1)]
    vn_inv = _inverse(vander(n))
    at = [list(col) for col in zip(*vander(m))]
    g = [[v / f[j] for v in row] for j, row in enumerate(vander(r))]
    bt = [[f[j] * vn_inv[i][j] for i in range(n)] for j in range(n)]
    as_float = lambda mat: tuple(tuple(float(v) for v in row) for row in mat)
    return as_float(at), as_float(g), as_float(bt)


def _inverse(a):
    """Exact inverse of a square matrix of Fractions (Gauss-Jordan)."""
    n = len(a)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for c in range(n):
        piv = next(i for i in range(c, n) if aug[i][c] != 0)
        aug[c], aug[piv] = aug[piv], aug[c]
        aug[c] = [v / aug[c][c] for v in aug[c]]
        for i in range(n):
            if i != c and aug[i][c] != 0:
                aug[i] = [v - aug[i][c] * w for v, w in zip(aug[i], aug[c])]
    return [row[n:] for row in aug]


def _lin(coefs, terms):
    """``sum_i coefs[i] * terms[i]``, skipping zero coefficients (elementwise adds XLA fuses)."""
    out = None
    for c, t in zip(coefs, terms):
        if c:
            t = t if c == 1 else -t if c == -1 else t * c
            out = t if out is None else out + t
    return out


def _geometry(shape, m: int, r: int, pad: int):
    """Output size, tile counts, and the padding that makes the input ``m t + r - 1`` long."""
    _, h, w, _ = shape
    ho, wo = h + 2 * pad - r + 1, w + 2 * pad - r + 1
    th, tw = -(-ho // m), -(-wo // m)
    widths = ((0, 0), (pad, m * th + r - 1 - h - pad), (pad, m * tw + r - 1 - w - pad), (0, 0))
    return (ho, wo), (th, tw), widths


def _input_transform(xp, m: int, r: int, th: int, tw: int):
    """``B^T d B`` of every n x n tile (stride m) of ``xp (B, m th + r - 1, m tw + r - 1, C)``:
    ``(n^2, B*th*tw, C)``."""
    bt, n = transforms(m, r)[2], m + r - 1
    u = [_lin(bt[a], [xp[:, i : i + m * (th - 1) + 1 : m] for i in range(n)]) for a in range(n)]
    v = [_lin(bt[b], [u[a][:, :, j : j + m * (tw - 1) + 1 : m] for j in range(n)]) for a in range(n) for b in range(n)]
    return jnp.stack(v).reshape(n * n, -1, xp.shape[-1])


def _shifted_sum(terms, axis: int, length: int):
    """``sum_u terms[u]`` with ``terms[u]`` placed at offset ``u`` along ``axis`` of ``length``."""

    def place(u, t):
        widths = [(0, 0)] * t.ndim
        widths[axis] = (u, length - u - t.shape[axis])
        return jnp.pad(t, widths)

    return sum(place(u, t) for u, t in enumerate(terms))


def _input_transform_adjoint(dv, m: int, r: int, padded_hw):
    """Adjoint of ``_input_transform``: ``dv (n^2, B, th, tw, C)`` -> ``dxp (B, m th + r - 1, ...)``.
    Tile sample ``i`` of tile ``t`` is row ``m t + i``: the samples with ``i % m == s`` land on
    the rows ``= s (mod m)`` at tile offsets ``i // m``; the m residues are then interleaved."""

    def fold(e, axis, size):
        per_residue = -(-size // m)
        y = jnp.stack([_shifted_sum(e[s::m], axis, per_residue) for s in range(m)], axis + 1)
        return y.reshape(*y.shape[:axis], -1, *y.shape[axis + 2 :])[(slice(None),) * axis + (slice(0, size),)]

    bt_t, n = tuple(zip(*transforms(m, r)[2])), m + r - 1
    du = [fold([_lin(bt_t[j], [dv[n * a + b] for b in range(n)]) for j in range(n)], 2, padded_hw[1]) for a in range(n)]
    return fold([_lin(bt_t[i], du) for i in range(n)], 1, padded_hw[0])


def _kron(mat, dtype):
    """``mat (x) mat``: the 2-D form of a 1-D transform on row-major flattened tiles (for G:
    ``(n^2, r^2)``, row ``n a + b``, column ``r i + j``)."""
    a = np.asarray(mat, np.float64)
    return jnp.asarray(np.kron(a, a), dtype)


def _output_transform(mm, m: int, r: int, b: int, th: int, tw: int):
    """``A^T M A`` of every tile: ``mm (n^2, B*th*tw, Cout)`` -> ``(B, m th, m tw, Cout)``. One
    matmul with ``A^T (x) A^T (m^2, n^2)``, then the m x m phases interleaved (a fused loop that
    re-reads all n^2 planes per output ran far below the memory rate: docs/benchmarks.md,
    'Measurements behind the code')."""
    n = m + r - 1
    y = (_kron(transforms(m, r)[0], mm.dtype) @ mm.reshape(n * n, -1)).reshape(m, m, b, th, tw, -1)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(b, m * th, m * tw, -1)


def _output_transform_adjoint(dy, m: int, r: int):
    """Adjoint of ``_output_transform``: ``dy (B, m th, m tw, Cout)`` -> ``(n^2, B*th*tw, Cout)``."""
    b, hh, ww, cout = dy.shape
    n = m + r - 1
    phases = dy.reshape(b, hh // m, m, ww // m, m, cout).transpose(2, 4, 0, 1, 3, 5).reshape(m * m, -1)
    return (_kron(transforms(m, r)[0], dy.dtype).T @ phases).reshape(n * n, -1, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_winograd(x, kernel, pad: int, tile: int = 2):
    """Stride-1 conv of ``x (B, H, W, Cin)`` with ``kernel (r, r, Cin, Cout)`` as F(tile x tile,
    r x r) (``(tile, r)`` in ``POINTS``), zero padding ``pad`` on every side:
    ``(B, H + 2 pad - r + 1, W + 2 pad - r + 1, Cout)``."""
    return _conv_winograd_fwd(x, kernel, pad, tile)[0]


def _conv_winograd_fwd(x, kernel, pad, m):
    r, _, cin, cout = kernel.shape
    (ho, wo), (th, tw), widths = _geometry(x.shape, m, r, pad)
    v = _input_transform(jnp.pad(x, widths), m, r, th, tw)  # (n^2, T, Cin)
    gk = (_kron(transforms(m, r)[1], kernel.dtype) @ kernel.reshape(r * r, -1)).reshape(-1, cin, cout)
    y = _output_transform(jnp.einsum("tmc,tco->tmo", v, gk), m, r, x.shape[0], th, tw)[:, :ho, :wo]
    return y, (v, gk, x.shape, r)


def _conv_winograd_bwd(pad, m, res, dy):
    v, gk, x_shape, r = res
    b, h, w, cin = x_shape
    (ho, wo), (th, tw), _ = _geometry(x_shape, m, r, pad)
    dm = _output_transform_adjoint(jnp.pad(dy, ((0, 0), (0, m * th - ho), (0, m * tw - wo), (0, 0))), m, r)
    dgk = jnp.einsum("tmc,tmo->tco", v, dm)
    dv = jnp.einsum("tmo,tco->tmc", dm, gk).reshape(-1, b, th, tw, cin)
    dxp = _input_transform_adjoint(dv, m, r, (m * th + r - 1, m * tw + r - 1))
    dk = (_kron(transforms(m, r)[1], dgk.dtype).T @ dgk.reshape(gk.shape[0], -1)).reshape(r, r, cin, -1)
    return dxp[:, pad : pad + h, pad : pad + w], dk


conv_winograd.defvjp(_conv_winograd_fwd, _conv_winograd_bwd)


def space_to_depth_conv(x, kernel, pad: int, tile: int = 2):
    """A stride-2 conv with an even ``2r x 2r`` kernel as a stride-1 ``r x r`` Winograd conv
    (F(tile x tile, r x r)) of the 2x2 space-to-depth input (``4 Cin`` channels: input row
    ``2q + s`` is row ``q`` of phase ``s``; kernel row ``2a + s`` is row ``a`` of phase ``s``)."""
    b, h, w, cin = x.shape
    k, cout = kernel.shape[0], kernel.shape[-1]
    hp, wp = h + 2 * pad, w + 2 * pad
    ho, wo = (hp - k) // 2 + 1, (wp - k) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (pad, pad + hp % 2), (pad, pad + wp % 2), (0, 0)))
    xs = xp.reshape(b, xp.shape[1] // 2, 2, xp.shape[2] // 2, 2, cin).transpose(0, 1, 3, 2, 4, 5)
    ks = kernel.reshape(k // 2, 2, k // 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    y = conv_winograd(xs.reshape(*xs.shape[:3], 4 * cin), ks.reshape(k // 2, k // 2, 4 * cin, cout), 0, tile)
    return y[:, :ho, :wo]
