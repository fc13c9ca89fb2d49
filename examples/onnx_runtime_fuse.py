"""Fuse one IR/visible pair with an exported ONNX generator: numpy + onnxruntime + imageio, no JAX.

    python -m patchfuse_jax export --format=onnx --out=model.onnx     # once, where JAX is installed
    python examples/onnx_runtime_fuse.py model.onnx ir.png vis.png fused.png [--color]

Does what ``patchfuse_jax.fuse(params, ir, vis, color=...)`` does (docs/onnx.md): gray inputs
(RGB -> BT.601 luma, gray stored as RGB taken as gray) scaled to [0, 1] (uint8 /255, uint16
/65535), reflect-padded at the bottom/right to a multiple of the model's ``pad_multiple``
(its metadata; ``2**num_downs``), run, cropped back; with ``--color`` and a colour visible
image, the visible Cb/Cr (full-range BT.601, as JPEG) are put back around the fused Y.
Writes an 8-bit PNG. Importable: ``fuse_arrays(session, ir, vis, color=...)``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

BT601 = np.array([0.299, 0.587, 0.114])


def to_unit(img: np.ndarray, name: str) -> np.ndarray:
    """uint8/uint16/float image -> float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if img.dtype.kind == "f" and 0.0 <= img.min() and img.max() <= 1.0:
        return img.astype(np.float32)
    raise ValueError(f"{name}: unsupported dtype {img.dtype} or float values outside [0, 1]")


def gray(img: np.ndarray) -> np.ndarray:
    """``(H, W)`` / ``(H, W, C)`` -> ``(H, W)`` in the input's dtype: alpha dropped, gray stored
    as RGB kept exactly, RGB -> BT.601 luma (rounded for integer images)."""
    if img.ndim == 2:
        return img
    if img.shape[-1] in (2, 4):
        img = img[..., :-1]
    if img.shape[-1] == 1 or (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])):
        return img[..., 0]
    y = img.astype(np.float64) @ BT601
    if img.dtype.kind in "ui":
        return np.clip(np.round(y), 0, np.iinfo(img.dtype).max).astype(img.dtype)
    return y.astype(img.dtype)


def cbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] ``(H, W, 3)`` -> full-range BT.601 ``(Cb, Cr)`` in [-0.5, 0.5], ``(H, W, 2)``."""
    rgb = rgb.astype(np.float64)
    y = rgb @ BT601
    return np.stack([(rgb[..., 2] - y) / (2 * (1 - BT601[2])), (rgb[..., 0] - y) / (2 * (1 - BT601[0]))], -1)


def ycbcr_to_rgb(y: np.ndarray, cb_cr: np.ndarray) -> np.ndarray:
    """Y ``(H, W)`` + Cb/Cr ``(H, W, 2)`` -> RGB ``(H, W, 3)`` float32, clipped to [0, 1]."""
    y = y.astype(np.float64)
    r = y + 2 * (1 - BT601[0]) * cb_cr[..., 1]
    b = y + 2 * (1 - BT601[2]) * cb_cr[..., 0]
    g = (y - BT601[0] * r - BT601[2] * b) / BT601[1]
    return np.clip(np.stack([r, g, b], -1), 0.0, 1.0).astype(np.float32)


def fuse_arrays(session, ir: np.ndarray, vis: np.ndarray, color: bool = False) -> np.ndarray:
    """One pair (any layout/dtype above) -> fused float32 ``(H, W)`` in [0, 1], or ``(H, W, 3)``
    with ``color`` and a colour visible image."""
    m = int(session.get_modelmeta().custom_metadata_map["pad_multiple"])
    a, b = to_unit(gray(ir), "ir"), to_unit(gray(vis), "vis")
    if a.shape != b.shape:
        raise ValueError(f"ir {a.shape} and vis {b.shape} differ in size (align them first)")
    h, w = a.shape
    x = np.stack([a, b])[None]  # (1, 2, H, W)
    x = np.pad(x, ((0, 0), (0, 0), (0, (-h) % m), (0, (-w) % m)), mode="reflect")
    y = session.run(["fused"], {"ir_vis": x})[0][0, 0, :h, :w]  # (H, W) in [0, 1]
    if color and vis.ndim == 3 and vis.shape[-1] in (3, 4):
        return ycbcr_to_rgb(y, cbcr(to_unit(vis[..., :3], "vis")))
    return y


def main(argv=None) -> int:
    import imageio.v3 as iio
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model"), p.add_argument("ir"), p.add_argument("vis"), p.add_argument("out")
    p.add_argument("--color", action="store_true", help="RGB output for a colour visible image")
    args = p.parse_args(argv)
    try:
        session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        if "pad_multiple" not in session.get_modelmeta().custom_metadata_map:
            raise ValueError("not a patchfuse_jax ONNX export (no pad_multiple in its metadata)")
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        print(f"{args.model}: cannot use this ONNX model ({' '.join(str(e).split())[:200]})", file=sys.stderr)
        return 1
    fused = fuse_arrays(session, np.asarray(iio.imread(args.ir)), np.asarray(iio.imread(args.vis)), args.color)
    iio.imwrite(args.out, np.round(fused * 255).astype(np.uint8))
    print(f"wrote {args.out} {fused.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
