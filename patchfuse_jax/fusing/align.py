"""Registration of unaligned IR/visible pairs: the homography that maps the visible image onto the
IR image, estimated from the images or from clicked points, and the warp that applies it.

    patchfuse align --ir=a.png --vis=b.png --out=H.json [--points=pts.csv]

Conventions: pixel coordinates ``(x, y)`` = (column, row), origin at the centre of the top-left
pixel. ``H`` is a float64 ``(3, 3)`` matrix with ``H[2, 2] = 1`` from the visible to the IR image:
``[x_ir, y_ir, w] ~ H @ [x_vis, y_vis, 1]`` (divide by ``w``). Warping the visible image onto the IR
grid samples it bilinearly at ``H^-1 (x_ir, y_ir)``; IR pixels whose source lies outside the visible
image are filled with 0 (black).

* Automatic (:func:`estimate`, :func:`estimate_homography`): on feature maps that IR and visible
  images share (gradient magnitude over its local mean: edges, whatever their polarity), a global
  search at the coarsest pyramid level (rotations -6..6 deg, scales 0.9-1.1, every integer shift
  up to 12 % of the size, by FFT normalised cross-correlation), plus the identity, plus OpenCV
  feature matches (ORB/SIFT/AKAZE on gradient maps + RANSAC) when OpenCV is installed (optional
  extra ``[align]``); ECC (enhanced correlation coefficient, Evangelidis & Psarakis 2008) from
  each start (a step that lowers the correlation is halved: monotone ascent); the candidates
  ranked by whole-frame correlation (ECC alone favours answers that shrink the overlap), the best
  four refined one level finer and ranked again, the winner refined to the full homography coarse
  to fine; at full size, the mean of the optima reached from it and from four symmetric
  perturbations of it (weak multimodal texture leaves a plateau of near-equal optima; its centre
  is a steadier answer than wherever one run stops). numpy/scipy, float64.
* From points (:func:`homography_from_points`, :func:`read_points`): least-squares DLT on
  Hartley-normalised coordinates; exact for exact points.
* Quality (:func:`edge_overlap`): normalised cross-correlation of the gradient magnitudes of the
  IR image and of the warped visible image, inside the warped image; before (identity) and after.
  ``align`` warns when an automatic fit is doubtful: worse overlap than the identity, a distant
  runner-up that correlates almost as well (ambiguous), a weak overlap, or a scale/rotation beyond
  the search's range.

Files: ``H.json`` (:func:`save_homography` / :func:`load_homography`; docs/deploy.md). Errors:
:class:`AlignError` (a ``ValueError``), one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from patchfuse_jax import io

PROG = "patchfuse align"
FORMAT = "patchfuse_jax.homography"
FORMAT_VERSION = 1
DIRECTION = "vis->ir"
POINT_COLUMNS = ("x_vis", "y_vis", "x_ir", "y_ir")
MIN_COVERAGE = 0.10  # below: the homography maps the image away (error)
WARN_COVERAGE = 0.50  # below: a warning
SCALE_RANGE = (0.25, 4.0)  # local scale at the visible image's centre outside: a warning
WEAK_OVERLAP = 0.1  # automatic fits with a lower edge overlap after: a warning
AUTO_SCALE = (0.85, 1.18)  # automatic fits beyond this scale or rotation (beyond the global
AUTO_ROTATION_DEG = 8.0  # search's range): a warning


class AlignError(ValueError):
    """A bad points file, homography file or fit; the message is the one-line error."""


# --- geometry ------------------------------------------------------------------------------------


def apply(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``xy (N, 2)`` mapped by ``H`` -> ``(N, 2)`` float64."""
    xy = np.asarray(xy, np.float64)
    p = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ np.asarray(H, np.float64).T
    return p[:, :2] / p[:, 2:]


