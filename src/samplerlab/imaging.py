"""Image grids: samples in [-1, 1] to one PNG, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path

__all__ = ["save_image_grid", "save_figure", "FIGURE_FORMATS"]

FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure written atomically in the format its file name says (.png, .pdf, .svg, .jpg)."""
    path = Path(path)
    fmt = FIGURE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the figure type must be one of {', '.join(FIGURE_FORMATS)}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return path


def save_image_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 1, scale: int = 1
) -> Path:
    """(B, C, H, W) images with values in [-1, 1] (clipped) tiled into a PNG; C is 1 or 3.
    ``scale`` enlarges each pixel to scale x scale (small images such as 8 x 8 digits)."""
    from PIL import Image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    b, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    pix = ((images.detach().cpu().double().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    canvas = np.zeros((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(b):
        r, q = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        canvas[y : y + h, x : x + w] = pix[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
