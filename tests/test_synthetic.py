"""Synthetic IR/visible generator: determinism, ranges, and IR-vs-visible character."""

import numpy as np
import pytest

from patchfuse_jax.train.data import make_source, sample_batch
from patchfuse_jax.train.synthetic import SyntheticPairs, synthetic_pair, synthetic_scene


def test_deterministic_and_in_range():
    a = synthetic_pair(3, 5, (64, 96))
    b = synthetic_pair(3, 5, (64, 96))
    for x, y in zip(a, b):
        assert x.dtype == np.float32 and x.shape == (64, 96)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.tobytes() == y.tobytes()
    c = synthetic_pair(3, 6, (64, 96))
    d = synthetic_pair(4, 5, (64, 96))
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[1], d[1])


def _grad_energy(x):
    return float(np.mean(np.abs(np.diff(x, axis=0))) + np.mean(np.abs(np.diff(x, axis=1))))


@pytest.mark.parametrize("index", range(6))
def test_ir_and_visible_differ_meaningfully(index):
    sc = synthetic_scene(0, index, (128, 128))
    ir, vis, mask = sc["ir"], sc["vis"], sc["mask"]
    obj = mask > 0.9
    assert obj.sum() > 10
    # a ring around the objects: dilate the mask by a few pixels
    ring = np.zeros_like(obj)
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            ring |= np.roll(np.roll(mask > 0.01, dy, 0), dx, 1)
    ring &= mask < 0.01
    # warm objects stand out in IR, much less in visible
    ir_contrast = ir[obj].mean() - ir[ring].mean()
    vis_contrast = abs(vis[obj].mean() - vis[ring].mean())
    assert ir_contrast > 0.3
    assert ir_contrast > 2 * vis_contrast
    # IR background mostly dark; visible more textured
    assert np.median(ir[mask < 0.01]) < 0.35
    assert _grad_energy(vis) > 1.5 * _grad_energy(ir)


def test_source_interface_and_make_source():
    src = make_source("synthetic", seed=1, synthetic_hw=(48, 40), synthetic_pairs=5)
    assert isinstance(src, SyntheticPairs) and len(src) == 5
    assert src.stems[3] == "synthetic_0003" and src.name(3) == "synthetic_0003"
    ir, vis = src.get(3)
    ref = synthetic_pair(1, 3, (48, 40))
    assert np.array_equal(ir, ref[0]) and np.array_equal(vis, ref[1])
    ir[:] = 0  # get() hands out copies
    assert np.array_equal(src.get(3)[0], ref[0])
    b = sample_batch(src, seed=0, step=0, batch_size=3, crop_hw=(32, 32))
    assert b["ir"].shape == (3, 32, 32, 1)
    with pytest.raises(IndexError):
        src.get(5)
    with pytest.raises(ValueError):
        SyntheticPairs(num_pairs=0)


def test_speed():
    import time

    synthetic_pair(0, 0)
    t = time.perf_counter()
    for i in range(10):
        synthetic_pair(0, i)
    # target < 20 ms per 128x128 pair; generous bound for a loaded shared CI machine
    assert (time.perf_counter() - t) / 10 < 0.1