def corners(hw: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of an ``(H, W)`` image, ``(4, 2)`` as ``(x, y)``."""
    h, w = hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def corner_error(H_est: np.ndarray, H_true: np.ndarray, vis_hw: tuple[int, int]) -> float:
    """Mean distance in IR pixels between the visible image's corners mapped by the two."""
    c = corners(vis_hw)
    return float(np.mean(np.linalg.norm(apply(H_est, c) - apply(H_true, c), axis=1)))


def _normalised(H: np.ndarray) -> np.ndarray:
    H = np.asarray(H, np.float64)
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H


def _source_coords(H: np.ndarray, out_hw: tuple[int, int]):
    """For every pixel of the ``out_hw`` (IR) grid, its position in the visible image (``H^-1``)
    and whether it maps in front of the camera (``w > 0``)."""
    h, w = out_hw
    Hi = np.linalg.inv(_normalised(H))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    d = Hi[2, 0] * xx + Hi[2, 1] * yy + Hi[2, 2]
    front = d > 1e-12
    d = np.where(front, d, 1.0)
    u = (Hi[0, 0] * xx + Hi[0, 1] * yy + Hi[0, 2]) / d
    v = (Hi[1, 0] * xx + Hi[1, 1] * yy + Hi[1, 2]) / d
    return u, v, front


def _inside(u: np.ndarray, v: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Points ``(u, v)`` (x, y) within an ``hw`` image, where bilinear sampling is defined."""
    h, w = hw
    return (u >= -1e-6) & (u <= w - 1 + 1e-6) & (v >= -1e-6) & (v <= h - 1 + 1e-6)


def _bilinear_taps(u: np.ndarray, v: np.ndarray, hw: tuple[int, int]):
    """Bilinear sampling of an ``hw`` image at ``(u, v)`` (clamped to the image): the four
    neighbours ``(i0, j0, i1, j1)`` and the fractions ``fu``, ``fv`` (float64)."""
    h, w = hw
    uc, vc = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    j0 = np.minimum(np.floor(uc).astype(np.intp), max(w - 2, 0))
    i0 = np.minimum(np.floor(vc).astype(np.intp), max(h - 2, 0))
    return (i0, j0, np.minimum(i0 + 1, h - 1), np.minimum(j0 + 1, w - 1)), uc - j0, vc - i0


class Warp:
    """The warp of ``vis_hw`` images onto the ``ir_hw`` grid by ``H`` (vis -> IR), computed once
    and applied to many frames (a fixed camera rig)."""

    def __init__(self, H: np.ndarray, vis_hw: tuple[int, int], ir_hw: tuple[int, int]):
        self.H = _normalised(H)
        self.vis_hw, self.ir_hw = tuple(vis_hw), tuple(ir_hw)
        u, v, front = _source_coords(self.H, self.ir_hw)
        self.valid = front & _inside(u, v, self.vis_hw)
        self._idx, fu, fv = _bilinear_taps(u, v, self.vis_hw)
        self._fu, self._fv = fu.astype(np.float32), fv.astype(np.float32)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """``img (h, w)`` / ``(h, w, C)`` on the visible grid -> the same on the IR grid, same dtype
        (integers rounded); 0 outside the visible image."""
        img = np.asarray(img)
        if img.shape[:2] != self.vis_hw:
            raise AlignError(
                f"homography: the visible image is {img.shape[0]}x{img.shape[1]}, "
                f"the warp was made for {self.vis_hw[0]}x{self.vis_hw[1]} (H x W)"
            )
        i0, j0, i1, j1 = self._idx
        a = img if img.dtype.kind == "f" else img.astype(np.float32)
        fu = self._fu[(...,) + (None,) * (img.ndim - 2)]
        fv = self._fv[(...,) + (None,) * (img.ndim - 2)]
        top = a[i0, j0] * (1 - fu) + a[i0, j1] * fu
        bot = a[i1, j0] * (1 - fu) + a[i1, j1] * fu
        out = top * (1 - fv) + bot * fv
        out[~self.valid] = 0
        if img.dtype.kind in "ui":
            info = np.iinfo(img.dtype)
            return np.clip(np.round(out), info.min, info.max).astype(img.dtype)
        if img.dtype == np.bool_:
            return out >= 0.5
        return out.astype(img.dtype, copy=False)


def warp_image(img: np.ndarray, H: np.ndarray, ir_hw: tuple[int, int]) -> np.ndarray:
    """The visible ``img`` (``(h, w)`` / ``(h, w, C)``, any dtype) warped onto the ``ir_hw`` grid by
    ``H`` (vis -> IR), bilinear, same dtype; 0 (black) where the source is outside the image."""
    img = np.asarray(img)
    return Warp(H, img.shape[:2], ir_hw)(img)


# --- quality -------------------------------------------------------------------------------------


def _gray64(img, name: str = "image") -> np.ndarray:
    g = io.to_gray(np.asarray(img), name=name)
    return io.to_unit_float(g.astype(np.float32) if g.dtype.kind == "f" else g, name=name).astype(np.float64)


def _edges(g: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_gradient_magnitude(g, sigma)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def edge_overlap(ir, vis, H: np.ndarray | None = None, sigma: float = 1.5) -> float:
    """Normalised cross-correlation (-1..1) of the gradient magnitudes of ``ir`` and of ``vis``
    warped onto it by ``H`` (default identity), inside the warped image less a
    ``3 sigma`` border. Any layout/dtype ``fuse`` takes, one image each."""
    from scipy import ndimage

    a, b = _gray64(ir, "ir"), _gray64(vis, "vis")
    warp = Warp(np.eye(3) if H is None else H, b.shape, a.shape)
    mask = ndimage.binary_erosion(warp.valid, iterations=int(np.ceil(3 * sigma)) + 1)
    if mask.sum() < 16:
        return 0.0
    return _ncc(_edges(a, sigma)[mask], _edges(warp(b), sigma)[mask])


def coverage(H: np.ndarray, vis_hw: tuple[int, int], ir_hw: tuple[int, int], n: int = 64) -> float:
    """Fraction (0..1) of the IR frame that the warped visible image covers (on an n x n grid)."""
    h, w = ir_hw
    ys, xs = np.meshgrid(np.linspace(0, h - 1, n), np.linspace(0, w - 1, n), indexing="ij")
    Hi = np.linalg.inv(_normalised(H))
    p = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]).T @ Hi.T
    front = p[:, 2] > 1e-12
    uv = p[:, :2] / np.where(front, p[:, 2], 1.0)[:, None]
    vh, vw = vis_hw
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] <= vw - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= vh - 1)
    return float(inside.mean())


def local_scale(H: np.ndarray, vis_hw: tuple[int, int]) -> float:
    """``sqrt |det J|`` of ``H`` at the visible image's centre: the area scale there, as a length."""
    H = _normalised(H)
    x, y = (vis_hw[1] - 1) / 2.0, (vis_hw[0] - 1) / 2.0
    d = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    u = apply(H, [[x, y]])[0]
    J = (H[:2, :2] - np.outer(u, H[2, :2])) / d
    return float(np.sqrt(abs(np.linalg.det(J))))


def _rotation_deg(H: np.ndarray, vis_hw: tuple[int, int]) -> float:
    """The rotation (degrees) of ``H`` at the visible image's centre (of its local affine part)."""
    H = _normalised(H)
    x, y = (vis_hw[1] - 1) / 2.0, (vis_hw[0] - 1) / 2.0
    d = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    J = (H[:2, :2] - np.outer(apply(H, [[x, y]])[0], H[2, :2])) / d
    return float(np.degrees(np.arctan2(J[1, 0] - J[0, 1], J[0, 0] + J[1, 1])))


def check_homography(H, vis_hw, ir_hw, name: str = "homography") -> list[str]:
    """Raises AlignError (naming ``name``) when ``H`` maps the visible image away: not finite,
    singular, the horizon crosses the image, or it covers under ``MIN_COVERAGE`` of the IR frame.
    Returns warnings (implausible but usable): low coverage, extreme scale."""
    H = np.asarray(H, np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise AlignError(f"{name}: expected a finite 3x3 matrix, got shape {H.shape}")
    if abs(H[2, 2]) < 1e-12 or np.linalg.cond(H / np.abs(H).max()) > 1e12:
        raise AlignError(f"{name}: the homography is singular (it maps the image onto a line)")
    H = _normalised(H)
    den = corners(vis_hw) @ H[2, :2] + H[2, 2]
    if np.any(den <= 1e-9):
        raise AlignError(
            f"{name}: the homography maps part of the visible image beyond the "
            "horizon (to infinity); is its direction vis->ir?"
        )
    cov = coverage(H, vis_hw, ir_hw)
    if cov < MIN_COVERAGE:
        raise AlignError(
            f"{name}: the homography maps the visible image away: it covers "
            f"{cov:.0%} of the IR frame ({ir_hw[0]}x{ir_hw[1]}); is its direction vis->ir?"
        )
    warns = []
    if cov < WARN_COVERAGE:
        warns.append(f"{name}: the warped visible image covers only {cov:.0%} of the IR frame")
    s = local_scale(H, vis_hw)
    if not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
        warns.append(
            f"{name}: implausible scale {s:.3g} between the images (expected "
            f"{SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g} for one camera rig)"
        )
    return warns


# --- from points ---------------------------------------------------------------------------------


def _hartley(p: np.ndarray) -> np.ndarray:
    c = p.mean(axis=0)
    d = np.sqrt(((p - c) ** 2).sum(axis=1)).mean()
    s = np.sqrt(2.0) / d if d > 0 else 1.0
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def _collinear(p: np.ndarray) -> bool:
    q = p - p.mean(axis=0)
    s = np.linalg.svd(q, compute_uv=False)
    return s[0] == 0 or s[1] / s[0] < 1e-6


def homography_from_points(vis_xy, ir_xy, name: str = "points") -> np.ndarray:
    """Least-squares (normalised DLT) ``H`` with ``ir ~ H vis`` from ``(N, 2)`` point pairs,
    N >= 4; exact for exact points. AlignError (naming ``name``) for too few or degenerate
    points."""
    a, b = np.asarray(vis_xy, np.float64), np.asarray(ir_xy, np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape != b.shape:
        raise AlignError(f"{name}: expected two (N, 2) point arrays, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 4:
        raise AlignError(f"{name}: {n} point pair(s); a homography needs at least 4")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise AlignError(f"{name}: the points contain NaN or Inf")
    for which, p in (("visible", a), ("IR", b)):
        if _collinear(p):
            raise AlignError(
                f"{name}: the {which} points are collinear (or coincide); a "
                "homography needs 4 points with no 3 on a line"
            )
    Ta, Tb = _hartley(a), _hartley(b)
    pa = apply(Ta, a)
    pb = apply(Tb, b)
    A = np.zeros((2 * n, 9))
    x, y, u, v = pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1]
    A[0::2, 0:3] = np.stack([-x, -y, -np.ones(n)], 1)
    A[0::2, 6:9] = np.stack([u * x, u * y, u], 1)
    A[1::2, 3:6] = np.stack([-x, -y, -np.ones(n)], 1)
    A[1::2, 6:9] = np.stack([v * x, v * y, v], 1)
    _, s, vt = np.linalg.svd(A)
    Hn = vt[-1].reshape(3, 3)
    if s[-2] < 1e-9 * s[0] or np.linalg.cond(Hn) > 1e10:
        raise AlignError(
            f"{name}: the points are degenerate (three of them on a line?): they "
            "determine no unique, invertible homography"
        )
    H = np.linalg.inv(Tb) @ Hn @ Ta
    if abs(H[2, 2]) < 1e-12:
        raise AlignError(f"{name}: the fitted homography maps the visible origin to infinity")
    return H / H[2, 2]


def read_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A CSV file of clicked point pairs: a header line naming the columns ``x_vis, y_vis, x_ir,
    y_ir`` (any order; other columns ignored), then one pair a line (``#`` comments and blank
    lines skipped). Returns ``(vis_xy, ir_xy)``, ``(N, 2)`` float64 each; AlignError naming the
    file otherwise (also for fewer than 4 pairs or collinear points)."""
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = [
                (i + 1, line)
                for i, line in enumerate(fh.read().splitlines())
                if line.strip() and not line.lstrip().startswith("#")
            ]
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise AlignError(f"{path}: cannot read the points file ({why})") from None
    if not lines:
        raise AlignError(
            f"{path}: empty points file (expected a header {','.join(POINT_COLUMNS)} and at least 4 point pairs)"
        )
    rows = list(csv.reader(line for _, line in lines))
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in POINT_COLUMNS if c not in header]
    if missing:
        raise AlignError(
            f"{path}: line {lines[0][0]}: expected a header naming the columns "
            f"{','.join(POINT_COLUMNS)}; missing {', '.join(missing)}"
        )
    cols = [header.index(c) for c in POINT_COLUMNS]
    values = []
    for (lineno, _), row in zip(lines[1:], rows[1:]):
        try:
            values.append([float(row[c]) for c in cols])
        except (ValueError, IndexError):
            raise AlignError(
                f"{path}: line {lineno}: expected {len(header)} numbers ({','.join(header)}), got {','.join(row)!r}"
            ) from None
    pts = np.array(values, np.float64).reshape(-1, 4)
    if len(pts) < 4:
        raise AlignError(f"{path}: {len(pts)} point pair(s); a homography needs at least 4")
    if not np.all(np.isfinite(pts)):
        raise AlignError(f"{path}: the points contain NaN or Inf")
    for which, p in (("visible", pts[:, :2]), ("IR", pts[:, 2:])):
        if _collinear(p):
            raise AlignError(
                f"{path}: the {which} points are collinear (or coincide); a "
                "homography needs 4 points with no 3 on a line"
            )
    return pts[:, :2], pts[:, 2:]


# --- automatic: ECC on gradient magnitudes ---------------------------------------------------------

_MODELS = {"translation": [2, 5], "affine": [0, 1, 2, 3, 4, 5], "homography": list(range(8))}
_UP = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # coarse -> fine pixel coordinates
ECC_HALVINGS = 4  # an ECC step that lowers the correlation is halved up to this many times


def _down(g: np.ndarray) -> np.ndarray:
    """2x2 block means (odd last row/column dropped): coarse pixel (i, j) is centred at fine
    ``(2i + 0.5, 2j + 0.5)``, i.e. ``fine = _UP @ coarse``."""
    h, w = g.shape[0] // 2 * 2, g.shape[1] // 2 * 2
    g = g[:h, :w]
    return 0.25 * (g[0::2, 0::2] + g[1::2, 0::2] + g[0::2, 1::2] + g[1::2, 1::2])


def _feature(g: np.ndarray) -> np.ndarray:
    """Gradient magnitude over its local mean (local contrast normalised), lightly smoothed."""
    from scipy import ndimage

    e = _edges(g, 1.0)
    e = e / (ndimage.gaussian_filter(e, 8.0) + 0.1 * e.mean() + 1e-12)
    return ndimage.gaussian_filter(e, 1.0)


def _norm_matrix(hw) -> np.ndarray:
    h, w = hw
    s = max(h, w) / 2.0
    return np.array([[1 / s, 0, -(w - 1) / 2 / s], [0, 1 / s, -(h - 1) / 2 / s], [0, 0, 1]])


def _ecc(
    T: np.ndarray, I: np.ndarray, W: np.ndarray, model: str, iters: int, tol: float = 0.01, max_px: int = 25_000
) -> tuple[np.ndarray, float]:
    """ECC: maximises the correlation of ``T(x)`` and ``I(W x)`` over ``W`` (3x3, T grid -> I
    grid), starting at ``W``; returns the best ``W`` and its correlation. Large templates are
    sampled on a regular grid of about ``max_px`` pixels (the gradients stay full-resolution).
    A step that lowers the correlation is halved from the best point (up to ``ECC_HALVINGS``
    times): ECC's Gauss-Newton step overshoots along the weakly determined perspective terms,
    and without this the fit stalls wherever the first overshoot happens."""
    h, w = T.shape
    Nt, Ni = _norm_matrix(T.shape), _norm_matrix(I.shape)
    si = 1.0 / Ni[0, 0]
    Iy, Ix = np.gradient(I)
    IG = np.stack([Ix * si, Iy * si], axis=-1)  # gradients in normalised coordinates
    step = max(1, int(np.sqrt(h * w / max_px)))
    yy, xx = np.mgrid[0:h:step, 0:w:step]
    xn = xx.ravel() * Nt[0, 0] + Nt[0, 2]
    yn = yy.ravel() * Nt[1, 1] + Nt[1, 2]
    tflat = T[::step, ::step].ravel()
    P = Ni @ _normalised(W) @ np.linalg.inv(Nt)
    P = P / P[2, 2]
    cols = np.asarray(_MODELS[model])
    best, best_rho, best_dp, frac = P.copy(), -np.inf, None, 1.0
    cpts = apply(Nt, corners(T.shape))
    for _ in range(iters):
        den = P[2, 0] * xn + P[2, 1] * yn + 1.0
        front = den > 1e-9
        den = np.where(front, den, 1.0)
        un = (P[0, 0] * xn + P[0, 1] * yn + P[0, 2]) / den
        vn = (P[1, 0] * xn + P[1, 1] * yn + P[1, 2]) / den
        ui, vi = (un - Ni[0, 2]) * si, (vn - Ni[1, 2]) * si
        ok = front & _inside(ui, vi, I.shape)
        rho = -np.inf
        if ok.sum() >= 50:
            # bilinear sampling inside the image (the gradients only when they are needed)
            (i0, j0, i1, j1), fu, fv = _bilinear_taps(ui[ok], vi[ok], I.shape)
            w00, w01, w10, w11 = (1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv
            iw = I[i0, j0] * w00 + I[i0, j1] * w01 + I[i1, j0] * w10 + I[i1, j1] * w11
            t = tflat[ok]
            t = t - t.mean()
            iw = iw - iw.mean()
            tn, inn = np.sqrt(t @ t), np.sqrt(iw @ iw)
            if tn > 0 and inn > 0:
                corr = float(t @ iw)
                rho = corr / (tn * inn)
        if rho <= best_rho:
            # worse than the best: retry a shorter step from it
            frac *= 0.5
            if best_dp is None or frac < 0.5**ECC_HALVINGS:
                break
            new = best.copy()
            new.flat[cols] += frac * best_dp
        else:
            best, best_rho, frac = P.copy(), rho, 1.0
            x, y, d, u, v = xn[ok], yn[ok], den[ok], un[ok], vn[ok]
            gx, gy = (
                IG[i0, j0] * w00[:, None]
                + IG[i0, j1] * w01[:, None]
                + IG[i1, j0] * w10[:, None]
                + IG[i1, j1] * w11[:, None]
            ).T
            gx, gy = gx / d, gy / d
            r = u * gx + v * gy
            g = np.stack([x * gx, y * gx, gx, x * gy, y * gy, gy, -x * r, -y * r], axis=1)
            G = g[:, cols] if len(cols) < 8 else g
            G -= G.mean(axis=0)
            Hs = G.T @ G
            try:
                ip = G.T @ iw
                tp = G.T @ t
                iph = np.linalg.solve(Hs, ip)
                lam_n = inn**2 - ip @ iph
                lam_d = corr - tp @ iph
                if lam_d <= 0:
                    break
                err = (lam_n / lam_d) * t - iw
                best_dp = np.linalg.solve(Hs, G.T @ err)
            except np.linalg.LinAlgError:
                break
            new = P.copy()
            new.flat[cols] += best_dp
        moved = np.abs(apply(new, cpts) - apply(best, cpts)).max() * si
        P = new
        if moved < tol:
            break
    W_best = np.linalg.inv(Ni) @ best @ Nt
    return W_best / W_best[2, 2], best_rho


def _box_sums(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sums of ``a`` over every ``shape`` window ("valid" positions), by cumulative sums."""
    c = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = shape
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def _match(T: np.ndarray, I: np.ndarray, r: int) -> np.ndarray:
    """Normalised cross-correlation of ``T`` less an ``r`` border against ``I`` (same shape) at
    every integer shift ``|dx|, |dy| <= r``: ``(2r + 1, 2r + 1)``, entry ``[r + dy, r + dx]`` for
    ``T(x, y) ~ I(x + dx, y + dy)``."""
    from scipy.signal import fftconvolve

    t = T[r : T.shape[0] - r, r : T.shape[1] - r]
    t = t - t.mean()
    n = t.size
    num = fftconvolve(I, t[::-1, ::-1], mode="valid")
    s1, s2 = _box_sums(I, t.shape), _box_sums(I * I, t.shape)
    den = np.sqrt(np.maximum(s2 - s1 * s1 / n, 1e-12) * max(float((t * t).sum()), 1e-12))
    return num / den


def _similarity(angle: float, scale: float, hw) -> np.ndarray:
    """Rotation by ``angle`` (rad) and ``scale`` about the centre of an ``hw`` frame (3x3)."""
    h, w = hw
    c = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1.0]])
    R = np.diag([scale, scale, 1.0])
    R[:2, :2] = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return c @ R @ np.linalg.inv(c)


def _global_search(T: np.ndarray, I: np.ndarray, angles, scales, radius: int, keep: int):
    """Candidates ``W`` (``T`` grid -> ``I`` grid) from an exhaustive search over rotations and
    scales about the centre and integer shifts (normalised cross-correlation, :func:`_match`);
    the best ``keep`` with distinct corners, as ``[(score, W), ...]``, best first."""
    from scipy import ndimage

    found = []
    fill = float(I.mean())
    for s in scales:
        for t in angles:
            S = _similarity(t, s, T.shape)
            warp = Warp(np.linalg.inv(S), I.shape, T.shape)
            Iw = warp(I)
            Iw[~warp.valid] = fill
            m = _match(T, Iw, radius)
            # the best few peaks of this map (3x3 local maxima)
            peaks = (m == ndimage.maximum_filter(m, 3)) & np.isfinite(m)
            for k in np.argsort(m[peaks])[::-1][:3]:
                dy, dx = np.argwhere(peaks)[k] - radius
                W = S @ np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])
                found.append((float(m[peaks][k]), W))
    return _distinct(found, T.shape, keep, 1.5)


