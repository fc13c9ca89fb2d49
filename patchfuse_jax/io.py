"""Image files and folders of pairs: the one place files become arrays. Never imports JAX.

All readers raise :class:`ImageError` naming the file and the problem, never an
exception from deep inside imageio/PIL; bad folders, split files and output folders raise
:class:`DataError` (``match_pairs``, ``read_split``, ``prepare_out_dir``).

Conventions
-----------
* ``read_image(path)`` returns the stored pixels unchanged: ``(H, W)`` or ``(H, W, C)``,
  dtype ``uint8``/``uint16`` (or float for float TIFFs).
* ``to_gray(img)`` gives one channel: RGB(A) -> BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B``
  (the Y of YCbCr), except that a 3-channel image whose channels are identical (gray stored
  as RGB) is taken as its first channel, bit-exact.
* ``to_unit_float(img)`` maps ``uint8 / 255``, ``uint16 / 65535``; floats must already lie in [0, 1].
* ``load_gray(path)`` = read + gray + unit float: ``float32 (H, W)`` in [0, 1].
* ``rgb_to_ycbcr`` / ``ycbcr_to_rgb``: full-range BT.601 YCbCr (JPEG/JFIF), the colour space of
  ``fuse(..., color=True)``: the model fuses Y, the visible image's Cb/Cr are put back.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# ITU-R BT.601 luma weights (the Y of YCbCr).
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float64)


class ImageError(ValueError):
    """A file could not be read as an image, or has an unsupported layout."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads one image file; returns ``(H, W)`` or ``(H, W, C)`` in its stored dtype."""
    import imageio.v3 as iio  # local: keeps `import patchfuse_jax` light

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as e:  # imageio/PIL raise many types for corrupt files
        raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from None
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        raise ImageError(f"{path}: channel-first or multi-page image of shape {img.shape} is not supported")
    if img.ndim not in (2, 3) or img.size == 0:
        raise ImageError(f"{path}: unsupported image shape {img.shape}")
    if img.ndim == 3 and img.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: unsupported number of channels {img.shape[-1]}")
    return img


def luma_bt601(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``(..., 3)`` RGB, computed in float64; same scale as the input."""
    return np.asarray(rgb, dtype=np.float64) @ BT601


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in [0, 1] -> ``(..., 3)`` float64 full-range BT.601 ``(Y, Cb, Cr)``:
    ``Y = 0.299 R + 0.587 G + 0.114 B`` in [0, 1], ``Cb = (B - Y) / 1.772`` and
    ``Cr = (R - Y) / 1.402`` in [-0.5, 0.5] (centred; JPEG stores them + 0.5)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    y = rgb @ BT601
    return np.stack(
        [y, (rgb[..., 2] - y) / (2.0 * (1.0 - BT601[2])), (rgb[..., 0] - y) / (2.0 * (1.0 - BT601[0]))], axis=-1
    )


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr`` (float64, not clipped: out-of-gamut values leave [0, 1])."""
    ycc = np.asarray(ycc, dtype=np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    r = y + 2.0 * (1.0 - BT601[0]) * cr
    b = y + 2.0 * (1.0 - BT601[2]) * cb
    g = (y - BT601[0] * r - BT601[2] * b) / BT601[1]
    return np.stack([r, g, b], axis=-1)


def to_gray(img: np.ndarray, *, name: str = "image") -> np.ndarray:
    """``(H, W)``/``(H, W, C)`` -> ``(H, W)``. Keeps the integer dtype (luma is rounded)."""
    img = np.asarray(img)
    if img.ndim == 2:
        return img
    if img.ndim != 3:
        raise ImageError(f"{name}: expected (H, W) or (H, W, C), got shape {img.shape}")
    c = img.shape[-1]
    if c in (2, 4):  # gray+alpha, RGB+alpha: drop alpha
        img, c = img[..., : c - 1], c - 1
    if c == 1:
        return img[..., 0]
    if c != 3:
        raise ImageError(f"{name}: unsupported number of channels {img.shape[-1]}")
    if np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]):
        return img[..., 0]
    y = luma_bt601(img)
    if np.issubdtype(img.dtype, np.integer):
        return np.clip(np.round(y), 0, np.iinfo(img.dtype).max).astype(img.dtype)
    return y.astype(img.dtype)


