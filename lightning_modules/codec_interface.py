"""The interface that every codec under evaluation implements.

A codec turns a batch of images into one self-contained bitstream per image and back.
The bitstream length is the rate, so ``bpp`` counts every byte that a decoder needs,
headers included. Codecs serve evaluation only, and training goes through
``CodecModule``.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor

__all__ = ["Codec", "check_image_batch"]

# Values this far outside [0, 1] are treated as caller errors, smaller excursions as
# float noise from resizing or normalisation.
_RANGE_TOLERANCE = 1e-4


def check_image_batch(images: Tensor) -> None:
    """Raise ValueError unless ``images`` is a float ``[B, 3, H, W]`` batch in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must have shape [B, 3, H, W] (RGB), got {tuple(images.shape)}."
        )
    if not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor in [0, 1], got dtype {images.dtype}. "
            "Divide uint8 images by 255 first."
        )
    if images.numel() == 0:
        return
    low = float(images.min())
    high = float(images.max())
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"images must be in [0, 1], got values in [{low:.4f}, {high:.4f}]. "
            "Undo any mean/std normalisation before coding."
        )


class Codec(abc.ABC):
    """An image codec: images to one bitstream per image, and back.

    Attributes
    ----------
    name : str
        Display name, for example ``"jpeg"`` or ``"bmshj2018-hyperprior"``.
    rate_point : dict
        The setting that selects the rate, for example ``{"quality": 3}`` or
        ``{"lmbda": 0.0018}``.
    """

    name: str
    rate_point: dict[str, Any]

    @abc.abstractmethod
    def compress(self, images: Tensor) -> list[bytes]:
        """Encode a batch into one self-contained bitstream per image.

        Parameters
        ----------
        images : Tensor
            ``[B, 3, H, W]`` float in [0, 1], RGB.

        Returns
        -------
        list of bytes
            One bitstream per image, including any header that records the shape, so
            ``decompress`` needs nothing else.
        """

    @abc.abstractmethod
    def decompress(self, blobs: list[bytes]) -> Tensor:
        """Decode bitstreams written by ``compress``.

        All bitstreams must decode to the same height and width, because the result is
        one batch tensor.

        Returns
        -------
        Tensor
            ``x_hat``, ``[B, 3, H, W]`` float32 in [0, 1] at the original size, on the
            codec's device (the CPU for Pillow codecs).
        """

    @staticmethod
    def bits_per_pixel(blob: bytes, height: int, width: int) -> float:
        """Return the rate of one bitstream, ``8 * len(blob) / (height * width)``.

        ``height`` and ``width`` are those of the unpadded image.
        """
        if height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive, got {height} x {width}.")
        return 8.0 * len(blob) / float(height * width)

    def round_trip(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Compress and decompress a batch.

        Returns
        -------
        x_hat : Tensor
            ``[B, 3, H, W]`` decoded images.
        bits : Tensor
            ``[B]`` float64, 8 x the bytes of each bitstream.
        """
        blobs = self.compress(images)
        x_hat = self.decompress(blobs)
        bits = torch.tensor([8.0 * len(blob) for blob in blobs], dtype=torch.float64)
        return x_hat, bits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, rate_point={self.rate_point!r})"