def _distinct(cands, hw, keep: int, min_px: float):
    """The best ``keep`` of ``[(score, W), ...]`` whose corners differ by more than ``min_px``."""
    out = []
    for score, W in sorted(cands, key=lambda c: -c[0]):
        if all(corner_error(W, W2, hw) > min_px for _, W2 in out):
            out.append((score, W))
            if len(out) == keep:
                break
    return out


def _frame_score(T: np.ndarray, I: np.ndarray, W: np.ndarray) -> float:
    """Correlation of ``T`` and ``I(W x)`` over the whole ``T`` frame, ``I``'s mean standing in
    where ``W x`` falls outside ``I``: like ECC's, but an answer that covers less of the frame
    scores less (ECC alone favours shrinking the overlap onto a few strong edges)."""
    warp = Warp(np.linalg.inv(W), I.shape, T.shape)
    Iw = warp(I)
    Iw[~warp.valid] = I.mean()
    return _ncc(T, Iw)


def _opencv_candidates(a: np.ndarray, b: np.ndarray, scale: float) -> list[np.ndarray]:
    """Feature-matching starts (``W``: IR -> visible, on a grid ``scale`` times the full one):
    ORB, SIFT and AKAZE (those this OpenCV has) keypoints on the two images' 8-bit normalised
    gradient magnitudes, matched (ratio test) and fitted by RANSAC. Empty when OpenCV is not installed or nothing fits."""
    try:
        import cv2
    except ImportError:
        return []

    def u8(g):
        e = _edges(g, 1.0)
        return np.clip(255 * e / (np.percentile(e, 99.5) + 1e-12), 0, 255).astype(np.uint8)

    ea, eb = u8(a), u8(b)
    out = []
    dets = [(cv2.ORB_create(4000), cv2.NORM_HAMMING)]
    dets += [
        (getattr(cv2, n)(), norm)
        for n, norm in (("SIFT_create", cv2.NORM_L2), ("AKAZE_create", cv2.NORM_HAMMING))
        if hasattr(cv2, n)
    ]
    for det, norm in dets:
        try:
            ka, da = det.detectAndCompute(ea, None)
            kb, db = det.detectAndCompute(eb, None)
            if da is None or db is None or len(ka) < 8 or len(kb) < 8:
                continue
            pairs = cv2.BFMatcher(norm).knnMatch(da, db, k=2)
            good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.85 * p[1].distance]
            if len(good) < 8:
                continue
            pa = np.float64([ka[m.queryIdx].pt for m in good])
            pb = np.float64([kb[m.trainIdx].pt for m in good])
            W, inl = cv2.findHomography(pa, pb, cv2.RANSAC, 3.0, maxIters=5000, confidence=0.999)
            if W is None or inl is None or inl.sum() < 8:
                continue
        except cv2.error:
            continue
        D = np.diag([scale, scale, 1.0])
        D[:2, 2] = 0.5 * scale - 0.5  # full pixel x -> coarse (x + 0.5) * scale - 0.5
        out.append(D @ W @ np.linalg.inv(D))
    return out


