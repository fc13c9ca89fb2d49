"""Registration (patchfuse_jax/fusing/align.py): ``patchfuse align``, points, warps, recovery on real pairs."""

import json
import os

import numpy as np
import pytest

from patchfuse_jax import fuse, io, pretrained
from patchfuse_jax.__main__ import main
from patchfuse_jax.fusing import align


def _run(capsys, *argv):
    rc = main(list(map(str, argv)))
    c = capsys.readouterr()
    return rc, c.out, c.err


def _one_line_error(rc, err, needle):
    assert rc == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], err


# --- known warps of real pairs -------------------------------------------------------------------

KINDS = ("shift", "rotation", "scale", "perspective")


def _random_warp(kind, hw, rng):
    """A homography of ``kind`` about the centre of an ``hw`` frame, plus a shift of up to 8 px:
    shift 3-20 px per axis, rotation 1-5 deg, scale 0.9-1.1 (at least 2 % off 1), or perspective
    (the local scale varies by up to ~7 % across the frame, plus up to 2 % of affine distortion)."""
    h, w = hw
    A = np.eye(3)
    shift = rng.uniform(-8, 8, 2)
    if kind == "shift":
        shift = rng.choice([-1, 1], 2) * rng.uniform(3, 20, 2)
    elif kind == "rotation":
        t = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(1, 5))
        A[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    elif kind == "scale":
        A[:2, :2] *= 1 + rng.choice([-1, 1]) * rng.uniform(0.02, 0.1)
    else:
        A[2, :2] = rng.uniform(-1, 1, 2) * 0.08 / max(h, w)
        A[:2, :2] += rng.uniform(-0.02, 0.02, (2, 2))
    c = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1]])
    A = c @ A @ np.linalg.inv(c)
    A[:2, 2] += shift * A[2, 2]
    return A / A[2, 2]


def _warped_case(ir, vis, kind, seed):
    """IR cropped by a 12 % margin; the visible image resampled so that ``A`` (returned) maps
    it onto the visible crop that matches the IR crop (warps are redrawn until the whole
    warped image comes from inside the visible image: no black border). Returns ``ir_crop,
    vis_crop, vis_w, A``."""
    rng = np.random.default_rng(seed)
    h, w = ir.shape[:2]
    m = int(round(0.12 * min(h, w)))
    hw = (h - 2 * m, w - 2 * m)
    shift = np.array([[1, 0, m], [0, 1, m], [0, 0, 1.0]])
    for _ in range(200):
        A = _random_warp(kind, hw, rng)
        c = align.apply(shift @ A, align.corners(hw))
        if c.min() >= 0 and c[:, 0].max() <= w - 1 and c[:, 1].max() <= h - 1:
            break
    else:
        raise AssertionError(f"no {kind} warp of seed {seed} fits inside a {h}x{w} image")
    vis_w = align.warp_image(vis, np.linalg.inv(shift @ A), hw)
    return ir[m : h - m, m : w - m], vis[m : h - m, m : w - m], vis_w, A


