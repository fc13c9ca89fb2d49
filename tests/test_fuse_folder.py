"""``patchfuse fuse`` (patchfuse_jax/fusing/folder.py): folders in, PNGs out, one-line errors."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from patchfuse_jax import fuse, io, pretrained
from patchfuse_jax.__main__ import main
from patchfuse_jax.eval.evaluate import quantize
from tests.conftest import REPO, tiny_model_export

SIZES = {"a": (37, 53), "b": (37, 53), "c": (40, 61)}  # two sizes, odd ones


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny random generator with BatchNorm, exported to one file: ``(path, FuseParams)``."""
    return tiny_model_export(tmp_path_factory.mktemp("model"), "batch", seed=3, step=7)


def _pairs(root, sizes=SIZES, vis_rgb=True, seed=0):
    """``root/ir`` (gray uint8) and ``root/vis`` (RGB uint8) with one pair per stem."""
    rng = np.random.default_rng(seed)
    for stem, hw in sizes.items():
        io.save_image(root / "ir" / f"{stem}.png", rng.integers(0, 256, hw).astype(np.uint8))
        vis_shape = (*hw, 3) if vis_rgb else hw
        io.save_image(root / "vis" / f"{stem}.png", rng.integers(0, 256, vis_shape).astype(np.uint8))
    return root / "ir", root / "vis"


def _run(capsys, ir, vis, out, *extra, checkpoint=None):
    argv = [
        "fuse",
        f"--ir_dir={ir}",
        f"--vis_dir={vis}",
        f"--out_dir={out}",
        "--no-progress",
        *([f"--checkpoint={checkpoint}"] if checkpoint else []),
        *extra,
    ]
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _expected(params, ir_path, vis_path, **kw):
    """The library's result for one pair, as an 8-bit PNG would hold it."""
    ir = io.to_gray(io.read_image(ir_path))
    return quantize(fuse(params, ir, io.read_image(vis_path), **kw))


def _ok(rc, out, err):
    assert rc == 0, err
    assert "Traceback" not in err


# --- outputs -------------------------------------------------------------------------------------


def test_outputs_by_stem_at_exact_size_match_the_library(model, tmp_path, capsys):
    path, params = model
    ir, vis = _pairs(tmp_path)
    rc, out, err = _run(capsys, ir, vis, tmp_path / "out", checkpoint=path)
    _ok(rc, out, err)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "c.png"]  # no temp files left
    assert f"model: {path}, step 7 (" in err and "norm=batch" in err
    assert out.strip() == f"fused 3 image(s) into {tmp_path / 'out'}"
    for stem, hw in SIZES.items():
        got = io.read_image(tmp_path / "out" / f"{stem}.png")
        assert got.shape == hw and got.dtype == np.uint8
        np.testing.assert_array_equal(got, _expected(params, ir / f"{stem}.png", vis / f"{stem}.png"))


def test_batches_give_the_same_pixels_as_one_by_one(model, tmp_path, capsys):
    path, _ = model
    # num_downs=2: 37x53 and 39x55 pad to the same 40x56, 40x61 to 40x64.
    sizes = {"a": (37, 53), "b": (39, 55), "c": (37, 53), "d": (40, 61), "e": (40, 56)}
    ir, vis = _pairs(tmp_path, sizes)
    _ok(*_run(capsys, ir, vis, tmp_path / "one", "--batch_size=1", checkpoint=path))
    _ok(*_run(capsys, ir, vis, tmp_path / "many", "--batch_size=4", checkpoint=path))
    _ok(*_run(capsys, ir, vis, tmp_path / "two", "--batch_size=2", "--bn=image", checkpoint=path))
    _ok(*_run(capsys, ir, vis, tmp_path / "img1", "--batch_size=1", "--bn=image", checkpoint=path))
    for stem, hw in sizes.items():
        one = io.read_image(tmp_path / "one" / f"{stem}.png")
        assert one.shape == hw
        np.testing.assert_array_equal(io.read_image(tmp_path / "many" / f"{stem}.png"), one)
        np.testing.assert_array_equal(
            io.read_image(tmp_path / "two" / f"{stem}.png"), io.read_image(tmp_path / "img1" / f"{stem}.png")
        )