@dataclass
class Fit:
    """:func:`estimate` 's answer: ``H`` (vis -> IR), its correlation ``score`` (ECC on the
    feature maps at the level the candidates were compared, 0..1), the ``runner_up`` score of
    the best candidate that ends more than ``RUNNER_UP_PX`` away (None when there is none),
    and how far its corners are from ``H``'s (``runner_up_px``, full-size pixels)."""

    H: np.ndarray
    score: float
    runner_up: float | None = None
    runner_up_px: float | None = None
    method: str = "ecc"

    @property
    def ambiguous(self) -> bool:
        """Another, distant alignment correlates almost as well: the fit may be wrong."""
        return self.runner_up is not None and self.runner_up > self.score - AMBIGUOUS_MARGIN


FRAME_SCORE = True
RUNNER_UP_PX = 3.0  # candidates further apart than this (full px) are different answers
AMBIGUOUS_MARGIN = 0.02  # a distant runner-up within this of the best: a warning
ANGLES_DEG = tuple(np.arange(-6.0, 6.01, 1.5))  # the global search's rotations ...
SCALES = (0.9, 0.95, 1.0, 1.05, 1.1)  # ... and scales (about the image centre)
JUDGED = 4  # this many distinct coarse answers are refined one level finer and ranked again
PLATEAU_PX = 3.0  # the final fit averages the optima from starts with corners this far off
_PLATEAU_PATTERNS = np.array(
    [
        [[1, 0], [1, 0], [-1, 0], [-1, 0]],  # corner offsets (x, y):
        [[0, 1], [0, -1], [0, -1], [0, 1]],  # shears in x and in y,
        [[-1, -1], [1, -1], [1, 1], [-1, 1]],  # scale,
        [[1, -1], [1, 1], [-1, 1], [-1, -1]],
    ],  # rotation
    np.float64,
)