def _cases(shared, n_roadscene, n_tno, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for ds, n in (("roadscene", n_roadscene), ("tno", n_tno)):
        root = shared(ds)
        stems = sorted(os.listdir(root / "ir"))
        for k, i in enumerate(sorted(rng.choice(len(stems), n, replace=False))):
            out.append((root, stems[i], KINDS[k % 4], int(rng.integers(1 << 30))))
    return out


def _recovery(cases):
    """Per case: mean corner error (px) of the fit on the warped pair against the known warp
    composed with the fit on the unwarped pair (the datasets' own registration is a few pixels
    off, so that fit, not the identity, is the reference), and against ``A`` alone."""
    rel, absolute = [], []
    for root, stem, kind, seed in cases:
        ir = io.to_gray(io.read_image(root / "ir" / stem))
        ir_c, vis_c, vis_w, A = _warped_case(ir, io.read_image(root / "vis" / stem), kind, seed)
        H0 = align.estimate_homography(ir_c, vis_c)
        H = align.estimate_homography(ir_c, vis_w)
        rel.append(align.corner_error(H, H0 @ A, vis_w.shape[:2]))
        absolute.append(align.corner_error(H, A, vis_w.shape[:2]))
    return np.array(rel), np.array(absolute)


@pytest.mark.slow  # ~1-2 min of registration; the 44-pair test below is the full measure
@pytest.mark.data
def test_known_warps_of_a_few_real_pairs_are_recovered(shared):
    cases = [(shared("tno"), "01.png", "rotation", 1), (shared("roadscene"), "FLIR_04968.jpg", "shift", 3)]
    rel, _ = _recovery(cases)
    # A smoke test (a fit that locks onto a wrong homography is off by 10s of px); the 1.5 px
    # rate is the slow test's. TNO 01 under a 5 deg rotation: 1.9 px (both fits ~10 px from the
    # identity, the pair's own misregistration, and 1.9 px apart in the perspective terms).
    assert np.all(rel <= 3.0), rel


@pytest.mark.slow
@pytest.mark.data
def test_known_warps_of_44_real_pairs_are_recovered(shared):
    import time

    t0 = time.perf_counter()
    rel, absolute = _recovery(_cases(shared, 30, 14))
    per_fit = (time.perf_counter() - t0) / (2 * len(rel))
    print(
        f"recovery: {len(rel)} pairs, {np.mean(rel <= 1.5):.1%} <= 1.5 px, mean {rel.mean():.2f} px, "
        f"median {np.median(rel):.2f} px, {per_fit:.1f} s a fit (against A alone: median "
        f"{np.median(absolute):.2f} px)"
    )
    # Issue 22 asks for >= 90 %; measured 93.2 % (41/44; mean 2.84 px, median 0.43 px) on
    # 2026-12-05 (docs/deploy.md). Left: a pair with strong parallax whose two basins ~20 px apart
    # score alike, a parallax scene under a perspective warp (5 px), a smoke-covered TNO pair.
    assert len(rel) >= 40 and np.mean(rel <= 1.5) >= 0.9


def test_monomodal_warp_is_recovered_exactly():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.random((120, 160)), 2.0)
    ir_c, _, vis_w, A = _warped_case(img, img, "perspective", 4)
    H = align.estimate_homography(ir_c, vis_w)
    assert align.corner_error(H, A, vis_w.shape) < 0.3


