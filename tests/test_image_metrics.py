"""Per-image PSNR, MS-SSIM and bpp against numpy and torchmetrics references."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

from fairness.image_metrics import (
    MS_SSIM_BETAS,
    MS_SSIM_MIN_SIZE,
    PSNR_MAX_DB,
    bpp_from_bits,
    ms_ssim_betas,
    ms_ssim_per_image,
    ms_ssim_scales,
    psnr_per_image,
)



def _noisy_pair(batch: int, size: int, noise: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=generator)
    x_hat = (x + noise * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    return x, x_hat


def test_psnr_matches_numpy_reference():
    x, x_hat = _noisy_pair(batch=4, size=32, noise=0.05)

    psnr = psnr_per_image(x, x_hat)

    x_np = x.numpy().astype(np.float64)
    x_hat_np = x_hat.numpy().astype(np.float64)
    for index in range(4):
        mse = np.mean((x_np[index] - x_hat_np[index]) ** 2)
        expected = 10.0 * math.log10(1.0 / mse)
        assert psnr[index].item() == pytest.approx(expected, abs=1e-4)


def test_psnr_identical_images_capped():
    x, _ = _noisy_pair(batch=2, size=16, noise=0.0)

    psnr = psnr_per_image(x, x.clone())

    assert torch.all(torch.isfinite(psnr))
    assert psnr.tolist() == pytest.approx([PSNR_MAX_DB, PSNR_MAX_DB])


def test_psnr_one_image_identical_other_not():
    x, x_hat = _noisy_pair(batch=2, size=16, noise=0.1)
    x_hat[0] = x[0]

    psnr = psnr_per_image(x, x_hat)

    assert psnr[0].item() == pytest.approx(PSNR_MAX_DB)
    assert psnr[1].item() < 40.0


def test_psnr_shape_mismatch_raises():
    x, x_hat = _noisy_pair(batch=2, size=16, noise=0.1)
    with pytest.raises(ValueError, match="same shape"):
        psnr_per_image(x, x_hat[:, :, :8])


@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_matches_torchmetrics_class(size):
    x, x_hat = _noisy_pair(batch=3, size=size, noise=0.08)
    scales = ms_ssim_scales(size)

    per_image = ms_ssim_per_image(x, x_hat)

    assert per_image.shape == (3,)
    for index in range(3):
        metric = MultiScaleStructuralSimilarityIndexMeasure(
            data_range=1.0, betas=ms_ssim_betas(scales)
        )
        metric.update(x_hat[index : index + 1], x[index : index + 1])
        assert per_image[index].item() == pytest.approx(metric.compute().item(), abs=1e-6)


def test_ms_ssim_orders_by_noise():
    x, slightly_noisy = _noisy_pair(batch=2, size=64, noise=0.02)
    _, very_noisy = _noisy_pair(batch=2, size=64, noise=0.2)

    assert torch.all(ms_ssim_per_image(x, slightly_noisy) > ms_ssim_per_image(x, very_noisy))
    assert ms_ssim_per_image(x, x.clone()).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


@pytest.mark.parametrize("size", [12, 32, 43, 44, 64, 98, 99, 128, 175, 176, 256])
def test_ms_ssim_scales_is_max_torchmetrics_accepts(size):
    x, x_hat = _noisy_pair(batch=1, size=size, noise=0.05)
    scales = ms_ssim_scales(size)

    # The chosen number of scales runs in torchmetrics...
    value = multiscale_structural_similarity_index_measure(
        x_hat, x, data_range=1.0, betas=ms_ssim_betas(scales), reduction="none"
    )
    assert torch.isfinite(value).all()

    # ...and one more scale is rejected or fails.
    if scales < len(MS_SSIM_BETAS):
        with pytest.raises((ValueError, RuntimeError)):
            multiscale_structural_similarity_index_measure(
                x_hat, x, data_range=1.0, betas=MS_SSIM_BETAS[: scales + 1], reduction="none"
            )


def test_ms_ssim_scales_at_face_sizes():
    assert ms_ssim_scales(64) == 3
    assert ms_ssim_scales(128) == 4
    assert ms_ssim_scales((64, 200)) == 3


def test_ms_ssim_too_small_raises():
    with pytest.raises(ValueError, match=f"at least {MS_SSIM_MIN_SIZE} px"):
        ms_ssim_scales(MS_SSIM_MIN_SIZE - 1)
    x, x_hat = _noisy_pair(batch=1, size=8, noise=0.05)
    with pytest.raises(ValueError, match="at least"):
        ms_ssim_per_image(x, x_hat)


def test_ms_ssim_betas_renormalised():
    betas = ms_ssim_betas(3)

    assert sum(betas) == pytest.approx(1.0)
    ratio = np.array(betas) / np.array(MS_SSIM_BETAS[:3])
    assert np.allclose(ratio, ratio[0])


def test_bpp_from_bits_divides_by_pixels():
    bits = torch.tensor([4096.0, 8192.0])

    bpp = bpp_from_bits(bits, 64, 32)

    assert bpp.dtype == torch.float64
    assert bpp.tolist() == pytest.approx([4096 / 2048, 8192 / 2048])
    assert bpp_from_bits(800, 10, 10).item() == pytest.approx(8.0)
    with pytest.raises(ValueError, match="positive"):
        bpp_from_bits(bits, 0, 32)
