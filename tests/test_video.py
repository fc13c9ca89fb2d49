"""``patchfuse fuse --ir_video/--vis_video/--out`` (patchfuse_jax/fusing/video.py): streamed video fusion."""

import os

import numpy as np
import pytest

from patchfuse_jax import fuse, io
from patchfuse_jax.__main__ import main
from patchfuse_jax.eval.evaluate import quantize
from patchfuse_jax.fusing import video

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
# imageio-ffmpeg forks to put ffmpeg in its own process group; JAX warns about any fork.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

HW = (32, 48)
from tests.conftest import tiny_model_export  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny random generator, exported: ``(path, FuseParams)``."""
    return tiny_model_export(tmp_path_factory.mktemp("model"), "instance", seed=5, step=3)


def _frames(n, seed, rgb):
    """Smooth moving patterns (compress well, so decoded frames stay close to these)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : HW[0], 0 : HW[1]]
    out = []
    for t in range(n):
        base = 128 + 90 * np.sin((xx + 2 * t) / 6.0 + rng.uniform(0, 0.1)) * np.cos(yy / 5.0)
        f = np.clip(base, 0, 255).astype(np.uint8)
        out.append(np.stack([f, np.roll(f, 3, 1), 255 - f], -1) if rgb else np.stack([f] * 3, -1))
    return out


def _write_video(path, frames, fps):
    gen = imageio_ffmpeg.write_frames(
        str(path), (HW[1], HW[0]), fps=fps, quality=9, macro_block_size=1, ffmpeg_log_level="error"
    )
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    return str(path)


def _read_video(path):
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, frames


def _pair(tmp_path, n_ir=12, n_vis=12, fps_ir=25, fps_vis=25):
    ir = _write_video(tmp_path / "ir.mp4", _frames(n_ir, 0, False), fps_ir)
    vis = _write_video(tmp_path / "vis.mp4", _frames(n_vis, 1, True), fps_vis)
    return ir, vis


def _run(capsys, *argv):
    rc = main(["fuse", "--no-progress", *map(str, argv)])
    c = capsys.readouterr()
    return rc, c.out, c.err


def _one_line_error(rc, err, *needles):
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], err


def test_video_end_to_end_keeps_fps_and_count(model, tmp_path, capsys):
    path, params = model
    ir, vis = _pair(tmp_path, 12, 12, 15, 15)
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir}",
        f"--vis_video={vis}",
        f"--out={tmp_path / 'f.mp4'}",
        f"--checkpoint={path}",
        "--color",
        "--batch_size=5",
    )
    assert rc == 0, err
    assert out.strip() == f"fused 12 frame(s) into video {tmp_path / 'f.mp4'} at 15 fps"
    meta, frames = _read_video(tmp_path / "f.mp4")
    assert meta["fps"] == 15 and len(frames) == 12 and frames[0].shape == (*HW, 3)
    # Each frame is the library call on the decoded input frames (up to H.264 loss).
    _, irs = _read_video(ir)
    _, viss = _read_video(vis)
    want = quantize(fuse(params, io.to_gray(irs[7]), viss[7], color=True))
    assert np.abs(frames[7].astype(int) - want.astype(int)).mean() < 4


def test_frame_folders_in_and_out_equal_the_library(model, tmp_path, capsys):
    path, params = model
    for name, seed, rgb in (("irf", 0, False), ("visf", 1, True)):
        for i, f in enumerate(_frames(11, seed, rgb)):
            io.save_image(tmp_path / name / f"frame_{i}.png", f if rgb else f[..., 0])
    rc, out, err = _run(
        capsys,
        f"--ir_video={tmp_path / 'irf'}",
        f"--vis_video={tmp_path / 'visf'}",
        f"--out={tmp_path / 'o'}",
        f"--checkpoint={path}",
        "--start=2",
        "--frames=7",
        "--batch_size=3",
        "--backend=xla",  # bit-equal to the library's default backend (auto: test below)
    )
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path / "o")) == [f"{i:06d}.png" for i in range(2, 9)]
    for i in (2, 5, 8):  # natural order: frame_10 comes after frame_9, not after frame_1
        got = io.read_image(tmp_path / "o" / f"{i:06d}.png")
        want = quantize(
            fuse(
                params,
                io.read_image(tmp_path / "irf" / f"frame_{i}.png"),
                io.to_gray(io.read_image(tmp_path / "visf" / f"frame_{i}.png")),
            )
        )
        np.testing.assert_array_equal(got, want)
    # A rerun skips the frames that exist; a folder input plus a video output takes --fps.
    rc, out, err = _run(
        capsys,
        f"--ir_video={tmp_path / 'irf'}",
        f"--vis_video={tmp_path / 'visf'}",
        f"--out={tmp_path / 'o'}",
        f"--checkpoint={path}",
        "--frames=4",
    )
    assert rc == 0 and "skipped 2 whose output exists" in out, (out, err)
    rc, out, err = _run(
        capsys,
        f"--ir_video={tmp_path / 'irf'}",
        f"--vis_video={tmp_path / 'visf'}",
        f"--out={tmp_path / 'o.mkv'}",
        f"--checkpoint={path}",
        "--fps=10",
        "--side_by_side",
    )
    assert rc == 0, err
    meta, frames = _read_video(tmp_path / "o.mkv")
    assert meta["fps"] == 10 and len(frames) == 11 and frames[0].shape == (HW[0], 3 * HW[1], 3)


