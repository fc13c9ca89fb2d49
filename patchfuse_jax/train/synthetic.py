"""Built-in synthetic IR/visible pairs: deterministic, pure numpy, no downloads.

A scene is a street-like layout (sky, buildings with windows, a road with lane marks,
textured clutter) plus a few warm objects (people, cars):

* visible: daylight-ish, textured (smooth noise, oriented stripes, edges); the warm objects are
  present but low-contrast (close to the local background brightness);
* infrared: smooth, low-texture, mostly dark background; the same objects bright (warm), with
  soft edges; mild Gaussian sensor noise.

``synthetic_pair(seed, index, hw)`` -> ``(ir, vis)``, each ``float32 (H, W)`` in [0, 1];
the same ``(seed, index, hw)`` always gives bit-identical arrays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

_SALT = 0x5E7A  # separates this generator's streams from other uses of (seed, index)


def _check_hw(hw) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError):
        raise ValueError(f"hw must be two positive ints (H, W), got {hw!r}") from None
    if h < 8 or w < 8 or (h, w) != tuple(hw):
        raise ValueError(f"hw must be two ints >= 8, got {hw!r}")
    return h, w


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled ``(cells+1)^2`` uniform noise: ``float64 (h, w)`` in [0, 1]."""
    g = rng.random((cells + 1, cells + 1))
    y = np.linspace(0.0, cells, h)
    x = np.linspace(0.0, cells, w)
    y0 = np.minimum(y.astype(int), cells - 1)
    x0 = np.minimum(x.astype(int), cells - 1)
    fy = (y - y0)[:, None]
    fx = (x - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _box(yy, xx, cy, cx, hh, hw, r, soft):
    """Soft rounded rectangle (centre, half sizes, corner radius): coverage in [0, 1]."""
    qy = np.abs(yy - cy) - hh + r
    qx = np.abs(xx - cx) - hw + r
    d = np.hypot(np.maximum(qy, 0), np.maximum(qx, 0)) + np.minimum(np.maximum(qy, qx), 0) - r
    return np.clip(0.5 - d / soft, 0.0, 1.0)


def _ellipse(yy, xx, cy, cx, ry, rx, soft):
    d = (np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) - 1.0) * min(ry, rx)
    return np.clip(0.5 - d / soft, 0.0, 1.0)


