"""Per-image distortion and rate metrics: PSNR, MS-SSIM and bits per pixel.

Every function returns one value per image, so callers can group, pair and bootstrap
the values. Images are float tensors ``[B, 3, H, W]`` in [0, 1]. This module uses only
torch and torchmetrics, so it imports without Lightning.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

__all__ = [
    "MS_SSIM_BETAS",
    "MS_SSIM_KERNEL_SIZE",
    "MS_SSIM_MIN_SIZE",
    "PSNR_MAX_DB",
    "bpp_from_bits",
    "ms_ssim_betas",
    "ms_ssim_per_image",
    "ms_ssim_scales",
    "psnr_per_image",
]

PSNR_MAX_DB = 100.0
"""Cap for PSNR in dB, so identical images give a finite value."""

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Scale weights of Wang, Simoncelli and Bovik (2003), finest scale first."""

MS_SSIM_KERNEL_SIZE = 11
"""Side of the Gaussian window (sigma 1.5), the torchmetrics default."""

MS_SSIM_MIN_SIZE = 12
"""Smallest image side in pixels that gets two scales, the fewest this module computes."""


def _check_pair(x: Tensor, x_hat: Tensor) -> None:
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {tuple(x.shape)} and "
            f"{tuple(x_hat.shape)}."
        )
    if x.ndim != 4:
        raise ValueError(f"Expected images of shape [B, C, H, W], got {tuple(x.shape)}.")


def psnr_per_image(x: Tensor, x_hat: Tensor, max_db: float = PSNR_MAX_DB) -> Tensor:
    """Compute the PSNR in dB of each image, ``10 log10(1 / MSE)`` on the [0, 1] range.

    Parameters
    ----------
    x, x_hat : Tensor
        Original and reconstruction, ``[B, C, H, W]`` in [0, 1].
    max_db : float
        Cap in dB. Identical images, whose MSE is 0, get exactly this value.

    Returns
    -------
    Tensor
        ``[B]`` float32, PSNR in dB.
    """
    _check_pair(x, x_hat)

    # float64 keeps the MSE of near-identical images from rounding to 0 too early.
    diff = x.detach().to(torch.float64) - x_hat.detach().to(torch.float64)
    mse = diff.pow(2).flatten(1).mean(dim=1)

    min_mse = 10.0 ** (-max_db / 10.0)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(min_mse))
    return psnr.to(torch.float32)


def ms_ssim_scales(size: int | tuple[int, int]) -> int:
    """Return the number of MS-SSIM scales used for images of this size.

    The rule takes as many of the five standard scales as torchmetrics 1.9 accepts for
    an 11 px Gaussian window. torchmetrics requires ``side >= 2**n`` and
    ``side // max(1, n - 1)**2 > 10``. Its reflect padding also needs the coarsest
    scale, ``side // 2**(n - 1)``, to be larger than 5 px. This gives 2 scales from
    12 px, 3 from 44 px, 4 from 99 px and all 5 from 176 px (64 px faces get 3).

    Parameters
    ----------
    size : int or (int, int)
        Image side in pixels, or ``(height, width)``; the smaller side decides.

    Returns
    -------
    int
        Number of scales, 2 to 5.

    Raises
    ------
    ValueError
        If the smaller side is below ``MS_SSIM_MIN_SIZE`` (12 px).
    """
    side = min(size) if isinstance(size, (tuple, list)) else int(size)
    half_window = (MS_SSIM_KERNEL_SIZE - 1) // 2

    scales = 0
    for n in range(1, len(MS_SSIM_BETAS) + 1):
        fits_pyramid = side >= 2**n
        fits_torchmetrics_check = side // max(1, n - 1) ** 2 > MS_SSIM_KERNEL_SIZE - 1
        fits_reflect_padding = side // 2 ** (n - 1) > half_window
        if fits_pyramid and fits_torchmetrics_check and fits_reflect_padding:
            scales = n

    if side < MS_SSIM_MIN_SIZE or scales < 2:
        raise ValueError(
            f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIZE} px per side for two "
            f"scales, got {size}. Resize the images or report SSIM instead."
        )
    return scales


def ms_ssim_betas(scales: int) -> tuple[float, ...]:
    """Return the first ``scales`` standard betas, renormalised to sum to 1.

    Truncating drops the coarsest scales, which small images do not have. Renormalising
    keeps the exponents summing to 1, so MS-SSIM stays on the same [0, 1] scale.
    """
    if not 1 <= scales <= len(MS_SSIM_BETAS):
        raise ValueError(f"scales must be in 1..{len(MS_SSIM_BETAS)}, got {scales}.")
    kept = MS_SSIM_BETAS[:scales]
    total = sum(kept)
    return tuple(beta / total for beta in kept)


def ms_ssim_per_image(
    x: Tensor,
    x_hat: Tensor,
    data_range: float = 1.0,
    scales: int | None = None,
) -> Tensor:
    """Compute the MS-SSIM of each image with torchmetrics.

    Parameters
    ----------
    x, x_hat : Tensor
        Original and reconstruction, ``[B, C, H, W]``.
    data_range : float
        Value range of the images, 1.0 for [0, 1].
    scales : int, optional
        Number of scales. The default, ``ms_ssim_scales((H, W))``, is the most that
        fit the image. The betas are ``ms_ssim_betas(scales)``.

    Returns
    -------
    Tensor
        ``[B]`` MS-SSIM, higher is better. Differentiable, so it can serve as a loss.
    """
    _check_pair(x, x_hat)
    if scales is None:
        scales = ms_ssim_scales((x.shape[-2], x.shape[-1]))

    return multiscale_structural_similarity_index_measure(
        x_hat,
        x,
        kernel_size=MS_SSIM_KERNEL_SIZE,
        data_range=data_range,
        betas=ms_ssim_betas(scales),
        reduction="none",
    )


def bpp_from_bits(bits: Tensor | float, height: int, width: int) -> Tensor:
    """Convert bits per image into bits per pixel of an ``height x width`` image.

    Parameters
    ----------
    bits : Tensor or float
        Bits per image, for example 8 x the bytes of each bitstream.
    height, width : int
        Size of the unpadded image in pixels.

    Returns
    -------
    Tensor
        Bits per pixel, float64, same shape as ``bits``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height} x {width}.")
    bits = torch.as_tensor(bits, dtype=torch.float64)
    return bits / float(height * width)