def test_videos_default_to_onnx_runtime_when_installed(model, tmp_path, capsys):
    """The fast path is the default for videos: ONNX Runtime when installed, within one 8-bit
    level of the XLA backend; --backend=xla is exact; stderr names the backend."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path, params = model
    for name, seed, rgb in (("irf", 0, False), ("visf", 1, True)):
        for i, f in enumerate(_frames(4, seed, rgb)):
            io.save_image(tmp_path / name / f"frame_{i}.png", f if rgb else f[..., 0])
    outs = {}
    for backend in (None, "xla"):
        out_dir = tmp_path / f"o_{backend}"
        argv = [f"--ir_video={tmp_path / 'irf'}", f"--vis_video={tmp_path / 'visf'}", f"--out={out_dir}"]
        argv += [f"--checkpoint={path}", "--color"] + ([f"--backend={backend}"] if backend else [])
        rc, out, err = _run(capsys, *argv)
        assert rc == 0, err
        assert f"backend: {backend or 'onnxruntime'}" in err
        outs[backend] = [io.read_image(out_dir / f"{i:06d}.png").astype(int) for i in range(4)]
    for a, b in zip(outs[None], outs["xla"]):
        assert np.abs(a - b).max() <= 1


def test_mismatched_lengths_error_or_drop(model, tmp_path, capsys):
    path, _ = model
    ir, vis = _pair(tmp_path, 12, 9)
    rc, out, err = _run(
        capsys, f"--ir_video={ir}", f"--vis_video={vis}", f"--out={tmp_path / 'f.mp4'}", f"--checkpoint={path}"
    )
    _one_line_error(rc, err, f"{ir} (12 frames", f"{vis} (9 frames", "--sync=drop")
    assert not os.path.exists(tmp_path / "f.mp4")
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir}",
        f"--vis_video={vis}",
        f"--out={tmp_path / 'f.mp4'}",
        f"--checkpoint={path}",
        "--sync=drop",
    )
    assert rc == 0, err
    assert len(_read_video(tmp_path / "f.mp4")[1]) == 9


def test_different_rates_pair_by_timestamp(model, tmp_path, capsys):
    ir = video.Source(_write_video(tmp_path / "ir.mp4", _frames(20, 0, False), 20), "--ir_video")
    vis = video.Source(_write_video(tmp_path / "vis.mp4", _frames(8, 1, True), 10), "--vis_video")
    with pytest.raises(video.VideoError, match="differ in frame rate"):
        video.plan_pairs(ir, vis, "strict", 0, None)
    plan = video.plan_pairs(ir, vis, "drop", 0, None)
    assert plan.fps == 10 and plan.pairs == [(2 * j, j) for j in range(8)]
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir.path}",
        f"--vis_video={vis.path}",
        f"--out={tmp_path / 'f.mp4'}",
        f"--checkpoint={model[0]}",
        "--sync=drop",
    )
    assert rc == 0, err
    meta, frames = _read_video(tmp_path / "f.mp4")
    assert meta["fps"] == 10 and len(frames) == 8


def test_corrupt_video_is_one_line_naming_it(model, tmp_path, capsys):
    ir, _ = _pair(tmp_path)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    rc, out, err = _run(
        capsys, f"--ir_video={ir}", f"--vis_video={bad}", f"--out={tmp_path / 'f.mp4'}", f"--checkpoint={model[0]}"
    )
    _one_line_error(rc, err, f"--vis_video {bad}: cannot be read as a video")
    rc, out, err = _run(
        capsys, f"--ir_video={tmp_path / 'none.mp4'}", f"--vis_video={ir}", f"--out={tmp_path / 'f.mp4'}"
    )
    _one_line_error(rc, err, f"--ir_video {tmp_path / 'none.mp4'}: no such file or folder")
    rc, out, err = _run(capsys, f"--ir_video={ir}", f"--vis_video={ir}", f"--out={ir}", "--overwrite")
    _one_line_error(rc, err, f"--out {ir}: is the --ir_video input")


def test_interrupt_leaves_a_playable_file(model, tmp_path, capsys, monkeypatch):
    ir, vis = _pair(tmp_path, 16, 16)
    calls = []
    real = video._fuse_batch

    def interrupt_after_two(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(video, "_fuse_batch", interrupt_after_two)
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir}",
        f"--vis_video={vis}",
        f"--out={tmp_path / 'f.mp4'}",
        f"--checkpoint={model[0]}",
        "--batch_size=4",
    )
    assert rc == 130 and "holds the 8 frame(s) fused so far" in err, err
    meta, frames = _read_video(tmp_path / "f.mp4")
    assert len(frames) == 8 and meta["fps"] == 25


def test_streaming_reads_only_a_batch_ahead(model, tmp_path, capsys, monkeypatch):
    ir, vis = _pair(tmp_path, 20, 20)
    sources, seen = [], []
    real_open, real_fuse = video.open_source, video._fuse_batch

    def tracking_open(*a, **k):
        sources.append(real_open(*a, **k))
        return sources[-1]

    def check(fuse_fn, params, irs, viss, kwargs):
        seen.append(len(irs))
        done = sum(seen)
        # decoding runs ahead in a thread, by at most a batch (queued) and the frame in its hand
        assert all(s.read <= done + 3 + 1 for s in sources), [s.read for s in sources]
        return real_fuse(fuse_fn, params, irs, viss, kwargs)

    monkeypatch.setattr(video, "open_source", tracking_open)
    monkeypatch.setattr(video, "_fuse_batch", check)
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir}",
        f"--vis_video={vis}",
        f"--out={tmp_path / 'f.mp4'}",
        f"--checkpoint={model[0]}",
        "--batch_size=3",
    )
    assert rc == 0, err
    assert seen == [3] * 6 + [2]


def test_homography_applies_to_every_frame(model, tmp_path, capsys):
    path, params = model
    ir, vis = _pair(tmp_path, 6, 6)
    H = np.array([[1.0, 0, 2.0], [0, 1.0, -1.0], [0, 0, 1]])
    from patchfuse_jax.fusing import align

    align.save_homography(tmp_path / "H.json", H, ir_size=HW, vis_size=HW, method="test")
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir}",
        f"--vis_video={vis}",
        f"--out={tmp_path / 'o'}",
        f"--checkpoint={path}",
        f"--homography={tmp_path / 'H.json'}",
    )
    assert rc == 0, err
    _, irs = _read_video(ir)
    _, viss = _read_video(vis)
    got = io.read_image(tmp_path / "o" / "000004.png")
    want = quantize(fuse(params, io.to_gray(irs[4]), io.to_gray(viss[4]), homography=H))
    np.testing.assert_array_equal(got, want)
    away = np.array([[1.0, 0, 500.0], [0, 1.0, 0], [0, 0, 1]])
    align.save_homography(tmp_path / "away.json", away, ir_size=HW, vis_size=HW, method="test")
    rc, out, err = _run(
        capsys,
        f"--ir_video={ir}",
        f"--vis_video={vis}",
        f"--out={tmp_path / 'o2'}",
        f"--checkpoint={path}",
        f"--homography={tmp_path / 'away.json'}",
    )
    _one_line_error(rc, err, f"{tmp_path / 'away.json'}: the homography maps the visible image away")


def test_prefetch_reads_ahead_in_order_raises_in_the_caller_and_closes_early():
    """Decoding runs ahead in a thread (video._Prefetch): items in order, the reader's error raised
    in the caller after the items before it, and close() stops and closes a half-read stream."""
    closed = []

    def frames(n, fail_at=None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise video.VideoError(f"ir.mp4: corrupt frame {i}")
                yield i
        finally:
            closed.append(n)

    assert list(video._Prefetch(frames(10), depth=3)) == list(range(10))
    got, stream = [], video._Prefetch(frames(10, fail_at=6), depth=2)
    with pytest.raises(video.VideoError, match="ir.mp4: corrupt frame 6"):
        for item in stream:
            got.append(item)
    assert got == [0, 1, 2, 3, 4, 5]
    stream = video._Prefetch(frames(1000), depth=4)
    assert next(stream) == 0
    stream.close()
    assert not stream.thread.is_alive() and closed == [10, 10, 1000]
