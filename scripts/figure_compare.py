"""docs/figures/compare.png: TNO scenes with people or vehicles, fused by Average, our model and
two published methods, each row followed by a 3x crop of the scene's warmest target.

    python scripts/figure_compare.py [--checkpoint=pretrained] [--scenes=03,17,23,33]
        [--data=../shared/data] [--out=docs/figures/compare.png]

Columns: IR | visible | Average | ours | DenseFuse | IFCNN (published outputs from
``DATA/peers/tno42``). The crop is centred on the warm target of
:func:`patchfuse_jax.eval.metrics.target.warm_target` (the connected part of the top 2 % of IR pixels
with the warmest mean). TNO is used for this picture only, never to choose anything.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from patchfuse_jax import io, load_checkpoint, pretrained  # noqa: E402
from patchfuse_jax.eval.metrics import as_metric_input, target  # noqa: E402
from patchfuse_jax.fusing.api import fuse  # noqa: E402

TILE_W, CROP_W, CROP_H, ZOOM, LABEL_H = 240, 80, 50, 3, 18
PEERS = ("DenseFuse", "IFCNN")


def warmest_target_box(ir: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a CROP_H x CROP_W box centred on the warmest target component."""
    masks = target.warm_target(ir)
    mask = masks[0] if masks is not None else ir >= np.quantile(ir, 0.98)
    lab, n = ndimage.label(mask)
    means = ndimage.mean(ir, lab, range(1, n + 1))
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    k = int(np.argmax(np.where(sizes >= 4, means, -1))) + 1  # ignore single hot pixels
    cy, cx = ndimage.center_of_mass(lab == k)
    top = int(np.clip(round(cy) - CROP_H // 2, 0, ir.shape[0] - CROP_H))
    left = int(np.clip(round(cx) - CROP_W // 2, 0, ir.shape[1] - CROP_W))
    return top, left, CROP_H, CROP_W


def _tile(img: np.ndarray, w: int) -> Image.Image:
    im = Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return im.resize((w, max(1, round(img.shape[0] * w / img.shape[1]))), Image.BILINEAR)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="pretrained")
    ap.add_argument("--scenes", default="03,17,23,33")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(REPO), "shared", "data"))
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "figures", "compare.png"))
    args = ap.parse_args()
    params = pretrained() if args.checkpoint == "pretrained" else load_checkpoint(args.checkpoint)
    names = ["IR", "visible", "Average", "ours", *PEERS]
    blocks = []
    for s in args.scenes.split(","):
        ir_raw = io.to_gray(io.read_image(os.path.join(args.data, "tno", "ir", f"{s}.png")))
        vis_raw = io.to_gray(io.read_image(os.path.join(args.data, "tno", "vis", f"{s}.png")))
        ir, vis = as_metric_input(ir_raw).astype(np.float64), as_metric_input(vis_raw).astype(np.float64)
        ours = 255.0 * np.asarray(fuse(params, ir_raw, vis_raw), np.float64)
        cols = [ir, vis, (ir + vis) / 2, ours]
        cols += [
            as_metric_input(io.read_image(os.path.join(args.data, "peers", "tno42", p, f"{s}.png"))).astype(np.float64)
            for p in PEERS
        ]
        top, left, h, w = warmest_target_box(ir)
        full = [_tile(c, TILE_W) for c in cols]
        crops = [
            Image.fromarray(np.clip(np.round(c[top : top + h, left : left + w]), 0, 255).astype(np.uint8)).resize(
                (w * ZOOM, h * ZOOM), Image.NEAREST
            )
            for c in cols
        ]
        row_h = max(t.height for t in full)
        block = Image.new("L", (len(cols) * TILE_W, row_h + CROP_H * ZOOM + 4), 255)
        for j, (t, c) in enumerate(zip(full, crops)):
            block.paste(t, (j * TILE_W, 0))
            block.paste(c, (j * TILE_W, row_h + 4))
            d = ImageDraw.Draw(block)
            sx = TILE_W / ir.shape[1]  # the crop's box on the full tile
            d.rectangle([j * TILE_W + left * sx, top * sx, j * TILE_W + (left + w) * sx, (top + h) * sx], outline=255)
        blocks.append((s, block))
    width = len(names) * TILE_W
    header = Image.new("L", (width, LABEL_H), 255)
    d = ImageDraw.Draw(header)
    for j, n in enumerate(names):
        d.text((j * TILE_W + 6, 3), n, fill=0)
    parts = [header]
    for s, b in blocks:
        lab = Image.new("L", (width, LABEL_H), 255)
        ImageDraw.Draw(lab).text((6, 3), f"TNO {s} (below: the warmest target, 3x)", fill=0)
        parts += [lab, b]
    out = Image.new("L", (width, sum(p.height for p in parts)), 255)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    out.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
