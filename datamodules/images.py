"""Image decoding and the face crop: every image becomes float32 RGB in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (L, LA, P, RGBA, CMYK, I;16, I, F) to 8-bit RGB.

    Transparent pixels are composited on white, because a face crop saved with an alpha
    channel usually has a transparent background, and black would add a dark border.
    16-bit and float images are scaled to 8 bits by their value range.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        gray = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def center_crop_resize(image: Image.Image, face_crop: float, size: int) -> Image.Image:
    """Keep the central ``face_crop`` fraction of the shorter side, then resize to ``size``.

    FairFace's padding-1.25 release pads each detected face generously, so keeping about
    half the side makes the face fill the frame, as in its padding-0.25 release.
    """
    if not 0.0 < face_crop <= 1.0:
        raise ValueError(f"data.face_crop must be in (0, 1], got {face_crop}")
    if size < 8:
        raise ValueError(f"data.image_size must be at least 8 pixels, got {size}")
    width, height = image.size
    side = min(width, height) * face_crop
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    box = (round(left), round(top), round(left + side), round(top + side))
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """Return a float32 ``[3, H, W]`` tensor in [0, 1] from an RGB PIL image."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def open_image(path: Path) -> Image.Image:
    """Decode ``path`` fully and return it as RGB.

    ``Image.open`` is lazy, so ``load()`` runs here to surface truncated files at
    preparation time rather than inside a worker during training.
    """
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)