def _pyramids(a, b, min_size):
    pa, pb = [a], [b]
    while min(pa[-1].shape + pb[-1].shape) // 2 >= min_size and len(pa) < 6:
        pa.append(_down(pa[-1]))
        pb.append(_down(pb[-1]))
    return pa, pb


def _lift(W, levels: int):
    for _ in range(levels):
        W = _UP @ W @ np.linalg.inv(_UP)
    return W


def _plateau_centre(T: np.ndarray, I: np.ndarray, W: np.ndarray, iters: int) -> np.ndarray:
    """The mean of the ECC optima (homography) reached from ``W`` and from ``W`` with its corners
    moved by ``PLATEAU_PX`` in four zero-mean patterns (two shears, a scale, a rotation), as a
    homography through the mean corners. On weak multimodal texture the correlation has a
    plateau of near-equal local optima a pixel or two apart; one run stops wherever it lands on
    it, the mean of symmetric starts is its centre (the answer then depends much less on
    resampling and on which border content the overlap includes)."""
    c = corners(T.shape)
    Hc = np.linalg.inv(W)
    mapped = [apply(Hc, c)]
    for p in _PLATEAU_PATTERNS:
        Hp = homography_from_points(c, mapped[0] + PLATEAU_PX * p)
        Wp, rho = _ecc(T, I, np.linalg.inv(Hp), "homography", iters)
        if np.isfinite(rho):  # else the start itself was unusable: no optimum to count
            mapped.append(apply(np.linalg.inv(Wp), c))
    H = homography_from_points(c, np.mean(mapped, axis=0))
    return np.linalg.inv(H)


