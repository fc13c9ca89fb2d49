"""``patchfuse fuse --ir_video=... --vis_video=... --out=...``: fuse two videos (or two folders of
numbered frames) frame by frame into a video or a folder of frames, streamed.

    python -m patchfuse_jax fuse --ir_video=ir.mp4 --vis_video=vis.mp4 --out=fused.mp4
        [--color] [--side_by_side] [--start=N] [--frames=N] [--sync=strict|drop]
        [--homography=H.json] [--fps=F] [--checkpoint=...] [--batch_size=K] [--overwrite]

Videos are decoded and encoded by ffmpeg through ``imageio-ffmpeg`` (the ``[video]`` extra; it
brings its own ffmpeg binary): frames are read and written one at a time through pipes, fused in
batches of ``--batch_size`` (default 8); decoding runs at most a batch ahead in one thread and
encoding a batch behind in another, so memory holds about three batches whatever the length. The
output keeps the input frame rate (H.264, yuv420p; an odd width/height is padded by one edge
pixel, as yuv420p needs even sizes). A folder input (``--ir_video=DIR``) is its image files in
natural order of their names (``frame_2`` before ``frame_10``), at ``--fps`` (default: the other
input's rate, or 25). An ``--out`` without a video extension is a folder: ``OUT/000000.png``, ...
named by pair index (existing frames are skipped unless ``--overwrite``, so a rerun resumes).

Pairing: both inputs must have the same frame count and rate (``--sync=strict``, the default,
checked before anything is fused: one line naming both files); ``--sync=drop`` pairs frames by
timestamp: the output runs at the slower input's rate, each of its frames is paired with the
nearest-in-time frame of the faster input, and the pairs end with the shorter input.
Ctrl-C stops after the batch being fused, waits for its frames to be written, closes the writer
(a playable file of the frames done) and exits with status 130.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import math
import os
import queue
import re
import signal
import sys
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from patchfuse_jax import io
from patchfuse_jax.fusing import options

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi")
DEFAULT_FPS = 25.0
QUALITY = 7  # imageio-ffmpeg's 0..10 scale: libx264 -crf 15
# libx264's speed preset: at the same -crf, "veryfast" leaves more of the CPU to the model than
# the default "medium" (measured: docs/deploy.md).
PRESET = "veryfast"


class VideoError(ValueError):
    """A bad video setup or input; the message is the one-line error."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The video arguments of ``patchfuse fuse`` (see the module docstring)."""
    g = p.add_argument_group("videos (instead of --ir_dir/--vis_dir/--out_dir)")
    g.add_argument("--ir_video", default=None, help="infrared video file, or a folder of numbered frames")
    g.add_argument("--vis_video", default=None, help="visible video file, or a folder of numbered frames")
    g.add_argument("--out", default=None, help="output video (.mp4 .mkv .mov .avi) or a folder for OUT/000000.png ...")
    g.add_argument("--side_by_side", action="store_true", help="write IR | visible | fused side by side (3x the width)")
    g.add_argument("--start", type=int, default=0, help="first frame pair to fuse (default 0)")
    g.add_argument("--frames", type=int, default=None, help="fuse at most N frame pairs")
    g.add_argument(
        "--sync",
        choices=("strict", "drop"),
        default="strict",
        help="strict: equal frame counts and rates required (default); drop: pair by "
        "timestamp, dropping the extra frames of the faster/longer input",
    )
    g.add_argument(
        "--fps", type=float, default=None, help="frame rate of frame-folder inputs (default: the other input's, or 25)"
    )


# --- sources -------------------------------------------------------------------------------------


def _ffmpeg():
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError(
            "videos need imageio-ffmpeg: pip install 'patchfuse_jax[video]' (or pip install imageio-ffmpeg)"
        ) from None
    return imageio_ffmpeg


