"""Dose response on synthetic faces: blurring one group must show up in the statistics.

Every face goes through the same "codec" (8 levels per channel, 3 bits per sample).
Faces of one group are also blurred before quantisation, with a growing Gaussian sigma.
The gap in PSNR must grow with the blur, and the paired test against the unblurred run
must reach its p-value floor.
"""

import numpy as np
import pytest
from scipy import ndimage, stats

from datamodules.synthetic_faces import SyntheticFaces
from fairness.frame import GroupFrame
from fairness.hypothesis import paired_gap_test

FACES_PER_GROUP = 40
SIZE = 32
SIGMAS = [0.0, 0.4, 0.7, 1.0, 1.5, 2.0, 3.0]
N_RESAMPLES = 999


def _psnr(original: np.ndarray, reconstruction: np.ndarray) -> float:
    # PSNR in dB of images in [0, 1], capped at 100 dB for identical images.
    mse = float(np.mean((original - reconstruction) ** 2))
    if mse == 0.0:
        return 100.0
    return min(100.0, 10.0 * np.log10(1.0 / mse))


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.round(image * 7.0) / 7.0


@pytest.fixture(scope="module")
def faces():
    pool = SyntheticFaces(seed=0)
    count = FACES_PER_GROUP * len(pool.group_names)
    images = [pool.render(index, size=SIZE).astype(np.float64) / 255.0 for index in range(count)]
    groups = np.array([pool.labels(index)[0] for index in range(count)])
    return images, groups, pool.group_names


def _psnr_with_blur(images, groups, target: str, sigma: float) -> np.ndarray:
    values = []
    for image, group in zip(images, groups):
        source = image
        if group == target and sigma > 0:
            source = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0.0), mode="reflect")
        values.append(_psnr(image, _quantise(source)))
    return np.array(values)


def test_blur_dose_response_gap_and_p_value(faces):
    images, groups, names = faces
    baseline = _psnr_with_blur(images, groups, target="", sigma=0.0)

    # Blur the group that is already worst, so that more blur widens the gap.
    target = GroupFrame(baseline, groups, group_names=names).worst_group
    gaps = []
    p_values = []
    for sigma in SIGMAS:
        blurred = _psnr_with_blur(images, groups, target, sigma)
        gaps.append(GroupFrame(blurred, groups, group_names=names).difference())
        p_values.append(paired_gap_test(baseline, blurred, groups, group_names=names,
                                        n_resamples=N_RESAMPLES, seed=1).p_value)

    rho = stats.spearmanr(SIGMAS, gaps).statistic
    floor = 1.0 / (N_RESAMPLES + 1)
    assert rho > 0.9, gaps
    assert gaps[-1] > gaps[0] + 3.0, gaps
    assert p_values[0] == 1.0
    assert p_values[-1] == pytest.approx(floor)
    assert p_values[3] == pytest.approx(floor)