def test_existing_outputs_are_skipped_unless_overwrite(model, tmp_path, capsys):
    path, _ = model
    ir, vis = _pairs(tmp_path)
    out_dir = tmp_path / "out"
    _ok(*_run(capsys, ir, vis, out_dir, checkpoint=path))
    good = io.read_image(out_dir / "a.png")
    io.save_image(out_dir / "a.png", np.zeros(SIZES["a"], np.uint8))  # a stand-in output
    (out_dir / ".b.png.tmp-999").write_bytes(b"half")  # a killed run's temp file
    os.remove(out_dir / "c.png")
    rc, out, err = _run(capsys, ir, vis, out_dir, checkpoint=path)
    _ok(rc, out, err)
    assert "skipping 2 of 3 pair(s) whose output exists" in err
    assert out.strip().endswith(
        "fused 1 image(s) into " + str(out_dir) + "; skipped 2 whose output exists (--overwrite redoes them)"
    )
    assert io.read_image(out_dir / "a.png").max() == 0  # skipped, kept
    assert io.read_image(out_dir / "c.png").shape == SIZES["c"]  # redone
    rc, out, err = _run(capsys, ir, vis, out_dir, "--overwrite", checkpoint=path)
    _ok(rc, out, err)
    assert "fused 3 image(s)" in out and "skipped" not in out
    np.testing.assert_array_equal(io.read_image(out_dir / "a.png"), good)


def test_split_selects_stems(model, tmp_path, capsys):
    path, _ = model
    ir, vis = _pairs(tmp_path)
    (tmp_path / "split.txt").write_text("# two of three\nc\na\n")
    _ok(*_run(capsys, ir, vis, tmp_path / "out", f"--split={tmp_path / 'split.txt'}", checkpoint=path))
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]