def to_unit_float(img: np.ndarray, *, name: str = "image") -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]; float input is checked to lie in [0, 1]."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.floating):
        if not np.all(np.isfinite(img)):
            raise ImageError(f"{name}: contains NaN or Inf")
        lo, hi = float(img.min(initial=0.0)), float(img.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise ImageError(f"{name}: float values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        return img.astype(np.float32)
    raise ImageError(f"{name}: unsupported dtype {img.dtype} (use uint8, uint16 or float in [0, 1])")


def load_gray(path: str | os.PathLike) -> np.ndarray:
    """Reads ``path`` as one gray channel, ``float32 (H, W)`` in [0, 1]."""
    name = os.fspath(path)
    return to_unit_float(to_gray(read_image(path), name=name), name=name)


def list_images(folder: str | os.PathLike) -> dict[str, str]:
    """``{stem: path}`` of the image files directly in ``folder``; errors on duplicate stems."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ImageError(f"{folder}: no such folder")
    out: dict[str, str] = {}
    for fname in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(fname)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in out:
            raise ImageError(f"{folder}: two images share the stem {stem!r}: {os.path.basename(out[stem])} and {fname}")
        out[stem] = os.path.join(folder, fname)
    return out


def _png_rgb16(img: np.ndarray) -> bytes:
    """A 16-bit PNG of ``(H, W, C)`` uint16, C = 2 (gray+alpha), 3 (RGB) or 4 (RGBA), which
    Pillow cannot write; every row uses the PNG ``Up`` filter."""
    import struct
    import zlib

    h, w, c = img.shape
    rows = np.ascontiguousarray(img.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # Up filter: byte minus the byte above, mod 256
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), filtered], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    color_type = {2: 4, 3: 2, 4: 6}[c]
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def save_image(path: str | os.PathLike, img: np.ndarray, *, bits: int = 8) -> None:
    """Writes an image as ``bits``-bit (8 or 16) integers, format by extension (PNG, JPEG, ...).

    ``img``: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; float in [0, 1] (scaled by
    255 or 65535 and rounded), or ``uint8`` / ``uint16`` (kept as is when it has the asked depth,
    else rescaled: x 257 or / 257). 16-bit needs PNG or TIFF; 16-bit RGB(A) PNGs are written here
    (Pillow cannot). The file is written atomically: to a temporary file next to it, then
    renamed, so an interrupted write never leaves a half-written ``path``. Missing parent
    folders are created."""
    import imageio.v3 as iio

    if bits not in (8, 16):
        raise ValueError(f"save_image: bits={bits!r}: expected 8 or 16")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (2, 3, 4)):
        raise ValueError(f"save_image {path}: expected (H, W) or (H, W, C) with C in 1-4, got shape {img.shape}")
    dtype, top = (np.uint8, 255) if bits == 8 else (np.uint16, 65535)
    if img.dtype == dtype:
        pass
    elif img.dtype == np.uint8:  # 8 -> 16 bit: 255 -> 65535
        img = img.astype(np.uint16) * np.uint16(257)
    elif img.dtype == np.uint16:  # 16 -> 8 bit
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    else:  # float in [0, 1] (other dtypes as before: taken as [0, 1] values)
        img = np.clip(np.round(np.asarray(img, np.float64) * top), 0, top).astype(dtype)
    if bits == 16 and ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"save_image {path}: 16-bit images need a .png or .tif file")
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        if bits == 16 and ext == ".png" and img.ndim == 3:
            with open(tmp, "wb") as fh:
                fh.write(_png_rgb16(img))
        else:
            iio.imwrite(tmp, img, extension=ext or ".png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def format_list(items: Sequence[str], limit: int = 10) -> str:
    """``a, b, c (+N more)`` for error messages."""
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder, replaced in one
    step: a crash or Ctrl-C never leaves a half-written file under ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --- pairs of files ------------------------------------------------------------------------------


class DataError(ValueError):
    """A bad data folder, split file, image pair or output folder; the message names it."""


def read_split(path: str | os.PathLike) -> list[str]:
    """Stems listed in ``path``: one per line; ``#`` comments and blank lines ignored."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"split file {path}: no such file")
    stems: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.split("#", 1)[0].strip()
            if s:
                stems.append(s)
    if not stems:
        raise DataError(f"split file {path}: lists no stems")
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise DataError(f"split file {path}: duplicate stems {format_list(dup)}")
    return stems


def _list(folder: str, what: str) -> dict[str, str]:
    try:
        return list_images(folder)
    except ImageError as e:
        raise DataError(f"{what}: {e}") from None


def match_pairs(ir_dir: str, vis_dir: str, stems: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
    """``{stem: (ir_path, vis_path)}`` of the images of two folders paired by file stem, sorted;
    all of ``stems`` when given, else all pairs (DataError when the folders do not pair up)."""
    ir, vis = _list(ir_dir, "--ir_dir"), _list(vis_dir, "--vis_dir")
    if stems is None:
        only_ir, only_vis = sorted(set(ir) - set(vis)), sorted(set(vis) - set(ir))
        if only_ir or only_vis:
            raise DataError(
                "ir and vis folders do not pair up by stem: "
                + "; ".join(f"only in {d}: {format_list(s)}" for d, s in ((ir_dir, only_ir), (vis_dir, only_vis)) if s)
                + " (use --split to pick stems)"
            )
        stems = sorted(ir)
    missing = [(d, [s for s in stems if s not in m]) for d, m in ((ir_dir, ir), (vis_dir, vis))]
    missing = [(d, s) for d, s in missing if s]
    if missing:
        raise DataError("; ".join(f"{d} lacks {len(s)} image(s) of the split: {format_list(s)}" for d, s in missing))
    if not stems:
        raise DataError(f"no images found in {ir_dir}")
    return {s: (ir[s], vis[s]) for s in sorted(stems)}


def prepare_out_dir(path: str | os.PathLike, flag: str = "--out_dir") -> str:
    """Creates the output folder ``path`` if needed and checks that files can be written in it,
    before anything is computed; DataError (naming ``flag`` and the path) when it is a file,
    cannot be created or is not writable. Returns the path."""
    path = os.fspath(path)
    if not path:
        raise DataError(f"{flag}: empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"{flag} {path}: is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise DataError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise DataError(f"{flag} {path}: folder is not writable ({e.strerror or e})") from None
    return path


def has_colour(img: np.ndarray) -> bool:
    """RGB(A) whose colour channels are not all equal (gray stored as RGB is gray)."""
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        return False
    return not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]))


def read_pair(ir_path: str, vis_path: str, *, color: bool = True, warp=None, stem: str = ""):
    """An IR/visible pair of files as ``fuse`` takes it: the IR image gray (:func:`to_gray`: dtype
    kept, gray stored as RGB exact); the visible image as read when ``color`` and it has colour
    (:func:`has_colour`; ``fuse`` takes its luma, or its colour with ``color=True``), else gray.
    ``warp(vis, ir_hw)``: applied to the visible image first (registration onto the IR grid). DataError
    naming both files when their sizes differ."""
    ir = to_gray(read_image(ir_path), name=os.fspath(ir_path))
    vis = read_image(vis_path)
    if warp is not None:
        vis = warp(vis, ir.shape[:2])
    if not (color and has_colour(vis)):
        vis = to_gray(vis, name=os.fspath(vis_path))
    if ir.shape[:2] != vis.shape[:2]:
        stem = stem or os.path.splitext(os.path.basename(ir_path))[0]
        raise DataError(
            f"{stem}: ir {ir_path} is {ir.shape[0]}x{ir.shape[1]} but vis {vis_path} is "
            f"{vis.shape[0]}x{vis.shape[1]} (H x W)"
        )
    return ir, vis
