"""Image decoding and the face crop: every image becomes float32 RGB in [0, 1]."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageLoadError(ValueError):
    """An image file is missing, empty, truncated or not decodable.

    The message names the file and what to do; :func:`datamodules.image_check.check_images`
    catches it to apply ``data.on_bad_image``.
    """


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (1, L, LA, P, PA, RGBA, CMYK, YCbCr, I;16, I, F) to 8-bit RGB.

    Transparent pixels are composited on white, because a face crop saved with an alpha
    channel usually has a transparent background, and black would add a dark border.
    16-bit images are scaled by 1/257 (65535 -> 255). Mode ``I`` (32-bit int) is read as
    8-bit when its maximum is at most 255, as 16-bit up to 65535, and by its maximum
    above that. Mode ``F`` is read as [0, 1] when its maximum is at most 1, and by its
    maximum otherwise.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES + ("I", "F"):
        return _scale_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        # Pillow 13 cannot convert premultiplied La straight to RGBA, only through LA.
        rgba = image.convert("RGBA") if image.mode != "La" else image.convert("LA").convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    peak = float(array.max()) if array.size else 0.0
    if image.mode in _SIXTEEN_BIT_MODES:
        high = 65535.0
    elif image.mode == "I" and peak <= 255:
        high = 255.0
    elif image.mode == "I" and peak <= 65535:
        high = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        high = 1.0
    else:
        high = peak
    gray = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


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
    """Decode ``path`` fully, apply its EXIF orientation and return it as RGB.

    ``Image.open`` is lazy, so ``load()`` runs here to surface truncated files at
    preparation time rather than inside a worker during training.

    Raises
    ------
    ImageLoadError
        If the file is missing, a symlink loop, empty, truncated or not an image; the
        message names the file.
    """
    path = Path(path)
    hint = "replace the file, remove its label row, or set data.on_bad_image=skip to leave it out"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}; {hint}") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ImageLoadError(f"image path {path} is a symlink loop; fix or remove the link") from None
        raise ImageLoadError(f"cannot read image file {path}: {error}; {hint}") from None
    if path.is_dir():
        raise ImageLoadError(f"image path {path} is a directory, not an image file")
    if size == 0:
        raise ImageLoadError(f"image file {path} is empty (0 bytes); {hint}")

    try:
        with Image.open(path) as image:
            image.load()
            # Phone photos store rotation as an EXIF tag; aligned face crops carry none.
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright)
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"image file {path} is too large to decode safely: {error}") from None
    except OSError as error:
        # Pillow reports a cut-off file as "image file is truncated" and an unknown
        # format as UnidentifiedImageError; both are OSError subclasses or instances.
        if "truncated" in str(error).lower():
            raise ImageLoadError(f"image file {path} is truncated ({error}); {hint}") from None
        raise ImageLoadError(f"cannot decode image file {path} ({size} bytes): {error}; {hint}") from None
    except (ValueError, SyntaxError) as error:
        # Some Pillow plugins raise these for malformed headers.
        raise ImageLoadError(f"cannot decode image file {path} ({size} bytes): {error}; {hint}") from None
