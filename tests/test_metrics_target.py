"""Warm-target contrast and visible texture kept (patchfuse_jax/eval/metrics/target.py), by hand."""

import numpy as np
import pytest

from patchfuse_jax.eval import metrics as M
from patchfuse_jax.eval.metrics import target


def _scene():
    rng = np.random.default_rng(0)
    ir = np.full((64, 64), 60.0)
    ir[27:37, 27:37] = 200.0  # a warm 10x10 target: 100 px = 2.4 % of the image
    vis = 128.0 + 30.0 * rng.standard_normal((64, 64))
    return ir, vis


def test_target_and_ring_masks():
    ir, _ = _scene()
    t, r = target.warm_target(ir)
    assert t[27:37, 27:37].all() and t.sum() == 100
    # The ring: 5..15 px (chessboard) from the target (rows 27..36): rows 22 and 12 in, 23 and 11 out.
    assert not r[23:41, 23:41].any() and r[22, 30] and r[12, 30] and not r[11, 30]


def test_target_contrast_of_ir_average_and_flat():
    ir, vis = _scene()
    assert target.target_contrast(ir, vis, ir) == pytest.approx(1.0)
    avg = (ir + vis) / 2
    t, r = target.warm_target(ir)
    want = (avg[t].mean() - avg[r].mean()) / (ir[t].mean() - ir[r].mean())
    assert target.target_contrast(ir, vis, avg) == pytest.approx(want)
    assert 0.4 < want < 0.6
    assert np.isnan(target.target_contrast(np.full((32, 32), 9.0), vis[:32, :32], vis[:32, :32]))


def test_texture_kept():
    ir, vis = _scene()
    assert target.texture_kept(ir, vis, vis) == pytest.approx(1.0)
    assert target.texture_kept(ir, vis, 0.5 * vis) == pytest.approx(0.5)
    win = vis[10:17, 20:27]
    assert target.local_sd(vis)[10, 20] == pytest.approx(win.std())


def test_registry_group():
    assert M.resolve_metrics("target") == ["TargetContrast", "TextureKept"]
    assert "TargetContrast" not in M.resolve_metrics("all") and len(M.resolve_metrics("all")) == 14