def estimate(ir, vis, *, min_size: int = 100, iters: int = 30, use_opencv: bool = True) -> Fit:
    """Automatic registration (module docstring): a global search over rotation, scale and shift
    on the coarsest pyramid level (shorter side >= ``min_size``), plus OpenCV feature matches
    when installed and ``use_opencv``, plus the identity; affine ECC from each start, ranked by
    whole-frame correlation; the best ``JUDGED`` refined one level finer and ranked again; the
    winner refined to a homography at full size, where the optima from it and from perturbed
    starts are averaged (:func:`_plateau_centre`). Returns a :class:`Fit`."""
    a, b = _gray64(ir, "ir"), _gray64(vis, "vis")
    pa, pb = _pyramids(a, b, min_size)
    s = len(pa) - 1
    fa, fb = [_feature(g) for g in pa], [_feature(g) for g in pb]
    radius = max(3, int(np.ceil(0.12 * min(fa[s].shape))))
    found = _global_search(fa[s], fb[s], np.deg2rad(ANGLES_DEG), SCALES, radius, keep=4)
    starts = [W for _, W in found] + [np.eye(3)]
    n_cv = 0
    if use_opencv:
        cv = _opencv_candidates(a, b, 0.5**s)
        starts += cv
        n_cv = len(cv)
    done = []
    for W in starts:
        W, _ = _ecc(fa[s], fb[s], W, "affine", iters // 2)
        done.append((_frame_score(fa[s], fb[s], W), W))
    done = _distinct(done, fa[s].shape, JUDGED, 1.0)
    j = max(s - 1, 0)  # the judging level
    judged = []
    for _, W in done:
        W = _lift(W, s - j)
        W, _ = _ecc(fa[j], fb[j], W, "affine" if j else "homography", iters // 2)
        judged.append((_frame_score(fa[j], fb[j], W), W))
    judged.sort(key=lambda c: -c[0])
    score, W = judged[0]
    far = [(r, corner_error(W2, W, fa[j].shape) * 2.0**j) for r, W2 in judged[1:]]
    far = [f for f in far if f[1] > RUNNER_UP_PX]
    for level in range(j, -1, -1):
        if level < j:
            W = _UP @ W @ np.linalg.inv(_UP)
        W, _ = _ecc(fa[level], fb[level], W, "homography", iters)
    W = _plateau_centre(fa[0], fb[0], W, iters)
    H = np.linalg.inv(W)
    H = H / H[2, 2]
    return Fit(H, float(score), far[0][0] if far else None, far[0][1] if far else None, "ecc+opencv" if n_cv else "ecc")


def estimate_homography(ir, vis, *, min_size: int = 100, iters: int = 30, use_opencv: bool = True) -> np.ndarray:
    """``H`` (vis -> IR, float64 3x3) of :func:`estimate`. ``ir``, ``vis``: one image each, any
    layout/dtype ``fuse`` takes, any sizes."""
    return estimate(ir, vis, min_size=min_size, iters=iters, use_opencv=use_opencv).H


# --- files ---------------------------------------------------------------------------------------


@dataclass
class Homography:
    """A loaded ``H.json``: ``H`` (vis -> IR), the image sizes it was fitted for (``(H, W)``, None
    when unknown), the file ``name`` and its other fields in ``meta``."""

    H: np.ndarray
    ir_size: tuple[int, int] | None
    vis_size: tuple[int, int] | None
    name: str = "homography"
    meta: dict = field(default_factory=dict)

    def check_sizes(self, ir_hw, vis_hw, where: str = "") -> list[str]:
        """AlignError when the images are not the sizes it was fitted for, or when it maps the
        visible image away (``check_homography``); returns the latter's warnings."""
        at = f" ({where})" if where else ""
        for what, want, have in (("IR", self.ir_size, ir_hw), ("visible", self.vis_size, vis_hw)):
            if want is not None and tuple(want) != tuple(have):
                raise AlignError(
                    f"{self.name}: fitted for {what} images of {want[0]}x{want[1]}, "
                    f"but the {what} image is {have[0]}x{have[1]} (H x W){at}"
                )
        return check_homography(self.H, vis_hw, ir_hw, self.name)


def save_homography(path, H, *, ir_size, vis_size, method: str, quality: dict | None = None, **extra) -> dict:
    """Writes ``H.json`` (format: docs/deploy.md); returns the document."""
    H = _normalised(H)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "direction": DIRECTION,
        "H": [[float(v) for v in row] for row in H],
        "convention": "[x_ir, y_ir, w] = H @ [x_vis, y_vis, 1]; x = column, y = row, origin at "
        "the centre of the top-left pixel",
        "ir_size": [int(v) for v in ir_size],
        "vis_size": [int(v) for v in vis_size],
        "method": method,
        "quality": quality or {},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return doc


def _size(doc, key, name):
    v = doc.get(key)
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, int) and x > 0 for x in v):
        raise AlignError(f"{name}: {key} must be [height, width], got {v!r}")
    return int(v[0]), int(v[1])


