"""Training/evaluation data: paired IR/visible sources, splits, deterministic batches.

Sources (``PairFolder``, ``synthetic.SyntheticPairs``) share one interface: ``len(src)``,
``src.stems``, ``src.get(i) -> (ir, vis)`` (``float32 (H, W)`` in [0, 1]), ``src.name(i)`` and
``src.raw(i)`` (the stored gray arrays, uint8/uint16/float32, read-only).

Determinism contract of :func:`sample_batch` (multi-host slices and resumed runs see the same
data): global sample ``j`` of step ``step`` depends only on ``(seed, step, j)``:

* pair index: ``k = step * batch_size + j``; ``epoch, pos = divmod(k, len(source))``;
  ``perm = np.random.default_rng([seed, epoch]).permutation(len(source))``; pair ``perm[pos]``;
* crop offset and flip: drawn from ``np.random.default_rng([seed, step, j, 0xC809])``.

Crops: a dimension at least as large as the crop is cropped at a uniform offset; a smaller
one is padded by reflection (numpy ``'reflect'``, edge pixel not repeated) with the padding
split at random between the two sides. The rule is ``crop <= 2 * size - 1`` (each side needs
at most ``size - 1`` reflected pixels); larger crops raise :class:`DataError`. Then a
horizontal flip with probability 0.5. The same transform is applied to IR and visible.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from typing import Iterator, Sequence

import numpy as np

from patchfuse_jax import io
from patchfuse_jax.io import DataError, read_split

_CROP_SALT = 0xC809


# ----------------------------------------------------------------------------- folder source


class PairFolder:
    """Pairs ``root/ir/<stem>.*`` with ``root/vis/<stem>.*`` (png, jpg/jpeg, bmp, tif/tiff).

    ``stems`` or ``split_file`` select (and order) a subset; default: all stems, sorted.
    Images are read lazily and cached as their gray arrays (uint8/uint16 as stored; visible RGB
    becomes BT.601 Y). ``get(i)`` -> ``(ir, vis)``, each ``float32 (H, W)`` in [0, 1].
    """

    def __init__(
        self, root: str | os.PathLike, stems: Sequence[str] | None = None, split_file: str | os.PathLike | None = None
    ):
        self.root = os.fspath(root)
        if stems is not None and split_file is not None:
            raise DataError("PairFolder: give either stems or split_file, not both")
        if not os.path.isdir(self.root):
            raise DataError(f"data folder {self.root}: no such folder")
        for sub in ("ir", "vis"):
            if not os.path.isdir(os.path.join(self.root, sub)):
                raise DataError(
                    f"data folder {self.root}: missing subfolder {sub}/ (expected {self.root}/ir and {self.root}/vis)"
                )
        folders = {}
        for sub in ("ir", "vis"):
            d = os.path.join(self.root, sub)
            try:
                files = io.list_images(d)
            except io.ImageError as e:
                raise DataError(str(e)) from None
            if not files:
                raise DataError(f"{d}: no images (extensions {', '.join(io.IMAGE_EXTENSIONS)})")
            folders[sub] = files
        ir_files, vis_files = folders["ir"], folders["vis"]
        only_ir = sorted(set(ir_files) - set(vis_files))
        only_vis = sorted(set(vis_files) - set(ir_files))
        if only_ir or only_vis:
            msg = [f"data folder {self.root}: IR and visible stems do not match"]
            if only_ir:
                msg.append(f"only in ir/ ({len(only_ir)}): {io.format_list(only_ir)}")
            if only_vis:
                msg.append(f"only in vis/ ({len(only_vis)}): {io.format_list(only_vis)}")
            raise DataError("; ".join(msg))
        where = self.root
        if split_file is not None:
            stems = read_split(split_file)
            where = os.fspath(split_file)
        if stems is None:
            stems = sorted(ir_files)
        else:
            stems = [str(s) for s in stems]
            if not stems:
                raise DataError(f"data folder {self.root}: empty stem list")
            dup = sorted({s for s in stems if stems.count(s) > 1})
            if dup:
                raise DataError(f"{where}: duplicate stems {io.format_list(dup)}")
            missing = [s for s in stems if s not in ir_files]
            if missing:
                raise DataError(f"{where}: {len(missing)} stem(s) not in {self.root}: {io.format_list(missing)}")
        self.stems: list[str] = stems
        self._paths = [(ir_files[s], vis_files[s]) for s in stems]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.stems)

    def __repr__(self) -> str:
        return f"PairFolder({self.root!r}, {len(self)} pairs)"

    def name(self, i: int) -> str:
        return self.stems[self._index(i)]

    def paths(self, i: int) -> tuple[str, str]:
        """``(ir_path, vis_path)`` of pair ``i``."""
        return self._paths[self._index(i)]

    def _index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self.stems):
            raise IndexError(f"pair index {i} out of range for {len(self.stems)} pairs in {self.root}")
        return i

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ir, vis)`` gray arrays as stored (uint8/uint16, or float32 in [0, 1]); read-only."""
        i = self._index(i)
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        ir_path, vis_path = self._paths[i]
        pair = []
        for p in (ir_path, vis_path):
            try:
                g = io.to_gray(io.read_image(p), name=p)
                if np.issubdtype(g.dtype, np.floating):  # float TIFF: check range once, keep f32
                    g = io.to_unit_float(g, name=p)
                elif g.dtype not in (np.uint8, np.uint16):
                    io.to_unit_float(g, name=p)  # raises the unsupported-dtype error
            except io.ImageError as e:
                raise DataError(str(e)) from None
            g = np.ascontiguousarray(g)
            g.setflags(write=False)
            pair.append(g)
        if pair[0].shape != pair[1].shape:
            (h1, w1), (h2, w2) = pair[0].shape, pair[1].shape
            raise DataError(
                f"pair {self.stems[i]!r}: IR {ir_path} is {h1}x{w1} (HxW) but "
                f"visible {vis_path} is {h2}x{w2}; IR and visible must be aligned, same size"
            )
        with self._lock:
            self._cache.setdefault(i, (pair[0], pair[1]))
            return self._cache[i]

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ir, vis)``, each ``float32 (H, W)`` in [0, 1]."""
        ir, vis = self.raw(i)
        return io.to_unit_float(ir), io.to_unit_float(vis)


def make_source(
    data_dir: str, split_file: str | None = None, *, seed: int = 0, synthetic_hw=(128, 128), synthetic_pairs: int = 64
):
    """``"synthetic"`` -> ``SyntheticPairs(synthetic_pairs, synthetic_hw, seed)``; else ``PairFolder``."""
    if os.fspath(data_dir) == "synthetic":
        from patchfuse_jax.train.synthetic import SyntheticPairs

        if split_file is not None:
            raise DataError("a split file cannot be used with data_dir='synthetic'")
        return SyntheticPairs(num_pairs=synthetic_pairs, hw=synthetic_hw, seed=seed)
    return PairFolder(data_dir, split_file=split_file)


# ----------------------------------------------------------------------------- crops and batches


def _check_crop(crop_hw) -> tuple[int, int]:
    try:
        ok = len(crop_hw) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in crop_hw
        )
    except TypeError:
        ok = False
    if not ok:
        raise DataError(f"crop_hw must be two positive ints (H, W), got {crop_hw!r}")
    return int(crop_hw[0]), int(crop_hw[1])


def _check_nonneg(**kw) -> None:
    for k, v in kw.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise DataError(f"{k} must be a non-negative int, got {v!r}")


def _crop_index(size: int, crop: int, offset: int) -> np.ndarray:
    """Indices ``offset .. offset+crop-1`` into an axis of ``size``, reflected at the borders."""
    idx = np.arange(offset, offset + crop)
    idx = np.where(idx < 0, -idx, idx)
    return np.where(idx >= size, 2 * (size - 1) - idx, idx)


def _offset_range(source, i: int, shape, crop_hw) -> list[tuple[int, int]]:
    """Per axis, the allowed offsets ``[lo, hi]`` (negative = reflect-padded at the start)."""
    out = []
    for size, crop in zip(shape, crop_hw):
        if crop > 2 * size - 1:
            raise DataError(
                f"pair {source.name(i)!r} ({_describe(source, i)}) is {shape[0]}x{shape[1]} (HxW), "
                f"too small for crop {crop_hw[0]}x{crop_hw[1]}: reflect padding allows a crop of at "
                f"most 2*size-1 = {2 * shape[0] - 1}x{2 * shape[1] - 1}"
            )
        out.append((min(0, size - crop), max(0, size - crop)))
    return out


def check_source(source, crop_hw) -> None:
    """Loads every pair once (readable, aligned sizes) and checks the crop fits each of them,
    so that a bad file stops a run before its first step rather than hours into it."""
    crop_hw = _check_crop(crop_hw)
    for i in range(len(source)):
        ir, _ = source.raw(i) if hasattr(source, "raw") else source.get(i)
        _offset_range(source, i, ir.shape, crop_hw)


def _describe(source, i: int) -> str:
    paths = getattr(source, "paths", None)
    return ", ".join(paths(i)) if paths else type(source).__name__


def _crop_pair(ir, vis, offsets, crop_hw, flip: bool):
    rows = _crop_index(ir.shape[0], crop_hw[0], offsets[0])
    cols = _crop_index(ir.shape[1], crop_hw[1], offsets[1])
    if flip:
        cols = cols[::-1]
    ix = np.ix_(rows, cols)
    return io.to_unit_float(ir[ix]), io.to_unit_float(vis[ix])


@functools.lru_cache(maxsize=16)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    p = np.random.default_rng([seed, epoch]).permutation(n)
    p.setflags(write=False)
    return p


def _check_batch_args(seed, step, batch_size, crop_hw, start, stop):
    """Validates sample_batch's arguments; returns ``(crop_hw, stop)``."""
    crop_hw = _check_crop(crop_hw)
    _check_nonneg(seed=seed, step=step, start=start)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
    stop = batch_size if stop is None else stop
    _check_nonneg(stop=stop)
    if not start <= stop <= batch_size:
        raise DataError(
            f"need 0 <= start <= stop <= batch_size, got start={start}, stop={stop}, batch_size={batch_size}"
        )
    return crop_hw, stop


