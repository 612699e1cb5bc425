"""Matched-bpp interpolation and Bjontegaard deltas against the bjontegaard package."""

import logging

import bjontegaard
import numpy as np
import pytest

from fairness.rate_matching import (
    bd_metric,
    bd_rate,
    common_bpp_points,
    interpolate_at_bpp,
    matched_by_group,
    matched_difference,
    per_group_bd_rate,
)

# Rate-distortion points shaped like a learned codec on 64 px faces: PSNR in dB.
ANCHOR_BPP = np.array([0.08, 0.15, 0.3, 0.6, 1.1])
ANCHOR_PSNR = np.array([24.1, 26.3, 28.9, 31.6, 34.0])
TEST_BPP = np.array([0.07, 0.14, 0.26, 0.55, 1.2])
TEST_PSNR = np.array([24.6, 27.0, 29.4, 32.3, 35.1])


def test_interpolation_is_linear_in_log_bpp():
    bpp = np.array([0.1, 0.4, 0.2, 1.6])
    values = 30.0 + 3.0 * np.log(bpp)
    targets = np.array([0.1, 0.13, 0.3, 0.9, 1.6])

    np.testing.assert_allclose(interpolate_at_bpp(bpp, values, targets), 30.0 + 3.0 * np.log(targets))


def test_interpolation_nan_outside_range():
    result = interpolate_at_bpp([0.2, 0.5, 1.0], [28.0, 31.0, 33.0], [0.1, 0.2, 1.0, 1.5])

    assert np.isnan(result[0])
    assert result[1] == 28.0
    assert result[2] == 33.0
    assert np.isnan(result[3])


def test_interpolation_between_two_points():
    # Halfway in log(bpp) between 0.25 and 1.0 is 0.5.
    assert interpolate_at_bpp([0.25, 1.0], [20.0, 30.0], 0.5)[0] == pytest.approx(25.0)


def test_interpolation_averages_equal_bpp():
    result = interpolate_at_bpp([0.5, 0.5, 1.0], [28.0, 30.0, 33.0], [0.5])

    assert result[0] == pytest.approx(29.0)