def _scene(hw=(160, 200), seed=0):
    """A synthetic scene: smoothed noise plus bright rectangles and discs (corners for features)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = hw
    img = 0.3 * ndimage.gaussian_filter(rng.random(hw), 3.0)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(14):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        dh, dw = rng.integers(8, 30, 2)
        img[y : y + dh, x : x + dw] += rng.uniform(0.3, 0.7)
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 12)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] -= rng.uniform(0.2, 0.5)
    img = ndimage.gaussian_filter(img, 1.0)
    return (img - img.min()) / np.ptp(img)


def _synthetic_pair(H_true, hw=(160, 200), m=40, seed=0):
    """IR: a scene's centre crop, polarity inverted; visible: the scene resampled so that
    ``H_true`` maps it onto the IR crop (no black border)."""
    big = _scene((hw[0] + 2 * m, hw[1] + 2 * m), seed)
    shift = np.array([[1, 0, m], [0, 1, m], [0, 0, 1.0]])
    vis = align.warp_image(big, np.linalg.inv(shift @ H_true), hw)
    return 1.0 - big[m : m + hw[0], m : m + hw[1]], vis


def test_an_inverted_rotated_scaled_shifted_pair_is_recovered_without_opencv(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    c = np.array([[1, 0, 99.5], [0, 1, 79.5], [0, 0, 1.0]])
    t = np.deg2rad(5.0)
    S = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1 / 1.08]])
    H_true = np.array([[1, 0, 14.0], [0, 1, -9.0], [0, 0, 1]]) @ c @ S @ np.linalg.inv(c)
    H_true /= H_true[2, 2]
    ir, vis = _synthetic_pair(H_true)
    fit = align.estimate(ir, vis)
    assert fit.method == "ecc"
    assert align.corner_error(fit.H, H_true, ir.shape) < 0.5


def test_opencv_feature_starts_find_the_warp():
    pytest.importorskip("cv2")
    H_true = np.array([[0.97, -0.05, 12.0], [0.05, 0.97, -8.0], [2e-5, -1e-5, 1.0]])
    ir, vis = _synthetic_pair(H_true, (240, 320), seed=1)
    starts = align._opencv_candidates(ir, vis, 1.0)  # W: IR -> visible
    assert starts, "no OpenCV start"
    best = min(align.corner_error(np.linalg.inv(W), H_true, ir.shape) for W in starts)
    assert best < 2.0
    fit = align.estimate(ir, vis)
    assert fit.method == "ecc+opencv" and align.corner_error(fit.H, H_true, ir.shape) < 0.5


def test_align_warns_when_the_automatic_fit_is_ambiguous(tmp_path, capsys, monkeypatch):
    img = (_scene() * 255).clip(0, 255).astype(np.uint8)
    io.save_image(tmp_path / "ir.png", img)
    io.save_image(tmp_path / "vis.png", img)
    fit = align.Fit(np.eye(3), score=0.300, runner_up=0.295, runner_up_px=22.0)
    assert fit.ambiguous and not align.Fit(np.eye(3), 0.3, 0.2, 22.0).ambiguous
    monkeypatch.setattr(align, "estimate", lambda ir, vis: fit)
    rc, out, err = _run(
        capsys, "align", f"--ir={tmp_path / 'ir.png'}", f"--vis={tmp_path / 'vis.png'}", f"--out={tmp_path / 'H.json'}"
    )
    assert rc == 0 and "warning:" in err and "ambiguous fit: another alignment 22 px away" in err, err
    q = json.loads((tmp_path / "H.json").read_text())["quality"]
    assert not q["plausible"] and q["runner_up_px"] == 22.0
    # A fit beyond the search's range is reported too.
    monkeypatch.setattr(align, "estimate", lambda ir, vis: align.Fit(np.diag([1.3, 1.3, 1.0]), 0.3))
    rc, out, err = _run(
        capsys, "align", f"--ir={tmp_path / 'ir.png'}", f"--vis={tmp_path / 'vis.png'}", f"--out={tmp_path / 'H.json'}"
    )
    assert rc == 0 and "outside what the automatic search covers" in err, err


# --- points --------------------------------------------------------------------------------------


def _write_points(path, vis_xy, ir_xy, header="x_vis,y_vis,x_ir,y_ir"):
    rows = [header] + [",".join(repr(float(v)) for v in (*a, *b)) for a, b in zip(vis_xy, ir_xy)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_points_are_exact_on_synthetic_points(tmp_path, capsys):
    rng = np.random.default_rng(1)
    H = np.array([[1.05, 0.03, 12.0], [-0.02, 0.97, -7.5], [1e-4, -5e-5, 1.0]])
    vis_xy = rng.uniform(0, 60, (6, 2))
    ir_xy = align.apply(H, vis_xy)
    np.testing.assert_allclose(align.homography_from_points(vis_xy[:4], ir_xy[:4]), H, atol=1e-9)
    pts = _write_points(tmp_path / "pts.csv", vis_xy, ir_xy)
    img = (rng.random((64, 80)) * 255).astype(np.uint8)
    io.save_image(tmp_path / "ir.png", img)
    io.save_image(tmp_path / "vis.png", img)
    rc, out, err = _run(
        capsys,
        "align",
        f"--ir={tmp_path / 'ir.png'}",
        f"--vis={tmp_path / 'vis.png'}",
        f"--out={tmp_path / 'H.json'}",
        f"--points={pts}",
    )
    assert rc == 0, err
    assert out.startswith(f"wrote {tmp_path / 'H.json'}: points homography vis->ir, 6 points")
    doc = json.loads((tmp_path / "H.json").read_text())
    np.testing.assert_allclose(doc["H"], H, atol=1e-9)
    assert doc["direction"] == "vis->ir" and doc["ir_size"] == [64, 80] and doc["method"] == "points"
    assert doc["quality"]["rms_px"] < 1e-8
    np.testing.assert_allclose(align.load_homography(tmp_path / "H.json").H, H, atol=1e-9)


@pytest.mark.parametrize("case", ["missing", "three", "collinear", "header", "number", "binary"])
def test_bad_points_file_is_one_line_naming_it(tmp_path, capsys, case):
    img = np.zeros((40, 50), np.uint8)
    img[10:30, 10:40] = 200
    io.save_image(tmp_path / "a.png", img)
    pts = tmp_path / "pts.csv"
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10.0]])
    needle = {
        "missing": "cannot read the points file",
        "three": "3 point pair(s)",
        "collinear": "collinear",
        "header": "missing y_ir",
        "number": "line 3",
        "binary": "cannot read the points file",
    }[case]
    if case == "three":
        _write_points(pts, square[:3], square[:3])
    elif case == "collinear":
        line = np.array([[0, 0], [1, 1], [2, 2], [5, 5.0]])
        _write_points(pts, line, square)
    elif case == "header":
        _write_points(pts, square, square, header="x_vis,y_vis,x_ir,yy")
    elif case == "number":
        pts.write_text("x_vis,y_vis,x_ir,y_ir\n1,2,3,4\n1,2,x,4\n")
    elif case == "binary":
        pts.write_bytes(b"\xff\xfe\x00\x81" * 10)
    rc, out, err = _run(
        capsys,
        "align",
        f"--ir={tmp_path / 'a.png'}",
        f"--vis={tmp_path / 'a.png'}",
        f"--out={tmp_path / 'H.json'}",
        f"--points={pts}",
    )
    _one_line_error(rc, err, f"patchfuse align: error: {pts}: ")
    assert needle in err and not os.path.exists(tmp_path / "H.json")


# --- warping before fusing -----------------------------------------------------------------------


def test_fuse_with_homography_warps_the_visible_image(tmp_path):
    params = pretrained()
    rng = np.random.default_rng(2)
    ir = (rng.random((40, 56)) * 255).astype(np.uint8)
    vis = (rng.random((44, 60, 3)) * 255).astype(np.uint8)  # another size: allowed with a warp
    H = np.array([[0.95, 0.02, 3.0], [-0.01, 0.97, 1.5], [0, 0, 1.0]])
    want = fuse(params, ir, align.warp_image(vis, H, ir.shape), color=True)
    np.testing.assert_array_equal(fuse(params, ir, vis, color=True, homography=H), want)
    align.save_homography(tmp_path / "H.json", H, ir_size=ir.shape, vis_size=vis.shape[:2], method="t")
    np.testing.assert_array_equal(fuse(params, ir, vis, color=True, homography=tmp_path / "H.json"), want)
    batch = fuse(params, [ir, ir], [vis, vis], homography=H)
    assert batch.shape == (2, 40, 56)
    with pytest.raises(align.AlignError, match="fitted for visible images of 44x60"):
        fuse(params, ir, vis[:40], homography=tmp_path / "H.json")


def test_warp_is_bilinear_and_fills_black_outside():
    img = np.arange(30, dtype=np.float64).reshape(5, 6) / 30
    shift = np.array([[1, 0, 0.5], [0, 1, 0], [0, 0, 1.0]])  # vis x -> ir x + 0.5
    out = align.warp_image(img, shift, (5, 6))
    np.testing.assert_allclose(out[:, 1:], (img[:, :-1] + img[:, 1:]) / 2)
    assert np.all(out[:, 0] == 0)


def test_folder_fuse_with_homography_matches_the_library(tmp_path, capsys):
    params = pretrained()
    rng = np.random.default_rng(3)
    ir = (rng.random((40, 56)) * 255).astype(np.uint8)
    vis = (rng.random((44, 60, 3)) * 255).astype(np.uint8)
    io.save_image(tmp_path / "ir" / "a.png", ir)
    io.save_image(tmp_path / "vis" / "a.png", vis)
    H = np.array([[1.0, 0.0, -2.0], [0.0, 1.0, -1.0], [0, 0, 1.0]])
    align.save_homography(tmp_path / "H.json", H, ir_size=ir.shape, vis_size=vis.shape[:2], method="t")
    rc, out, err = _run(
        capsys,
        "fuse",
        f"--ir_dir={tmp_path / 'ir'}",
        f"--vis_dir={tmp_path / 'vis'}",
        f"--out_dir={tmp_path / 'o'}",
        f"--homography={tmp_path / 'H.json'}",
        "--no-progress",
        "--color",
    )
    assert rc == 0, err
    want = fuse(params, ir, vis, color=True, homography=H)
    got = io.read_image(tmp_path / "o" / "a.png")
    np.testing.assert_array_equal(got, np.clip(np.round(want * 255), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("case", ["away", "singular", "not_json", "shape", "horizon"])
def test_bad_homography_file_is_one_line_naming_it(tmp_path, capsys, case):
    img = np.zeros((40, 50), np.uint8)
    io.save_image(tmp_path / "ir" / "a.png", img)
    io.save_image(tmp_path / "vis" / "a.png", img)
    hf = tmp_path / "H.json"
    H = {
        "away": [[1, 0, 400], [0, 1, 0], [0, 0, 1]],
        "singular": [[1, 2, 0], [2, 4, 0], [0, 0, 1]],
        "shape": [[1, 0], [0, 1]],
        "horizon": [[1, 0, 0], [0, 1, 0], [-0.05, 0, 1]],
    }.get(case)
    hf.write_text("{not json" if H is None else json.dumps({"H": H}))
    needle = {
        "away": "maps the visible image away",
        "singular": "singular",
        "not_json": "not a JSON",
        "shape": "finite 3x3",
        "horizon": "beyond the horizon",
    }[case]
    rc, out, err = _run(
        capsys,
        "fuse",
        f"--ir_dir={tmp_path / 'ir'}",
        f"--vis_dir={tmp_path / 'vis'}",
        f"--out_dir={tmp_path / 'o'}",
        f"--homography={hf}",
        "--no-progress",
    )
    _one_line_error(rc, err, f"patchfuse fuse: error: {hf}: ")
    assert needle in err


def test_align_command_writes_quality_and_warns_when_implausible(tmp_path, capsys):
    from scipy import ndimage

    rng = np.random.default_rng(5)
    img = ndimage.gaussian_filter(rng.random((96, 128)), 2.0)
    img = (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8)
    shift = np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]])
    io.save_image(tmp_path / "ir.png", align.warp_image(img, shift, img.shape))
    io.save_image(tmp_path / "vis.png", img)
    rc, out, err = _run(
        capsys, "align", f"--ir={tmp_path / 'ir.png'}", f"--vis={tmp_path / 'vis.png'}", f"--out={tmp_path / 'H.json'}"
    )
    assert rc == 0 and err == "", err
    doc = json.loads((tmp_path / "H.json").read_text())
    assert doc["method"].startswith("ecc") and doc["quality"]["plausible"]
    q = doc["quality"]
    assert q["edge_overlap_after"] > q["edge_overlap_before"] + 0.2
    assert align.corner_error(np.array(doc["H"]), shift, img.shape) < 1.0  # a black strip on one side
    # Points that fit a wild homography: written, with a warning (the edges overlap worse).
    square = np.array([[10, 10], [100, 10], [100, 80], [10, 80.0]])
    _write_points(tmp_path / "p.csv", square, square * [0.4, 0.4] + [3, 3])
    rc, out, err = _run(
        capsys,
        "align",
        f"--ir={tmp_path / 'ir.png'}",
        f"--vis={tmp_path / 'vis.png'}",
        f"--out={tmp_path / 'H2.json'}",
        f"--points={tmp_path / 'p.csv'}",
    )
    assert rc == 0 and "patchfuse align: warning:" in err and "covers only" in err, err
    assert "does not improve the edge overlap" in err
    assert not json.loads((tmp_path / "H2.json").read_text())["quality"]["plausible"]