def sample_index(source_len: int, *, seed: int, step: int, batch_size: int, j: int) -> int:
    """Pair index of global sample ``j`` of ``step`` (see the module docstring)."""
    epoch, pos = divmod(step * batch_size + j, source_len)
    return int(_permutation(int(seed), int(epoch), int(source_len))[pos])


def sample_batch(
    source, *, seed: int, step: int, batch_size: int, crop_hw, start: int = 0, stop: int | None = None
) -> dict[str, np.ndarray]:
    """Samples ``start..stop-1`` of the global batch of ``step``.

    Returns ``{"ir": float32 (n, h, w, 1), "vis": float32 (n, h, w, 1)}`` in [0, 1],
    ``n = stop - start``, ``(h, w) = crop_hw``.
    """
    crop_hw, stop = _check_batch_args(seed, step, batch_size, crop_hw, start, stop)
    n = len(source)
    if n == 0:
        raise DataError(f"{source!r}: no pairs")
    out_ir = np.empty((stop - start, *crop_hw, 1), np.float32)
    out_vis = np.empty_like(out_ir)
    for b, j in enumerate(range(start, stop)):
        i = sample_index(n, seed=seed, step=step, batch_size=batch_size, j=j)
        ir, vis = source.raw(i)
        ranges = _offset_range(source, i, ir.shape, crop_hw)
        rng = np.random.default_rng([int(seed), int(step), int(j), _CROP_SALT])
        offsets = [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]
        flip = bool(rng.random() < 0.5)
        out_ir[b, ..., 0], out_vis[b, ..., 0] = _crop_pair(ir, vis, offsets, crop_hw, flip)
    return {"ir": out_ir, "vis": out_vis}


