"""PairFolder, splits, sample_batch determinism/cropping, Batches, and the RoadScene splits."""

import os
import pathlib

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import REPO, shared_data
from patchfuse_jax.train.data import (
    Batches,
    DataError,
    PairFolder,
    fixed_sample_batch,
    make_source,
    read_split,
    sample_batch,
    sample_index,
)
from patchfuse_jax.train.synthetic import SyntheticPairs


def _img(shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)


def make_folder(root, pairs, ir_ext=".png", vis_ext=".png"):
    """pairs: {stem: (ir_array, vis_array)}; writes root/ir, root/vis."""
    root = pathlib.Path(root)
    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vis").mkdir(parents=True, exist_ok=True)
    for stem, (ir, vis) in pairs.items():
        if ir is not None:
            iio.imwrite(root / "ir" / f"{stem}{ir_ext}", ir)
        if vis is not None:
            iio.imwrite(root / "vis" / f"{stem}{vis_ext}", vis)
    return root


@pytest.fixture
def folder(tmp_path):
    pairs = {f"p{i}": (_img((20 + i, 30), seed=2 * i), _img((20 + i, 30, 3), seed=2 * i + 1)) for i in range(5)}
    return make_folder(tmp_path / "d", pairs), pairs


# ----------------------------------------------------------------------------- pairing, formats


def test_pairing_by_stem_and_y_conversion(folder):
    root, pairs = folder
    src = PairFolder(root)
    assert len(src) == 5 and src.stems == [f"p{i}" for i in range(5)]
    assert src.name(2) == "p2"
    ir, vis = src.get(2)
    assert ir.dtype == vis.dtype == np.float32 and ir.shape == vis.shape == (22, 30)
    np.testing.assert_array_equal(ir, pairs["p2"][0] / np.float32(255))
    rgb = pairs["p2"][1].astype(np.float64)
    y = np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    np.testing.assert_allclose(vis, y / 255, atol=1e-6)
    raw_ir, raw_vis = src.raw(2)
    assert raw_ir.dtype == raw_vis.dtype == np.uint8 and raw_vis.shape == (22, 30)
    assert src.raw(2)[0] is raw_ir  # cached


def test_mixed_extensions_16bit_and_3channel_gray(tmp_path):
    ir16 = _img((12, 14), np.uint16)
    gray = _img((12, 14), seed=5)
    root = tmp_path / "d"
    make_folder(root, {"a": (ir16, None)}, ir_ext=".png")
    make_folder(root, {"a": (None, np.stack([gray] * 3, -1))}, vis_ext=".bmp")
    make_folder(root, {"b": (_img((12, 14), seed=7), None)}, ir_ext=".tif")
    make_folder(root, {"b": (None, _img((12, 14, 3), seed=8))}, vis_ext=".jpg")
    src = PairFolder(root)
    assert src.stems == ["a", "b"]
    ir, vis = src.get(0)
    assert src.raw(0)[0].dtype == np.uint16
    np.testing.assert_allclose(ir, ir16 / 65535.0, atol=1e-7)
    np.testing.assert_array_equal(vis, gray / np.float32(255))  # bit-exact first channel
    ir_b, vis_b = src.get(1)
    assert ir_b.shape == vis_b.shape == (12, 14)


def test_stems_and_split_file_select_subset(folder, tmp_path):
    root, _ = folder
    assert PairFolder(root, stems=["p3", "p1"]).stems == ["p3", "p1"]
    split = tmp_path / "s.txt"
    split.write_text("# header\n\np4\n  p0  # comment\n")
    assert read_split(split) == ["p4", "p0"]
    src = PairFolder(root, split_file=split)
    assert src.stems == ["p4", "p0"] and src.get(0)[0].shape == (24, 30)
    assert isinstance(make_source(str(root), str(split)), PairFolder)
    assert isinstance(make_source("synthetic"), SyntheticPairs)