def synthetic_scene(seed: int, index: int, hw=(128, 128)) -> dict:
    """One scene: ``ir``, ``vis`` (``float32 (H, W)`` in [0, 1]) and ``mask``
    (``float32 (H, W)`` in [0, 1], coverage of the warm objects)."""
    h, w = _check_hw(hw)
    seed, index = int(seed), int(index)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index, _SALT])
    s = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    # --- layout: horizon, buildings, road ---------------------------------------------
    horizon = h * rng.uniform(0.3, 0.45)
    sky = (yy < horizon).astype(np.float64)
    vis = np.where(sky > 0, rng.uniform(0.6, 0.85) - 0.25 * yy / h, 0.0)
    ir = np.where(sky > 0, rng.uniform(0.03, 0.1), 0.0)
    ground = 1.0 - sky
    # road: trapezoid converging to a vanishing point on the horizon
    vx = w * rng.uniform(0.3, 0.7)
    t = np.clip((yy - horizon) / max(h - horizon, 1.0), 0.0, 1.0)
    half = t * w * rng.uniform(0.45, 0.7)
    road = ground * (np.abs(xx - vx) < half)
    side = ground - road
    vis += side * (0.45 + 0.15 * _smooth_noise(rng, h, w, 6)) + road * rng.uniform(0.3, 0.45)
    ir += side * rng.uniform(0.15, 0.25) + road * rng.uniform(0.2, 0.3)
    # lane marks: dashed centre line
    dash = np.sin(2 * np.pi * 1.2 * np.sqrt(np.maximum(yy - horizon, 0.0) * 128 / s)) > 0.2
    lane = road * dash * (np.abs(xx - vx) < 0.04 * half + 0.6) * (t > 0.05)
    vis = np.where(lane > 0, 0.9, vis)
    # buildings straddling the horizon, with window grids
    walls = np.zeros((h, w))
    for _ in range(rng.integers(2, 5)):
        bw, bh = w * rng.uniform(0.12, 0.3), h * rng.uniform(0.15, 0.4)
        bx = rng.uniform(0, w)
        m = (np.abs(xx - bx) < bw / 2) & (yy > horizon - bh) & (yy < horizon + 0.05 * h)
        if side[int(min(horizon + 0.05 * h, h - 1)), int(np.clip(bx, 0, w - 1))] == 0 and rng.random() < 0.5:
            continue  # skip buildings standing on the road (most of the time)
        tone = rng.uniform(0.35, 0.7)
        period = rng.uniform(4, 8) * s / 128
        win = (np.sin(2 * np.pi * xx / period) > 0.3) & (np.sin(2 * np.pi * yy / (1.4 * period)) > 0.2)
        vis = np.where(m, tone - 0.25 * win, vis)
        walls = np.maximum(walls, m)
        ir = np.where(m, rng.uniform(0.12, 0.22), ir)

    # --- texture only the visible camera sees --------------------------------------------
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.35) * 128 / s
    stripes = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
    vis += 0.06 * stripes * side + 0.05 * (_smooth_noise(rng, h, w, max(4, s // 6)) - 0.5)
    vis += 0.04 * rng.standard_normal((h, w)) * (side + walls + 0.6 * road)  # grain: foliage, brick, asphalt
    vis += 0.08 * (_smooth_noise(rng, h, w, 8) - 0.5) * sky  # clouds
    for _ in range(rng.integers(2, 5)):  # poles and wires: thin straight edges
        if rng.random() < 0.5:
            px = rng.uniform(0, w)
            pole = _box(yy, xx, horizon, px, 0.45 * h, 0.6, 0.0, 1.0)
            vis = vis * (1 - pole) + 0.15 * pole
            ir = ir * (1 - pole) + (ir + 0.03) * pole
        else:
            a = rng.uniform(-0.3, 0.3)
            y0 = rng.uniform(0.05, 0.3) * h
            wire = np.clip(1.0 - np.abs(yy - y0 - a * xx), 0, 1)
            vis = vis * (1 - wire) + 0.2 * wire

    # --- warm objects: people and cars -----------------------------------------------------
    mask = np.zeros((h, w))
    heat = np.zeros((h, w))
    for _ in range(rng.integers(1, 5)):
        # stand on the ground; nearer (lower) objects are larger
        cy_feet = rng.uniform(horizon + 0.1 * (h - horizon), h - 1)
        scale = 0.4 + 0.6 * (cy_feet - horizon) / max(h - horizon, 1.0)
        cx = rng.uniform(0.1 * w, 0.9 * w)
        if rng.random() < 0.55:  # person: body + head
            ph = 0.28 * s * scale
            body = _box(yy, xx, cy_feet - 0.4 * ph, cx, 0.4 * ph, 0.12 * ph, 0.08 * ph, 1.5)
            head = _ellipse(yy, xx, cy_feet - 0.9 * ph, cx, 0.1 * ph, 0.08 * ph, 1.5)
            m = np.maximum(body, head)
            temp = rng.uniform(0.8, 0.95)
        else:  # car: rounded body + cabin, hot bonnet
            cl = 0.35 * s * scale
            body = _box(yy, xx, cy_feet - 0.15 * cl, cx, 0.15 * cl, 0.5 * cl, 0.08 * cl, 1.5)
            cabin = _box(yy, xx, cy_feet - 0.38 * cl, cx, 0.1 * cl, 0.3 * cl, 0.08 * cl, 1.5)
            m = np.maximum(body, cabin)
            temp = rng.uniform(0.65, 0.85)
        # visible: object reflects about as much light as what is behind it (low contrast)
        inside = vis[m > 0.5]
        local = float(np.median(inside)) if inside.size else float(vis.mean())
        vis = vis * (1 - m) + np.clip(local + rng.uniform(-0.06, 0.06), 0, 1) * m
        heat = np.maximum(heat, temp * m)
        mask = np.maximum(mask, m)

    # IR: blur objects' heat slightly (thermal halo), smooth background, mild noise
    ir = ir + 0.05 * (_smooth_noise(rng, h, w, 3) - 0.5)
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16.0
    hp = np.pad(heat, 2, mode="edge")
    hp = sum(k[i] * hp[i : i + h, :] for i in range(5))
    hp = sum(k[i] * hp[:, i : i + w] for i in range(5))
    ir = np.maximum(ir, hp)
    ir += 0.01 * rng.standard_normal((h, w))

    gain = rng.uniform(0.9, 1.1)  # exposure
    vis = np.clip(vis * gain, 0.0, 1.0)
    ir = np.clip(ir, 0.0, 1.0)
    return {"ir": ir.astype(np.float32), "vis": vis.astype(np.float32), "mask": mask.astype(np.float32)}


def synthetic_pair(seed: int, index: int, hw=(128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """``(ir, vis)``, each ``float32 (H, W)`` in [0, 1]; bit-identical for equal arguments."""
    sc = synthetic_scene(seed, index, hw)
    return sc["ir"], sc["vis"]


class SyntheticPairs:
    """``num_pairs`` synthetic pairs of size ``hw``; same interface as ``data.PairFolder``.

    Pairs are generated on first use and cached (up to ``cache_mb`` megabytes).
    """

    def __init__(self, num_pairs: int = 64, hw=(128, 128), seed: int = 0, *, cache_mb: float = 256.0):
        if int(num_pairs) != num_pairs or num_pairs < 1:
            raise ValueError(f"num_pairs must be a positive int, got {num_pairs!r}")
        self.num_pairs = int(num_pairs)
        self.hw = _check_hw(hw)
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.stems = [f"synthetic_{i:04d}" for i in range(self.num_pairs)]
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._max_items = max(1, int(cache_mb * 2**20 // (8 * self.hw[0] * self.hw[1])))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.num_pairs

    def __repr__(self) -> str:
        return f"SyntheticPairs(num_pairs={self.num_pairs}, hw={self.hw}, seed={self.seed})"

    def name(self, i: int) -> str:
        return self.stems[self._index(i)]

    def _index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.num_pairs:
            raise IndexError(f"pair index {i} out of range for {self.num_pairs} synthetic pairs")
        return i

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ir, vis)`` as stored (here already ``float32`` in [0, 1]); do not modify."""
        i = self._index(i)
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        pair = synthetic_pair(self.seed, i, self.hw)
        for a in pair:
            a.setflags(write=False)
        with self._lock:
            self._cache[i] = pair
            while len(self._cache) > self._max_items:
                self._cache.popitem(last=False)
        return pair

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ir, vis)``, each ``float32 (H, W)`` in [0, 1] (fresh copies)."""
        ir, vis = self.raw(i)
        return ir.copy(), vis.copy()
