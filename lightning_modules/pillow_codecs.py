"""JPEG and WebP baselines through Pillow.

Both codecs round the input to 8 bits per channel before encoding, since that is what a
real image file would contain, and count every byte of the file written by Pillow,
headers and quantisation tables included. At 64 px the headers dominate. On smooth
64 px test images (Pillow 13, libwebp 1.6), JPEG at quality 1 gave about 1.4 bpp and
WebP at quality 0 about 0.3 bpp, so the ladders below cover only the upper rates of a
learned codec's curve.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image, features
from torch import Tensor

from lightning_modules.codec_interface import Codec, check_image_batch

__all__ = [
    "JPEG_QUALITY_LADDER",
    "WEBP_QUALITY_LADDER",
    "JpegCodec",
    "PillowCodec",
    "WebPCodec",
    "decode_image_bytes",
    "tensor_to_uint8_images",
]

JPEG_QUALITY_LADDER = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
"""Pillow JPEG qualities evaluated by default, lowest rate first."""

WEBP_QUALITY_LADDER = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
"""Pillow WebP qualities evaluated by default, lowest rate first."""


def tensor_to_uint8_images(images: Tensor) -> list[np.ndarray]:
    """Round a ``[B, 3, H, W]`` batch in [0, 1] to a list of ``H x W x 3`` uint8 arrays."""
    check_image_batch(images)
    scaled = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0
    as_uint8 = scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return [array for array in as_uint8.numpy()]


def decode_image_bytes(blobs: list[bytes]) -> Tensor:
    """Decode image files with Pillow into a ``[B, 3, H, W]`` float32 batch in [0, 1]."""
    if len(blobs) == 0:
        raise ValueError("blobs is empty; pass at least one bitstream to decode.")

    decoded = []
    for index, blob in enumerate(blobs):
        with Image.open(io.BytesIO(blob)) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if decoded and rgb.shape != decoded[0].shape:
            raise ValueError(
                f"Bitstream {index} decodes to {rgb.shape[:2]}, but bitstream 0 to "
                f"{decoded[0].shape[:2]}; decode images of different sizes separately."
            )
        decoded.append(rgb)

    batch = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return batch.to(torch.float32) / 255.0


class PillowCodec(Codec):
    """A codec that writes one image file per image with ``PIL.Image.save``.

    Parameters
    ----------
    name : str
        Display name.
    image_format : str
        Pillow format name, for example ``"JPEG"``.
    quality : int
        Pillow's quality setting, stored as the rate point.
    save_options : dict
        Extra keyword arguments to ``Image.save``. ``settings`` records them together
        with the format and quality, for reports.
    """

    def __init__(
        self, name: str, image_format: str, quality: int, save_options: dict[str, Any]
    ) -> None:
        self.name = name
        self.image_format = image_format
        self.quality = int(quality)
        self.rate_point = {"quality": self.quality}
        self.save_options = dict(save_options)
        self.settings = {"format": image_format, "quality": self.quality, **self.save_options}

    def compress(self, images: Tensor) -> list[bytes]:
        blobs = []
        for array in tensor_to_uint8_images(images):
            buffer = io.BytesIO()
            Image.fromarray(array).save(
                buffer, format=self.image_format, quality=self.quality, **self.save_options
            )
            blobs.append(buffer.getvalue())
        return blobs

    def decompress(self, blobs: list[bytes]) -> Tensor:
        return decode_image_bytes(blobs)


class JpegCodec(PillowCodec):
    """Baseline JPEG through Pillow (libjpeg or libjpeg-turbo).

    Settings: 4:2:0 chroma subsampling, Pillow's standard quantisation tables scaled by
    ``quality``, no Huffman table optimisation and no progressive mode, so the file is
    what a default ``Image.save(..., quality=q)`` writes.

    Parameters
    ----------
    quality : int
        1 (lowest rate) to 100.
    """

    def __init__(self, quality: int) -> None:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}.")
        super().__init__(
            name="jpeg",
            image_format="JPEG",
            quality=quality,
            save_options={"subsampling": "4:2:0", "optimize": False, "progressive": False},
        )


class WebPCodec(PillowCodec):
    """Lossy WebP through Pillow and libwebp.

    Settings: lossy mode, which always codes chroma at 4:2:0, and ``method=6``, libwebp's
    slowest and strongest search, so the baseline is as good as WebP gets at each
    quality.

    Parameters
    ----------
    quality : int
        0 (lowest rate) to 100.
    """

    def __init__(self, quality: int) -> None:
        if not 0 <= int(quality) <= 100:
            raise ValueError(f"WebP quality must be in 0..100, got {quality}.")
        if not features.check("webp"):
            raise RuntimeError(
                "This Pillow build has no WebP support; install a Pillow wheel from PyPI, "
                "which bundles libwebp."
            )
        super().__init__(
            name="webp",
            image_format="WEBP",
            quality=quality,
            save_options={"lossless": False, "method": 6},
        )