# ----------------------------------------------------------------------------- errors


def test_missing_root_and_subfolders(tmp_path):
    with pytest.raises(DataError, match="nope"):
        PairFolder(tmp_path / "nope")
    (tmp_path / "d" / "ir").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing subfolder vis/"):
        PairFolder(tmp_path / "d")


def test_empty_folder(tmp_path):
    (tmp_path / "d" / "ir").mkdir(parents=True)
    (tmp_path / "d" / "vis").mkdir()
    (tmp_path / "d" / "ir" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"d[/\\]ir: no images"):
        PairFolder(tmp_path / "d")


def test_unmatched_stems_listed_both_sides(tmp_path):
    root = make_folder(
        tmp_path / "d",
        {"a": (_img((8, 8)), _img((8, 8))), "only_ir": (_img((8, 8)), None), "only_vis": (None, _img((8, 8)))},
    )
    with pytest.raises(DataError) as e:
        PairFolder(root)
    msg = str(e.value)
    assert "only in ir/ (1): only_ir" in msg and "only in vis/ (1): only_vis" in msg


def test_split_errors(folder, tmp_path):
    root, _ = folder
    with pytest.raises(DataError, match="missing.txt: no such file"):
        read_split(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(DataError, match="empty.txt: lists no stems"):
        read_split(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("p1\nzz9\nyy8\n")
    with pytest.raises(DataError, match=r"bad.txt: 2 stem\(s\) not in .*: zz9, yy8"):
        PairFolder(root, split_file=bad)
    with pytest.raises(DataError, match="not in"):
        PairFolder(root, stems=["p1", "zz9"])


def test_size_mismatch_detected_on_load(tmp_path):
    root = make_folder(tmp_path / "d", {"ok": (_img((8, 8)), _img((8, 8))), "bad": (_img((10, 12)), _img((10, 13, 3)))})
    src = PairFolder(root)  # construction does not read images
    src.get(src.stems.index("ok"))
    with pytest.raises(DataError) as e:
        src.get(src.stems.index("bad"))
    msg = str(e.value)
    assert os.path.join("ir", "bad.png") in msg and os.path.join("vis", "bad.png") in msg
    assert "10x12" in msg and "10x13" in msg


def test_truncated_and_unreadable_files(tmp_path):
    root = make_folder(tmp_path / "d", {"t": (_img((40, 40)), _img((40, 40)))})
    p = root / "vis" / "t.png"
    p.write_bytes(p.read_bytes()[:60])
    (root / "ir" / "u.jpg").write_bytes(b"not an image at all")
    (root / "vis" / "u.jpg").write_bytes(b"\xff\xd8\xff")
    src = PairFolder(root)
    with pytest.raises(DataError, match=r"vis[/\\]t\.png"):
        src.get(src.stems.index("t"))
    with pytest.raises(DataError, match=r"ir[/\\]u\.jpg: cannot be read"):
        sample_batch(PairFolder(root, stems=["u"]), seed=0, step=0, batch_size=2, crop_hw=(8, 8))


# ----------------------------------------------------------------------------- sample_batch


@pytest.fixture
def src(folder):
    return PairFolder(folder[0])


def test_sample_batch_shapes_and_determinism(src):
    a = sample_batch(src, seed=1, step=3, batch_size=4, crop_hw=(16, 24))
    b = sample_batch(src, seed=1, step=3, batch_size=4, crop_hw=(16, 24))
    assert a["ir"].shape == a["vis"].shape == (4, 16, 24, 1) and a["ir"].dtype == np.float32
    assert 0.0 <= a["ir"].min() and a["ir"].max() <= 1.0
    for k in ("ir", "vis"):
        assert np.array_equal(a[k], b[k])
    c = sample_batch(src, seed=1, step=4, batch_size=4, crop_hw=(16, 24))
    d = sample_batch(src, seed=2, step=3, batch_size=4, crop_hw=(16, 24))
    assert not np.array_equal(a["ir"], c["ir"]) and not np.array_equal(a["ir"], d["ir"])


def test_slices_equal_full_batch(src):
    kw = dict(seed=7, step=11, batch_size=4, crop_hw=(12, 20))
    full = sample_batch(src, **kw)
    parts = [sample_batch(src, start=0, stop=2, **kw), sample_batch(src, start=2, stop=4, **kw)]
    for k in ("ir", "vis"):
        assert np.array_equal(full[k], np.concatenate([p[k] for p in parts]))
    assert sample_batch(src, start=1, stop=1, **kw)["ir"].shape == (0, 12, 20, 1)


def test_epoch_covers_every_pair_once(src):
    # 5 pairs, batch 2: global samples 0..4 (steps 0-2) are epoch 0, a permutation of the pairs
    idx = [sample_index(5, seed=0, step=k // 2, batch_size=2, j=k % 2) for k in range(10)]
    assert sorted(idx[:5]) == list(range(5)) and sorted(idx[5:]) == list(range(5))
    assert idx[:5] == list(np.random.default_rng([0, 0]).permutation(5))


def test_crops_vary_with_step_and_ir_vis_aligned(tmp_path):
    ramp = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    root = make_folder(tmp_path / "d", {"r": (ramp, ramp)})
    src = PairFolder(root)
    crops = set()
    for step in range(8):
        b = sample_batch(src, seed=0, step=step, batch_size=1, crop_hw=(10, 10))
        assert np.array_equal(b["ir"], b["vis"])  # same transform on both
        v = np.round(b["ir"][0, ..., 0] * 65535).astype(int)
        crops.add((int(v.min()), bool(v[0, 0] > v[0, -1])))  # (offset, flipped)
    assert len(crops) >= 6
    assert any(f for _, f in crops) and not all(f for _, f in crops)


def test_reflect_padding_of_small_images(tmp_path):
    img = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5) * 7
    root = make_folder(tmp_path / "d", {"s": (img, img)})
    src = PairFolder(root)
    seen = set()
    for step in range(12):
        x = sample_batch(src, seed=0, step=step, batch_size=1, crop_hw=(9, 8))["ir"][0, ..., 0]
        x = np.round(x * 255).astype(np.uint8)
        # must equal some reflect-padded window (with or without flip)
        found = False
        for top in range(0, 9 - 6 + 1):
            for left in range(0, 8 - 5 + 1):
                ref = np.pad(img, ((top, 3 - top), (left, 3 - left)), mode="reflect")
                for flip in (False, True):
                    if np.array_equal(x, ref[:, ::-1] if flip else ref):
                        found = True
                        seen.add((top, left, flip))
        assert found
    assert len(seen) > 3
    fixed = fixed_sample_batch(src, 1, (9, 8))["ir"][0, ..., 0]
    ref = np.pad(img, ((1, 2), (1, 2)), mode="reflect") / np.float32(255)
    np.testing.assert_array_equal(fixed, ref)


def test_crop_too_large_and_bad_args(tmp_path, src):
    root = make_folder(tmp_path / "small", {"s": (_img((6, 5)), _img((6, 5)))})
    small = PairFolder(root)
    sample_batch(small, seed=0, step=0, batch_size=1, crop_hw=(11, 9))  # 2*size-1: allowed
    with pytest.raises(DataError) as e:
        sample_batch(small, seed=0, step=0, batch_size=1, crop_hw=(12, 9))
    msg = str(e.value)
    assert os.path.join("ir", "s.png") in msg and "6x5" in msg and "12x9" in msg
    with pytest.raises(DataError, match="too small"):
        fixed_sample_batch(small, 1, (6, 10))
    for bad in [(0, 4), (4,), (4.0, 4), "ab", (True, 4), (-1, 3)]:
        with pytest.raises(DataError, match="crop_hw"):
            sample_batch(src, seed=0, step=0, batch_size=1, crop_hw=bad)
    with pytest.raises(DataError, match="start <= stop"):
        sample_batch(src, seed=0, step=0, batch_size=2, crop_hw=(4, 4), start=1, stop=3)
    with pytest.raises(DataError, match="batch_size"):
        sample_batch(src, seed=0, step=0, batch_size=0, crop_hw=(4, 4))
    with pytest.raises(DataError, match="step"):
        sample_batch(src, seed=0, step=-1, batch_size=1, crop_hw=(4, 4))


def test_fixed_sample_batch(src):
    a = fixed_sample_batch(src, 3, (16, 16))
    assert a["ir"].shape == (3, 16, 16, 1)
    ir0, _ = src.get(0)  # 20x30 -> centre crop rows 2..17, cols 7..22
    np.testing.assert_array_equal(a["ir"][0, ..., 0], ir0[2:18, 7:23])
    assert fixed_sample_batch(src, 99, (8, 8))["vis"].shape[0] == 5


# ----------------------------------------------------------------------------- Batches


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_match_sample_batch(src, prefetch):
    kw = dict(seed=3, batch_size=4, crop_hw=(8, 8), start=1, stop=3)
    with Batches(src, start_step=5, prefetch=prefetch, **kw) as it:
        got = [next(it) for _ in range(3)]
    assert [s for s, _ in got] == [5, 6, 7]
    for step, b in got:
        ref = sample_batch(src, step=step, **kw)
        assert np.array_equal(b["ir"], ref["ir"]) and np.array_equal(b["vis"], ref["vis"])
    assert [s for s, _ in Batches(src, start_step=2, num_steps=3, prefetch=prefetch, **kw)] == [2, 3, 4]


@pytest.mark.parametrize("prefetch", [0, 1])
def test_batches_propagate_errors(tmp_path, prefetch):
    root = make_folder(tmp_path / "d", {"s": (_img((6, 5)), _img((6, 5)))})
    it = Batches(PairFolder(root), seed=0, start_step=0, batch_size=1, crop_hw=(20, 20), prefetch=prefetch)
    with pytest.raises(DataError, match=r"ir[/\\]s\.png.*too small for crop 20x20"):
        next(it)
    it.close()
    it.close()  # idempotent
    with pytest.raises(StopIteration):
        next(it)


def test_batches_close_stops_thread(src):
    it = Batches(src, seed=0, start_step=0, batch_size=2, crop_hw=(8, 8), prefetch=2)
    next(it)
    it.close()
    assert not it._thread.is_alive()


# ----------------------------------------------------------------------------- RoadScene


def test_roadscene_splits_and_batch():
    root = shared_data("roadscene")
    train = read_split(REPO / "splits" / "roadscene_train.txt")
    test = read_split(REPO / "splits" / "roadscene_test.txt")
    val = read_split(REPO / "splits" / "roadscene_val.txt")
    allsrc = PairFolder(root)
    assert len(allsrc) == 221 and len(test) == 20 and len(val) == 20 and len(train) == 181
    assert sorted(train + val + test) == allsrc.stems  # a partition: no stem twice
    assert not (set(train) & set(test) or set(train) & set(val) or set(val) & set(test))
    src = make_source(str(root), str(REPO / "splits" / "roadscene_train.txt"))
    b = sample_batch(src, seed=0, step=0, batch_size=2, crop_hw=(256, 512))
    assert b["ir"].shape == b["vis"].shape == (2, 256, 512, 1)
    assert 0.0 <= b["vis"].min() and b["vis"].max() <= 1.0 and b["vis"].std() > 0.01


def test_batches_thread_stops_when_collected(src):
    import gc

    it = Batches(src, seed=0, start_step=0, batch_size=2, crop_hw=(8, 8), prefetch=1)
    thread = it._thread
    next(it)
    del it
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