def load_homography(path: str | os.PathLike) -> Homography:
    """Reads ``H.json`` (a 3x3 ``H``, vis -> IR); AlignError naming the file when it is not one.
    A bare JSON 3x3 list is accepted too (sizes unknown)."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as e:
        raise AlignError(f"{name}: cannot read the homography file ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise AlignError(
            f"{name}: not a JSON homography file ({type(e).__name__}: {' '.join(str(e).split())})"
        ) from None
    if isinstance(doc, list):
        doc = {"H": doc}
    if not isinstance(doc, dict) or "H" not in doc:
        raise AlignError(
            f"{name}: not a homography file (expected a JSON object with a 3x3 'H', written by patchfuse align)"
        )
    if doc.get("format_version", 1) > FORMAT_VERSION:
        raise AlignError(
            f"{name}: format_version {doc['format_version']} is newer than this patchfuse_jax reads ({FORMAT_VERSION})"
        )
    if doc.get("direction", DIRECTION) != DIRECTION:
        raise AlignError(f"{name}: direction {doc['direction']!r}; expected {DIRECTION!r}")
    try:
        H = np.array(doc["H"], np.float64)
    except (TypeError, ValueError):
        H = np.zeros(0)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise AlignError(f"{name}: 'H' must be a finite 3x3 matrix of numbers")
    if abs(H[2, 2]) < 1e-12 or np.linalg.cond(H / max(np.abs(H).max(), 1e-300)) > 1e12:
        raise AlignError(f"{name}: the homography is singular (it maps the image onto a line)")
    return Homography(
        _normalised(H),
        _size(doc, "ir_size", name),
        _size(doc, "vis_size", name),
        name,
        {k: v for k, v in doc.items() if k != "H"},
    )


def as_homography(h) -> Homography:
    """A ``Homography`` from one, a path to ``H.json`` or a 3x3 array-like (vis -> IR)."""
    if isinstance(h, Homography):
        return h
    if isinstance(h, (str, os.PathLike)):
        return load_homography(h)
    H = np.asarray(h, np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise AlignError(f"homography: expected a finite 3x3 matrix or a path to H.json, got shape {H.shape}")
    return Homography(_normalised(H), None, None)


def warp_inputs(ir, vis, homography):
    """``fuse``'s hook: ``vis`` (one image or a batch, as ``fuse`` takes them) warped onto the
    grid of ``ir`` by ``homography`` (3x3 vis -> IR, or a path to ``H.json``); dtype kept. Batches
    come back as a list."""
    from patchfuse_jax.fusing import layouts

    hom = as_homography(homography)
    single = not isinstance(ir, (list, tuple)) and layouts._is_one_image(np.asarray(ir))
    irs = [np.asarray(ir)] if single else [np.asarray(a) for a in ir]
    viss = [np.asarray(vis)] if single else [np.asarray(b) for b in vis]
    if len(irs) != len(viss):
        raise ValueError(f"fuse: {len(irs)} IR images but {len(viss)} visible images")
    out, warps = [], {}
    for a, b in zip(irs, viss):
        key = (a.shape[:2], b.shape[:2])
        if key not in warps:
            for w in hom.check_sizes(a.shape[:2], b.shape[:2]):
                import warnings

                warnings.warn(w, stacklevel=3)
            warps[key] = Warp(hom.H, b.shape[:2], a.shape[:2])
        out.append(warps[key](b))
    return out[0] if single else out


# --- the command ---------------------------------------------------------------------------------


def align(ir_path, vis_path, out, *, points=None) -> tuple[dict, list[str]]:
    """``patchfuse align``: fits ``H`` (from the images, or from the ``points`` CSV), checks it and
    writes ``out`` (H.json). Returns the document and the warnings."""
    ir, vis = io.read_image(ir_path), io.read_image(vis_path)
    ir_hw, vis_hw = ir.shape[:2], vis.shape[:2]
    extra = {"ir": os.fspath(ir_path), "vis": os.fspath(vis_path)}
    quality: dict = {}
    if points is not None:
        a, b = read_points(points)
        H = homography_from_points(a, b, name=os.fspath(points))
        res = np.linalg.norm(apply(H, a) - b, axis=1)
        quality.update(points=len(a), rms_px=float(np.sqrt(np.mean(res**2))), max_px=float(res.max()))
        method, name = "points", os.fspath(points)
        extra["points"] = os.fspath(points)
    else:
        fit = estimate(ir, vis)
        H, method, name = fit.H, fit.method, f"{ir_path} / {vis_path}"
        quality.update(
            score=round(fit.score, 4),
            runner_up=None if fit.runner_up is None else round(float(fit.runner_up), 4),
            runner_up_px=None if fit.runner_up_px is None else round(float(fit.runner_up_px), 1),
        )
    warns = check_homography(H, vis_hw, ir_hw, name)
    before = edge_overlap(ir, vis)  # identity: the pair as it is
    after = edge_overlap(ir, vis, H)
    quality.update(
        edge_overlap_before=round(before, 4),
        edge_overlap_after=round(after, 4),
        coverage=round(coverage(H, vis_hw, ir_hw), 4),
        scale=round(local_scale(H, vis_hw), 4),
    )
    moved = float(np.abs(apply(H, corners(vis_hw)) - corners(vis_hw)).max())
    if after < before - 0.005 and moved > 0.5:
        warns.append(
            f"{name}: the fit does not improve the edge overlap ({before:.3f} -> "
            f"{after:.3f}); check the images, or give --points"
        )
    if points is None:
        if fit.ambiguous:
            warns.append(
                f"{name}: ambiguous fit: another alignment {fit.runner_up_px:.0f} px away "
                f"correlates almost as well ({fit.runner_up:.3f} vs {fit.score:.3f}); "
                "check the warped image, or give --points"
            )
        if after < WEAK_OVERLAP:
            warns.append(
                f"{name}: weak edge overlap after the fit ({after:.3f} < {WEAK_OVERLAP}); "
                "the images may share too few edges: check, or give --points"
            )
        sc, rot = local_scale(H, vis_hw), _rotation_deg(H, vis_hw)
        if not (AUTO_SCALE[0] <= sc <= AUTO_SCALE[1] and abs(rot) <= AUTO_ROTATION_DEG):
            warns.append(
                f"{name}: the fit (scale {sc:.3f}, rotation {rot:.1f} deg) is outside what "
                f"the automatic search covers (scale {AUTO_SCALE[0]}-{AUTO_SCALE[1]}, "
                f"rotation <= {AUTO_ROTATION_DEG} deg); check, or give --points"
            )
    quality["plausible"] = not warns
    doc = save_homography(out, H, ir_size=ir_hw, vis_size=vis_hw, method=method, quality=quality, **extra)
    return doc, warns


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ir", required=True, help="the IR image (its grid is the target)")
    p.add_argument("--vis", required=True, help="the visible image (mapped onto the IR image)")
    p.add_argument("--out", required=True, help="the homography file to write, e.g. H.json")
    p.add_argument(
        "--points",
        default=None,
        help="CSV of >= 4 clicked point pairs, header x_vis,y_vis,x_ir,y_ir "
        "(default: automatic, ECC on gradient magnitudes)",
    )


def run(args: argparse.Namespace) -> None:
    """``patchfuse align`` from parsed arguments: one summary line on stdout, warnings on stderr."""
    doc, warns = align(args.ir, args.vis, args.out, points=args.points)
    for w in warns:
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    q = doc["quality"]
    H = np.array(doc["H"])
    moved = np.abs(apply(H, corners(doc["vis_size"])) - corners(doc["vis_size"])).max()
    fit = f", {q['points']} points, rms {q['rms_px']:.3f} px" if doc["method"] == "points" else ""
    print(
        f"wrote {args.out}: {doc['method']} homography vis->ir{fit}, corners move up to "
        f"{moved:.1f} px; edge overlap {q['edge_overlap_before']:.3f} -> "
        f"{q['edge_overlap_after']:.3f} (NCC of gradient magnitudes), covers "
        f"{q['coverage']:.0%} of the IR frame"
    )