def test_interpolation_rejects_bad_input():
    with pytest.raises(ValueError, match="bpp must be positive"):
        interpolate_at_bpp([0.0, 1.0], [1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="values contains 1 non-finite"):
        interpolate_at_bpp([0.5, 1.0], [1.0, np.nan], [0.5])
    with pytest.raises(ValueError, match="bpp has 2 points but values has 3"):
        interpolate_at_bpp([0.5, 1.0], [1.0, 2.0, 3.0], [0.5])


def test_common_points_inside_overlap():
    curves = {"A": [0.1, 0.3, 0.9], "B": ([0.2, 0.6, 1.2], [1.0, 2.0, 3.0]), "C": [0.05, 0.5, 0.8]}
    points = common_bpp_points(curves, n_points=4)

    assert points[0] == 0.2
    assert points[-1] == 0.8
    assert np.all(np.diff(points) > 0)
    np.testing.assert_allclose(np.diff(np.log(points)), np.log(4.0) / 3)
    for bpp in curves.values():
        bpp = bpp[0] if isinstance(bpp, tuple) else bpp
        assert not np.isnan(interpolate_at_bpp(bpp, np.arange(3.0), points)).any()


def test_common_points_reject_disjoint_curves():
    with pytest.raises(ValueError, match="share no bpp range"):
        common_bpp_points({"jpeg": [1.4, 2.0, 3.0], "learned": [0.05, 0.2, 0.8]})


def test_matched_difference_of_shifted_curve():
    table = matched_difference(ANCHOR_BPP, ANCHOR_PSNR, ANCHOR_BPP, ANCHOR_PSNR + 0.5, n_points=6)

    assert list(table.columns) == ["bpp", "anchor", "test", "difference"]
    np.testing.assert_allclose(table["difference"], 0.5)
    assert table["bpp"].iloc[0] == ANCHOR_BPP.min()


def test_matched_by_group_gap():
    curves = {
        "White": (ANCHOR_BPP, ANCHOR_PSNR),
        "Black": (ANCHOR_BPP * 1.1, ANCHOR_PSNR - 1.0),
    }
    table = matched_by_group(curves, n_points=3)
    gap = table.max(axis=1) - table.min(axis=1)

    assert list(table.columns) == ["White", "Black"]
    assert table.index[0] == pytest.approx(0.088)
    assert not table.isna().any().any()
    assert np.all(gap > 1.0)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_matches_bjontegaard(method):
    ours = bd_rate(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR, method=method)
    reference = bjontegaard.bd_rate(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR, method=method)

    assert ours == pytest.approx(reference, abs=0.1)
    assert ours < 0


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_metric_matches_bjontegaard(method):
    ours = bd_metric(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR, method=method)
    reference = bjontegaard.bd_psnr(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR, method=method)

    assert ours == pytest.approx(reference, abs=1e-3)
    assert ours > 0


def test_bd_rate_lower_is_better_metric_matches_bjontegaard():
    lpips = np.array([0.42, 0.33, 0.24, 0.16, 0.1])
    ours = bd_rate(ANCHOR_BPP, lpips, TEST_BPP, lpips - 0.02)
    # The package accepts only metrics that rise with rate, so give it -LPIPS: the
    # average log-rate difference over the metric range is the same.
    reference = bjontegaard.bd_rate(ANCHOR_BPP, -lpips, TEST_BPP, -(lpips - 0.02), method="pchip", min_overlap=0)

    assert ours == pytest.approx(reference, abs=0.1)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_self_is_zero(method):
    assert bd_rate(ANCHOR_BPP, ANCHOR_PSNR, ANCHOR_BPP, ANCHOR_PSNR, method=method) == pytest.approx(0.0, abs=1e-9)
    assert bd_metric(ANCHOR_BPP, ANCHOR_PSNR, ANCHOR_BPP, ANCHOR_PSNR, method=method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_scaled_rates(method):
    assert bd_rate(ANCHOR_BPP, ANCHOR_PSNR, 0.9 * ANCHOR_BPP, ANCHOR_PSNR, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(ANCHOR_BPP, ANCHOR_PSNR, 1.25 * ANCHOR_BPP, ANCHOR_PSNR, method=method) == pytest.approx(25.0, abs=1e-9)


def test_bd_rate_unsorted_points():
    order = np.array([3, 0, 4, 1, 2])
    shuffled = bd_rate(ANCHOR_BPP[order], ANCHOR_PSNR[order], TEST_BPP, TEST_PSNR)

    assert shuffled == pytest.approx(bd_rate(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR), rel=1e-12)


def test_bd_rate_without_overlap_is_nan(caplog):
    with caplog.at_level(logging.WARNING, logger="fairness.rate_matching"):
        result = bd_rate(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR + 20.0)

    assert np.isnan(result)
    assert "do not overlap" in caplog.text


def test_bd_rate_cubic_needs_four_points():
    with pytest.raises(ValueError, match="at least 4 rate points"):
        bd_rate(ANCHOR_BPP[:3], ANCHOR_PSNR[:3], TEST_BPP[:3], TEST_PSNR[:3], method="cubic")
    with pytest.raises(ValueError, match="method must be 'pchip' or 'cubic'"):
        bd_rate(ANCHOR_BPP, ANCHOR_PSNR, TEST_BPP, TEST_PSNR, method="akima")


def test_per_group_bd_rate_gap_and_worst():
    anchor = {name: (ANCHOR_BPP, ANCHOR_PSNR) for name in ["White", "Black", "Indian"]}
    test = {
        "White": (0.8 * ANCHOR_BPP, ANCHOR_PSNR),
        "Black": (0.95 * ANCHOR_BPP, ANCHOR_PSNR),
        "Indian": (0.9 * ANCHOR_BPP, ANCHOR_PSNR),
    }
    result = per_group_bd_rate(anchor, test)

    np.testing.assert_allclose(result.by_group.to_numpy(), [-20.0, -5.0, -10.0], atol=1e-9)
    assert result.gap == pytest.approx(15.0)
    assert result.worst_group == "Black"
    assert result.best_group == "White"


def test_per_group_bd_rate_matches_bjontegaard_per_group():
    rng = np.random.default_rng(0)
    anchor, test = {}, {}
    for name in ["A", "B", "C"]:
        shift = rng.normal(0.0, 0.5)
        anchor[name] = (ANCHOR_BPP, ANCHOR_PSNR + shift)
        test[name] = (TEST_BPP, TEST_PSNR + shift + rng.normal(0.0, 0.3))
    result = per_group_bd_rate(anchor, test, method="pchip")

    for name in ["A", "B", "C"]:
        reference = bjontegaard.bd_rate(*anchor[name], *test[name], method="pchip", min_overlap=0)
        assert result.by_group[name] == pytest.approx(reference, abs=0.1)


def test_per_group_bd_rate_missing_group():
    with pytest.raises(ValueError, match=r"groups \['B'\] lack a curve"):
        per_group_bd_rate({"A": (ANCHOR_BPP, ANCHOR_PSNR), "B": (ANCHOR_BPP, ANCHOR_PSNR)},
                          {"A": (TEST_BPP, TEST_PSNR)})