def _ffmpeg_reason(text: str) -> str:
    """The telling line of an ffmpeg error output."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    keys = ("Invalid data", "moov atom", "No such file", "could not find", "Error", "error", "Invalid")
    for key in keys:
        for ln in lines:
            if key in ln and not ln.startswith(("FFMPEG", "===", "ffmpeg version", "built with")):
                return re.sub(r"^\[[^\]]*\]\s*", "", ln.split(": ", 1)[-1] if ln.startswith("/") else ln)
    return lines[-1] if lines else "unknown ffmpeg error"


class _quiet_fork(warnings.catch_warnings):
    """imageio-ffmpeg starts ffmpeg in its own process group (so that Ctrl-C reaches only us):
    a fork, which JAX warns about; harmless here (the child only calls setpgrp and exec)."""

    def __enter__(self):
        super().__enter__()
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class Source:
    """One input: a video file or a folder of frames. ``count`` frames of ``hw`` (H, W) at
    ``fps``; ``frames()`` yields ``(index, frame)`` one at a time (RGB uint8 for videos, the
    stored pixels for folders); ``read``: frames decoded so far."""

    def __init__(self, path: str, flag: str, fps: float | None = None):
        self.path, self.flag = os.fspath(path), flag
        self.read = 0
        if os.path.isdir(self.path):
            self.kind = "folder"
            names = sorted(
                (n for n in os.listdir(self.path) if os.path.splitext(n)[1].lower() in io.IMAGE_EXTENSIONS),
                key=_natural_key,
            )
            if not names:
                raise VideoError(f"{flag} {self.path}: folder holds no image files ({' '.join(io.IMAGE_EXTENSIONS)})")
            self.files = [os.path.join(self.path, n) for n in names]
            self.count = len(names)
            first = io.read_image(self.files[0])
            self.hw = tuple(first.shape[:2])
            self.fps = fps
        elif os.path.isfile(self.path):
            self.kind = "video"
            ff = _ffmpeg()
            try:
                gen = ff.read_frames(self.path)
                with _quiet_fork():
                    meta = next(gen)
                gen.close()
                count, _ = ff.count_frames_and_secs(self.path)
            except Exception as e:  # noqa: BLE001 - ffmpeg failures come as IOError/RuntimeError
                raise VideoError(f"{flag} {self.path}: cannot be read as a video ({_ffmpeg_reason(e)})") from None
            w, h = meta["size"]
            self.hw, self.fps, self.count = (int(h), int(w)), float(meta.get("fps") or 0) or None, int(count)
            if not self.count:
                raise VideoError(f"{flag} {self.path}: holds no video frames")
        else:
            raise VideoError(f"{flag} {self.path}: no such file or folder")

    def describe(self) -> str:
        return f"{self.path} ({self.count} frames of {self.hw[0]}x{self.hw[1]} at {self.fps:g} fps)"

    def frames(self):
        if self.kind == "folder":
            for i, f in enumerate(self.files):
                img = io.read_image(f)
                if img.shape[:2] != self.hw:
                    raise VideoError(
                        f"{f}: is {img.shape[0]}x{img.shape[1]}, the first frame of "
                        f"{self.path} is {self.hw[0]}x{self.hw[1]} (H x W)"
                    )
                self.read += 1
                yield i, img
            return
        gen = _ffmpeg().read_frames(self.path)
        try:
            with _quiet_fork():
                next(gen)
            h, w = self.hw
            for i in range(self.count):
                try:
                    data = next(gen)
                except StopIteration:
                    return
                except Exception as e:  # noqa: BLE001
                    raise VideoError(
                        f"{self.flag} {self.path}: frame {i} cannot be decoded ({_ffmpeg_reason(e)})"
                    ) from None
                self.read += 1
                yield i, np.frombuffer(data, np.uint8).reshape(h, w, 3)
        finally:
            gen.close()


def open_source(path, flag, fps=None) -> Source:
    return Source(path, flag, fps)


@dataclass
class Plan:
    """Which frames pair up: ``pairs`` of (ir index, vis index) in output order, at ``fps``."""

    pairs: list
    fps: float
    note: str = ""


def plan_pairs(ir: Source, vis: Source, sync: str, start: int, frames: int | None) -> Plan:
    """The frame pairs to fuse (module docstring); VideoError naming both inputs on mismatch."""
    if sync == "strict":
        if ir.count != vis.count or not math.isclose(ir.fps, vis.fps, rel_tol=1e-3):
            raise VideoError(
                f"{ir.describe()} and {vis.describe()} differ in frame "
                f"{'count' if math.isclose(ir.fps, vis.fps, rel_tol=1e-3) else 'rate'}; "
                "use --sync=drop to pair frames by timestamp (drops the extra frames)"
            )
        pairs = [(i, i) for i in range(ir.count)]
        fps, note = ir.fps, ""
    else:
        slow, fast = (ir, vis) if ir.fps <= vis.fps else (vis, ir)
        idx = []
        for j in range(slow.count):
            k = int(math.floor(j * fast.fps / slow.fps + 0.5 + 1e-9))
            if k >= fast.count:
                break
            idx.append((j, k))
        pairs = idx if slow is ir else [(k, j) for j, k in idx]
        fps = slow.fps
        dropped_ir, dropped_vis = ir.count - len(pairs), vis.count - len(pairs)
        note = (
            f"--sync=drop: {len(pairs)} pairs at {fps:g} fps (dropped {dropped_ir} IR and {dropped_vis} visible frames)"
        )
        if not pairs:
            raise VideoError(f"{ir.describe()} and {vis.describe()}: no frame pairs by timestamp")
    if start < 0:
        raise VideoError(f"--start={start}: must be >= 0")
    if frames is not None and frames < 1:
        raise VideoError(f"--frames={frames}: must be at least 1")
    if start >= len(pairs):
        raise VideoError(f"--start={start}: the inputs have only {len(pairs)} frame pair(s)")
    end = len(pairs) if frames is None else min(len(pairs), start + frames)
    return Plan(pairs[start:end], fps, note)


def _paired(ir: Source, vis: Source, pairs):
    """``(ir_frame, vis_frame)`` for each ``(i, j)`` of ``pairs`` (increasing), reading each
    stream once, in order, skipping the frames not used."""
    gi, gv = ir.frames(), vis.frames()
    try:
        ci = cv = (-1, None)
        for i, j in pairs:
            while ci[0] < i:
                ci = next(gi)
            while cv[0] < j:
                cv = next(gv)
            yield ci[1], cv[1]
    finally:
        gi.close()
        gv.close()


# --- sinks ---------------------------------------------------------------------------------------


def is_video_path(path: str) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


class VideoSink:
    """An H.264 file written frame by frame (RGB uint8 ``(H, W, 3)``); ``close()`` finalises it."""

    def __init__(self, path: str, hw: tuple[int, int], fps: float):
        self.path, self.hw = path, hw
        self.even = (hw[0] + hw[0] % 2, hw[1] + hw[1] % 2)
        self.gen = _ffmpeg().write_frames(
            path,
            (self.even[1], self.even[0]),
            fps=fps,
            quality=QUALITY,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-preset", PRESET],
        )
        with _quiet_fork():
            self.gen.send(None)
        self.written = 0

    def write(self, frame: np.ndarray, index: int) -> None:
        if self.even != self.hw:
            frame = np.pad(frame, ((0, self.even[0] - self.hw[0]), (0, self.even[1] - self.hw[1]), (0, 0)), mode="edge")
        try:
            self.gen.send(np.ascontiguousarray(frame))
        except OSError as e:
            raise VideoError(f"--out {self.path}: ffmpeg stopped writing ({_ffmpeg_reason(e)})") from None
        self.written += 1

    def close(self) -> None:
        self.gen.close()


class FolderSink:
    """``OUT/<index:06d>.png`` per frame (atomic writes)."""

    def __init__(self, path: str, bits: int):
        self.path, self.bits, self.written = path, bits, 0

    def name(self, index: int) -> str:
        return os.path.join(self.path, f"{index:06d}.png")

    def write(self, frame: np.ndarray, index: int) -> None:
        io.save_image(self.name(index), frame, bits=self.bits)
        self.written += 1

    def close(self) -> None:
        pass


# --- the work ------------------------------------------------------------------------------------


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any frame -> RGB uint8 ``(H, W, 3)`` (floats in [0, 1] rounded, uint16 / 257)."""
    img = np.asarray(img)
    if img.dtype == np.uint16:
        img = np.round(img / 257.0)
    elif img.dtype.kind == "f":
        img = np.round(np.clip(img, 0, 1) * 255.0)
    img = img.astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] in (2, 4):
        img = img[..., :-1]
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def _fuse_batch(fuse_fn, params, irs, viss, kwargs):
    """One ``fuse`` call on a batch (lists of frames); float32 ``(B, H, W[, 3])`` in [0, 1]."""
    return np.asarray(fuse_fn(params, list(irs), list(viss), **kwargs))