def _read_png16(path):
    """Minimal PNG decoder (16-bit, any filter), independent of Pillow (which reads 16-bit RGB
    as 8-bit): ``(H, W)`` or ``(H, W, C)`` uint16."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (n,), tag = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(tag + body)
        if tag == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = hdr[:4]
    assert depth == 16
    c = {0: 1, 4: 2, 2: 3, 6: 4}[ctype]
    bpp, stride = 2 * c, 2 * c * w
    raw = zlib.decompress(idat)
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, cc = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else cc)) & 255
        rows.append(bytes(line))
        prev = line
    img = np.frombuffer(b"".join(rows), ">u2").astype(np.uint16).reshape(h, w, c)
    return img[..., 0] if c == 1 else img


def test_bits16(model, tmp_path, capsys):
    path, params = model
    ir, vis = _pairs(tmp_path, {"a": (37, 53)})
    _ok(*_run(capsys, ir, vis, tmp_path / "out", "--bits=16", checkpoint=path))
    got = io.read_image(tmp_path / "out" / "a.png")
    assert got.dtype == np.uint16 and got.shape == (37, 53)
    np.testing.assert_array_equal(got, _read_png16(tmp_path / "out" / "a.png"))
    want = fuse(params, io.read_image(ir / "a.png"), io.read_image(vis / "a.png"))
    np.testing.assert_allclose(got / 65535.0, want, atol=0.5 / 65535 + 1e-6)


def test_save_image_bits():
    """io.save_image: 8-bit as before, 16-bit gray and RGB (RGB PNG written by hand)."""
    import tempfile

    rng = np.random.default_rng(2)
    f = rng.random((9, 11, 3))
    with tempfile.TemporaryDirectory() as d:
        io.save_image(os.path.join(d, "g8.png"), f[..., 0])
        np.testing.assert_array_equal(io.read_image(os.path.join(d, "g8.png")), quantize(f[..., 0]))
        io.save_image(os.path.join(d, "u8.png"), quantize(f))
        np.testing.assert_array_equal(io.read_image(os.path.join(d, "u8.png")), quantize(f))
        want = np.round(f * 65535).astype(np.uint16)
        io.save_image(os.path.join(d, "g16.png"), f[..., 0], bits=16)
        np.testing.assert_array_equal(io.read_image(os.path.join(d, "g16.png")), want[..., 0])
        io.save_image(os.path.join(d, "rgb16.png"), f, bits=16)
        np.testing.assert_array_equal(_read_png16(os.path.join(d, "rgb16.png")), want)
        # A valid PNG for other readers too (Pillow keeps the high byte).
        np.testing.assert_array_equal(io.read_image(os.path.join(d, "rgb16.png")), want >> 8)
        io.save_image(os.path.join(d, "up.png"), quantize(f), bits=16)  # uint8 -> x 257
        np.testing.assert_array_equal(_read_png16(os.path.join(d, "up.png")), quantize(f).astype(np.uint16) * 257)
        with pytest.raises(ValueError, match="16-bit images need a .png or .tif"):
            io.save_image(os.path.join(d, "x.jpg"), f, bits=16)
        with pytest.raises(ValueError, match="bits=12"):
            io.save_image(os.path.join(d, "x.png"), f, bits=12)
        assert sorted(os.listdir(d)) == ["g16.png", "g8.png", "rgb16.png", "u8.png", "up.png"]


def test_default_weights_without_checkpoint(tmp_path, capsys):
    params = pretrained()
    ir, vis = _pairs(tmp_path, {"a": (37, 53)})
    rc, out, err = _run(capsys, ir, vis, tmp_path / "out")
    _ok(rc, out, err)
    assert f"model: the shipped default weights (patchfuse_jax/weights/default.msgpack), step {params.step}" in err
    assert f"num_downs={params.arch.num_downs}" in err
    np.testing.assert_array_equal(
        io.read_image(tmp_path / "out" / "a.png"), _expected(params, ir / "a.png", vis / "a.png")
    )


# --- colour, tiles, IR normalisation: the same as the library call -----------------------------------


def test_color_output_for_colour_visible_images(model, tmp_path, capsys):
    path, params = model
    ir, vis = _pairs(tmp_path, {"a": (37, 53), "b": (37, 53)})
    gray = io.read_image(vis / "b.png")[..., 0]
    io.save_image(vis / "b.png", np.stack([gray] * 3, -1))  # gray stored as RGB
    io.save_image(ir / "c.png", io.read_image(ir / "a.png"))
    io.save_image(vis / "c.png", gray)  # plain gray
    _ok(*_run(capsys, ir, vis, tmp_path / "out", "--color", checkpoint=path))
    a = io.read_image(tmp_path / "out" / "a.png")
    assert a.shape == (37, 53, 3)
    np.testing.assert_array_equal(a, _expected(params, ir / "a.png", vis / "a.png", color=True))
    for stem in ("b", "c"):  # gray visible: gray output
        got = io.read_image(tmp_path / "out" / f"{stem}.png")
        assert got.shape == (37, 53)
        want = _expected(params, ir / f"{stem}.png", vis / "c.png")
        # b and c are fused as one batch: per-image BatchNorm (bn="image") in a batch of two may
        # round differently from a single call, so allow one 8-bit level.
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    _ok(*_run(capsys, ir, vis, tmp_path / "out16", "--color", "--bits=16", checkpoint=path))
    rgb16 = _read_png16(tmp_path / "out16" / "a.png")
    assert rgb16.shape == (37, 53, 3)
    want = fuse(params, io.read_image(ir / "a.png"), io.read_image(vis / "a.png"), color=True)
    np.testing.assert_allclose(rgb16 / 65535.0, want, atol=0.5 / 65535 + 1e-6)


def test_tiles_match_the_library_call(model, tmp_path, capsys):
    path, params = model
    ir, vis = _pairs(tmp_path, {"a": (37, 53), "b": (37, 53)})
    _ok(*_run(capsys, ir, vis, tmp_path / "out", "--tile=16", "--overlap=4", checkpoint=path))
    for stem in ("a", "b"):
        got = io.read_image(tmp_path / "out" / f"{stem}.png")
        assert got.shape == (37, 53)
        np.testing.assert_array_equal(
            got, _expected(params, ir / f"{stem}.png", vis / f"{stem}.png", tile=16, overlap=4)
        )
    # A bad tile/overlap is refused before anything is computed.
    rc, out, err = _run(capsys, ir, vis, tmp_path / "bad", "--tile=8", checkpoint=path)
    _one_line_error(rc, err, "--tile=8 --overlap=32")
    assert os.listdir(tmp_path / "bad") == []


def test_ir_norm_for_16bit_thermal_counts(model, tmp_path, capsys):
    path, params = model
    rng = np.random.default_rng(4)
    (tmp_path / "ir").mkdir()
    counts = rng.integers(3000, 4500, (37, 53)).astype(np.uint16)  # 14-bit counts, 16-bit file
    io.save_image(tmp_path / "ir" / "a.png", counts, bits=16)
    io.save_image(tmp_path / "vis" / "a.png", rng.integers(0, 256, (37, 53)).astype(np.uint8))
    ir, vis = tmp_path / "ir", tmp_path / "vis"
    rc, out, err = _run(capsys, ir, vis, tmp_path / "none", checkpoint=path)
    _ok(rc, out, err)
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith(f"patchfuse fuse: warning: {ir / 'a.png'}: ")
    for mode, extra in (("minmax", []), ("percentile", ["--percentiles=2,98"])):
        _ok(*_run(capsys, ir, vis, tmp_path / mode, f"--ir_norm={mode}", *extra, checkpoint=path))
        kw = {"percentiles": (2.0, 98.0)} if extra else {}
        np.testing.assert_array_equal(
            io.read_image(tmp_path / mode / "a.png"), _expected(params, ir / "a.png", vis / "a.png", ir_norm=mode, **kw)
        )


# --- errors: one line, exit 1, nothing computed --------------------------------------------------


def _one_line_error(rc, err, needle, after_start=False):
    """Exit 1 and one line on stderr (``after_start``: after the model line of a started run)."""
    assert rc == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    if after_start:
        assert lines[0].startswith("patchfuse fuse: model: "), err
        lines = lines[1:]
    assert len(lines) == 1, err
    assert lines[0].startswith("patchfuse fuse: error: ") and needle in lines[0], err


def _error_case(name, tmp_path, model_path):
    """A broken setup and the needle its error must contain; ``(argv pieces, needle)``."""
    ir, vis = _pairs(tmp_path)
    out = tmp_path / "out"
    ck = f"--checkpoint={model_path}"
    if name == "missing_folder":
        return [
            f"--ir_dir={tmp_path / 'nope'}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            ck,
        ], f"--ir_dir: {tmp_path / 'nope'}: no such folder"
    if name == "unmatched_stems":
        os.remove(vis / "b.png")
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            ck,
        ], f"do not pair up by stem: only in {ir}: b"
    if name == "split_lacks_stem":
        (tmp_path / "s.txt").write_text("a\nzz\n")
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            ck,
            f"--split={tmp_path / 's.txt'}",
        ], "lacks 1 image(s) of the split: zz"
    if name == "out_dir_is_a_file":
        out.write_text("x")
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            ck,
        ], f"--out_dir {out}: is a file, not a folder"
    if name == "out_dir_under_a_file":
        (tmp_path / "f").write_text("x")
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={tmp_path / 'f' / 'o'}",
            ck,
        ], "cannot create the folder"
    if name == "out_dir_is_input":
        return [f"--ir_dir={ir}", f"--vis_dir={vis}", f"--out_dir={ir}", ck], "is the --ir_dir folder"
    if name == "size_mismatch":
        io.save_image(vis / "b.png", np.zeros((36, 53, 3), np.uint8))
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            ck,
        ], f"b: ir {ir / 'b.png'} is 37x53 but vis {vis / 'b.png'} is 36x53"
    if name == "corrupt_image":
        (vis / "c.png").write_bytes(b"not a png")
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            ck,
        ], f"{vis / 'c.png'}: cannot be read as an image"
    if name == "bad_checkpoint":
        return [
            f"--ir_dir={ir}",
            f"--vis_dir={vis}",
            f"--out_dir={out}",
            f"--checkpoint={tmp_path / 'nowhere'}",
        ], f"--checkpoint: {tmp_path / 'nowhere'}: no such workdir or exported file"
    if name == "step_without_checkpoint":
        return [f"--ir_dir={ir}", f"--vis_dir={vis}", f"--out_dir={out}", "--step=3"], "--step needs --checkpoint"
    if name == "bad_batch_size":
        return [f"--ir_dir={ir}", f"--vis_dir={vis}", f"--out_dir={out}", ck, "--batch_size=0"], "--batch_size=0"
    if name == "bad_bits":
        return [f"--ir_dir={ir}", f"--vis_dir={vis}", f"--out_dir={out}", ck, "--bits=12"], "--bits"
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "missing_folder",
        "unmatched_stems",
        "split_lacks_stem",
        "out_dir_is_a_file",
        "out_dir_under_a_file",
        "out_dir_is_input",
        "size_mismatch",
        "corrupt_image",
        "bad_checkpoint",
        "step_without_checkpoint",
        "bad_batch_size",
        "bad_bits",
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio trying its plugins
def test_errors_are_one_line_before_computing(model, tmp_path, capsys, name):
    argv, needle = _error_case(name, tmp_path, model[0])
    rc = main(["fuse", "--no-progress", *argv])
    captured = capsys.readouterr()
    _one_line_error(rc, captured.err, needle)
    assert captured.out == ""
    out = tmp_path / "out"
    assert not out.is_dir() or os.listdir(out) == []  # nothing was fused


def test_unwritable_out_dir(model, tmp_path, capsys, monkeypatch):
    import tempfile

    ir, vis = _pairs(tmp_path)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)  # as for a read-only folder
    rc, _, err = _run(capsys, ir, vis, tmp_path / "ro", checkpoint=model[0])
    _one_line_error(rc, err, f"--out_dir {tmp_path / 'ro'}: folder is not writable (Permission denied)")


def test_truncated_image_stops_naming_it_and_keeps_the_outputs_before(model, tmp_path, capsys):
    path, _ = model
    ir, vis = _pairs(tmp_path)
    data = (vis / "c.png").read_bytes()
    (vis / "c.png").write_bytes(data[: len(data) // 2])  # header fine, pixels cut
    rc, out, err = _run(capsys, ir, vis, tmp_path / "out", checkpoint=path)
    _one_line_error(rc, err, f"{vis / 'c.png'}: cannot be read as an image", after_start=True)
    assert "stopped after writing 2 of 3 output(s) (a rerun skips them)" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]


# --- the console script --------------------------------------------------------------------------


def test_console_script(model, tmp_path):
    path, params = model
    ir, vis = _pairs(tmp_path, {"a": (37, 53), "b": (40, 61)})
    script = os.path.join(os.path.dirname(sys.executable), "patchfuse")
    cmd = [script] if os.path.isfile(script) else [sys.executable, "-m", "patchfuse_jax"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(
        [
            *cmd,
            "fuse",
            "--ir_dir",
            str(ir),
            "--vis_dir",
            str(vis),
            "--out_dir",
            str(tmp_path / "out"),
            "--checkpoint",
            path,
            "--bits",
            "16",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "2/2" in r.stderr  # the progress bar
    assert r.stdout.strip() == f"fused 2 image(s) into {tmp_path / 'out'}"
    for stem, hw in (("a", (37, 53)), ("b", (40, 61))):
        got = io.read_image(tmp_path / "out" / f"{stem}.png")
        assert got.shape == hw and got.dtype == np.uint16