def fixed_sample_batch(source, n: int, crop_hw) -> dict[str, np.ndarray]:
    """The first ``min(n, len(source))`` pairs, centre-cropped or centre-padded (reflect; the
    smaller half of an odd excess goes first) to ``crop_hw``, no flip: ``{"ir", "vis"}``, each ``float32 (n, h, w, 1)`` in [0, 1]."""
    crop_hw = _check_crop(crop_hw)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"n must be a positive int, got {n!r}")
    n = min(int(n), len(source))
    out_ir = np.empty((n, *crop_hw, 1), np.float32)
    out_vis = np.empty_like(out_ir)
    for i in range(n):
        ir, vis = source.raw(i)
        _offset_range(source, i, ir.shape, crop_hw)  # validates the crop
        offsets = [
            (size - crop) // 2 if size >= crop else -((crop - size) // 2) for size, crop in zip(ir.shape, crop_hw)
        ]
        out_ir[i, ..., 0], out_vis[i, ..., 0] = _crop_pair(ir, vis, offsets, crop_hw, False)
    return {"ir": out_ir, "vis": out_vis}


_END = object()


def _produce(source, kw, step, end, q: queue.Queue, stop: threading.Event) -> None:
    """Prefetch loop (holds no reference to the Batches object, so it can be collected)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    while not stop.is_set():
        if end is not None and step >= end:
            put(_END)
            return
        try:
            item = (step, sample_batch(source, step=step, **kw))
        except BaseException as e:  # handed to the consumer
            put(e)
            return
        if not put(item):
            return
        step += 1


class Batches:
    """Iterator of ``(step, batch)`` for ``step = start_step, start_step + 1, ...``, where
    ``batch = sample_batch(source, seed=seed, step=step, ...)``; endless unless ``num_steps``.

    A background thread keeps up to ``prefetch`` batches ready (``prefetch=0``: no thread).
    An error in the thread is re-raised (same exception) by ``next()``. Call ``close()``
    or use ``with Batches(...) as it:`` to stop the thread.
    """

    def __init__(
        self,
        source,
        *,
        seed: int,
        start_step: int,
        batch_size: int,
        crop_hw,
        start: int = 0,
        stop: int | None = None,
        prefetch: int = 2,
        num_steps: int | None = None,
    ):
        _check_nonneg(start_step=start_step, prefetch=prefetch)
        if num_steps is not None:
            _check_nonneg(num_steps=num_steps)
        _check_batch_args(seed, start_step, batch_size, crop_hw, start, stop)
        self._kw = dict(seed=seed, batch_size=batch_size, crop_hw=crop_hw, start=start, stop=stop)
        self.source = source
        self._next_step = int(start_step)
        self._end = None if num_steps is None else int(start_step) + int(num_steps)
        self._closed = False
        self._done = False
        self._thread = None
        if prefetch > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_produce,
                name="patchfuse-batches",
                daemon=True,
                args=(source, self._kw, self._next_step, self._end, self._queue, self._stop),
            )
            self._thread.start()

    def _make(self, step: int):
        return step, sample_batch(self.source, step=step, **self._kw)

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        return self

    def __next__(self) -> tuple[int, dict[str, np.ndarray]]:
        if self._closed or self._done:
            raise StopIteration
        if self._thread is None:
            if self._end is not None and self._next_step >= self._end:
                self._done = True
                raise StopIteration
            item = self._make(self._next_step)
        else:
            item = self._queue.get()
            if item is _END:
                self._done = True
                raise StopIteration
            if isinstance(item, BaseException):
                self._done = True
                self.close()
                raise item
        self._next_step = item[0] + 1
        return item

    def close(self) -> None:
        """Stops the prefetch thread (idempotent)."""
        self._closed = True
        if self._thread is not None:
            self._stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=10)

    def __enter__(self) -> "Batches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