class _Interrupt:
    """SIGINT sets a flag checked between batches (the writer is never cut mid-frame); a second
    Ctrl-C interrupts at once."""

    def __init__(self):
        self.flag, self.old = False, None

    def __enter__(self):
        try:
            self.old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self.old = None
        return self

    def _handle(self, *_):
        self.flag = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def fuse_video(
    ir_video,
    vis_video,
    out,
    *,
    checkpoint=None,
    step=None,
    color=False,
    side_by_side=False,
    start=0,
    frames=None,
    sync="strict",
    homography=None,
    fps=None,
    tile=None,
    overlap=32,
    bits=8,
    ir_norm="none",
    percentiles=(1.0, 99.0),
    bn="image",
    batch_size=8,
    overwrite=False,
    progress=True,
    params=None,
    backend="auto",
) -> dict:
    """Fuses two videos / frame folders into ``out`` (module docstring). Returns a summary dict:
    ``out``, ``written`` (frames), ``skipped``, ``fps``, ``model``."""
    from tqdm import tqdm

    options.check_options(batch_size, ir_norm, percentiles, bits, step, checkpoint)
    if fps is not None and not fps > 0:
        raise VideoError(f"--fps={fps:g}: must be positive")
    out = os.fspath(out)
    video_out = is_video_path(out)
    if video_out and bits != 8:
        raise VideoError(f"--bits={bits}: videos are 8-bit; write a frame folder (--out=DIR) for 16 bits")
    ir = open_source(ir_video, "--ir_video", fps)
    vis = open_source(vis_video, "--vis_video", fps)
    for s, other in ((ir, vis), (vis, ir)):
        if s.fps is None:
            s.fps = fps or other.fps or DEFAULT_FPS
    plan = plan_pairs(ir, vis, sync, start, frames)
    for src in (ir, vis):
        if os.path.exists(out) and os.path.realpath(out) == os.path.realpath(src.path):
            raise VideoError(f"--out {out}: is the {src.flag} input")

    warp = None
    if homography is not None:
        from patchfuse_jax.fusing import align

        hom = align.as_homography(homography)
        for w in hom.check_sizes(ir.hw, vis.hw, f"{ir.path} / {vis.path}"):
            options.stderr(f"{options.PROG}: warning: {w}")
        warp = align.Warp(hom.H, vis.hw, ir.hw)
    elif ir.hw != vis.hw:
        raise VideoError(
            f"{ir.describe()} and {vis.describe()} differ in frame size (H x W); "
            "register them: patchfuse align, then --homography=H.json"
        )

    if video_out:
        if os.path.exists(out) and not overwrite:
            raise VideoError(f"--out {out}: exists (--overwrite replaces it)")
        d = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(d):
            raise VideoError(f"--out {out}: no such folder {d}")
        if not os.access(d, os.W_OK):
            raise VideoError(f"--out {out}: folder {d} is not writable")
    else:
        try:
            io.prepare_out_dir(out, "--out")
        except ValueError as e:
            raise VideoError(str(e)) from None

    if params is None:
        params, model = options.load_model(checkpoint, step)
    else:
        model = f"given FuseParams, step {params.step}"
    options.check_tile(tile, overlap, params.arch.multiple)
    from patchfuse_jax.fusing.api import fuse_with, generator_fn

    backend = options.resolve_backend(backend)
    generator = generator_fn(params.arch, bn)
    if backend == "onnxruntime":
        from patchfuse_jax.fusing.onnx import generator_session

        # its threads sleep between frames: the cores decode, convert and encode meanwhile
        generator = generator_session(params, bn, spin=False)
    fuse_fn = functools.partial(fuse_with, generator)
    kwargs = dict(color=color, tile=tile, overlap=overlap, ir_norm=ir_norm, percentiles=tuple(percentiles))
    indices = list(range(start, start + len(plan.pairs)))
    options.stderr(f"{options.PROG}: model: {model}; backend: {backend}")
    options.stderr(
        f"{options.PROG}: {ir.describe()} + {vis.describe()} -> {out}: {len(indices)} frame pair(s) at {plan.fps:g} fps"
    )
    if plan.note:
        options.stderr(f"{options.PROG}: {plan.note}")
    out_hw = (ir.hw[0], ir.hw[1] * (3 if side_by_side else 1))
    if video_out and (out_hw[0] % 2 or out_hw[1] % 2):
        options.stderr(
            f"{options.PROG}: note: {out_hw[0]}x{out_hw[1]} frames are padded to even sizes by one "
            "edge pixel (H.264 yuv420p)"
        )
    sink = VideoSink(out, out_hw, plan.fps) if video_out else FolderSink(out, bits)
    skip = set()
    if not video_out and not overwrite:
        skip = {i for i in indices if os.path.exists(sink.name(i))}
        if skip:
            options.stderr(
                f"{options.PROG}: skipping {len(skip)} frame(s) whose output exists in {out} (--overwrite redoes them)"
            )

    bar = tqdm(total=len(indices) - len(skip), desc="fuse", unit="frame", file=sys.stderr, disable=not progress)
    # Three stages overlap: decoding runs ahead in a thread (_Prefetch), the main thread fuses, a
    # writer thread converts and encodes the previous batch; ONNX Runtime, numpy and the ffmpeg
    # pipes release the GIL. At most one batch waits for the writer: memory stays bounded.
    stream = _Prefetch(_paired(ir, vis, plan.pairs), depth=batch_size)
    writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    pending = None

    def flush(batch) -> None:
        nonlocal pending
        y, irs, viss = _fuse_batch_frames(batch, fuse_fn, params, kwargs, warp, color)
        if pending is not None:
            pending.result()  # the previous batch is written (its errors raise here)
        pending = writer.submit(_write_batch, batch, y, irs, viss, side_by_side, sink, video_out, bar)

    try:
        with _Interrupt() as stop:
            batch: list = []
            for n, (a, b) in enumerate(stream):
                index = indices[n]
                if index in skip:
                    continue
                batch.append((index, a, b))
                if len(batch) == batch_size or n == len(indices) - 1:
                    flush(batch)
                    batch = []
                    if stop.flag:
                        raise KeyboardInterrupt
            if batch:
                flush(batch)
            if pending is not None:
                pending.result()
    except KeyboardInterrupt:
        _finish(pending)
        bar.close()
        sink.close()
        options.stderr(f"{options.PROG}: interrupted: {out} holds the {sink.written} frame(s) fused so far")
        raise
    except (VideoError, io.ImageError) as e:
        _finish(pending)
        bar.close()
        sink.close()
        raise VideoError(f"{e}; stopped after {sink.written} frame(s) ({out} holds them)") from None
    finally:
        writer.shutdown(wait=True)  # waits for a batch still being written
        bar.close()
        stream.close()
    sink.close()
    return {
        "out": out,
        "written": sink.written,
        "skipped": len(skip),
        "fps": plan.fps,
        "model": model,
        "video": video_out,
    }


class _Prefetch:
    """Iterates ``gen`` in a background thread, up to ``depth`` items ahead, so that decoding
    overlaps fusing. Its exceptions are raised in the caller's thread, in order; ``close()``
    stops the thread and closes ``gen`` there (a generator is closed by the thread running it)."""

    def __init__(self, gen, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop, self.done = threading.Event(), False
        self.thread = threading.Thread(target=self._run, args=(gen,), daemon=True)
        self.thread.start()

    def _run(self, gen) -> None:
        try:
            for item in gen:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
            self._put(("error", e))
        finally:
            gen.close()

    def _put(self, message) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        kind, value = self.queue.get()
        if kind == "item":
            return value
        self.done = True
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _finish(pending) -> None:
    """Waits for the writer's batch in flight; its error is dropped when another one is raised."""
    if pending is not None:
        try:
            pending.result()
        except Exception:  # noqa: BLE001 -- already failing: the first error is the one reported
            pass


def _fuse_batch_frames(batch, fuse_fn, params, kwargs, warp, color):
    irs, viss = [], []
    for _, a, b in batch:
        irs.append(io.to_gray(a))
        if warp is not None:
            b = warp(b)
        viss.append(b if color else io.to_gray(b))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = _fuse_batch(fuse_fn, params, irs, viss, kwargs)
    for msg in dict.fromkeys(str(w.message) for w in caught):
        options.stderr(f"{options.PROG}: warning: frame {batch[0][0]}..{batch[-1][0]}: {msg}")
    return y, irs, viss


def _write_batch(batch, y, irs, viss, side_by_side, sink, video_out, bar) -> None:
    for k, (index, a, b) in enumerate(batch):
        frame = y[k]
        if side_by_side:
            panels = [_to_rgb8(irs[k]), _to_rgb8(viss[k]), _to_rgb8(frame)]
            frame = np.concatenate(panels, axis=1)
        elif video_out:
            frame = _to_rgb8(frame)
        sink.write(frame, index)
    bar.update(len(batch))


def run(args: argparse.Namespace) -> None:
    """``patchfuse fuse`` in video mode: fuses, then prints one summary line on stdout."""
    if not (args.ir_video and args.vis_video and args.out):
        raise VideoError("videos need --ir_video, --vis_video and --out together")
    for flag in ("ir_dir", "vis_dir", "out_dir", "split"):
        if getattr(args, flag, None):
            raise VideoError(f"--{flag} is for image folders; with --ir_video/--vis_video give --out")
    r = fuse_video(
        args.ir_video,
        args.vis_video,
        args.out,
        side_by_side=args.side_by_side,
        start=args.start,
        frames=args.frames,
        sync=args.sync,
        fps=args.fps,
        **options.shared_kwargs(args),
    )
    what = "video" if r["video"] else "folder"
    extra = f"; skipped {r['skipped']} whose output exists" if r["skipped"] else ""
    print(f"fused {r['written']} frame(s) into {what} {r['out']} at {r['fps']:g} fps{extra}")
