"""Permutation gap tests, max-T intervals, Holm and power against scipy and statsmodels."""

import itertools

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from fairness.frame import GroupFrame
from fairness.hypothesis import (
    _gap_of_means,
    paired_gap_test,
    pairwise_max_t,
    permutation_gap_test,
)
from fairness.multiple import (
    holm,
    minimum_detectable_effect,
    underpowered,
    underpowered_groups,
)

SEVEN = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]


def test_gap_test_equals_direct_scipy_call():
    rng = np.random.default_rng(0)
    groups = np.repeat(["A", "B", "C"], [30, 45, 25])
    values = rng.normal(30.0, 2.0, groups.size)
    result = permutation_gap_test(values, groups, n_resamples=999, seed=4)

    samples = [values[groups == name] for name in ["A", "B", "C"]]
    reference = stats.permutation_test(
        samples,
        lambda *s, axis: np.ptp(np.stack([np.mean(x, axis=axis) for x in s]), axis=0),
        permutation_type="independent",
        vectorized=True,
        n_resamples=999,
        alternative="greater",
        rng=np.random.default_rng(4),
    )
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    np.testing.assert_allclose(result.null_distribution, reference.null_distribution, rtol=1e-12)
    assert result.n_resamples == 999
    assert not result.exact


def test_gap_statistic_equals_frame_difference():
    rng = np.random.default_rng(1)
    groups = rng.choice(SEVEN, size=400)
    values = rng.random(400)
    result = permutation_gap_test(values, groups, group_names=SEVEN, n_resamples=99)

    assert result.statistic == pytest.approx(GroupFrame(values, groups).difference(), rel=1e-12)
    assert list(result.by_group.index) == SEVEN
    assert result.n.sum() == 400


def test_gap_test_exact_enumeration():
    # There are 6 ways to split {1,2,3,4} into two pairs, with gaps 2,1,0,0,1,2.
    result = permutation_gap_test([1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])

    assert result.exact
    assert result.n_resamples == 6
    assert result.statistic == 2.0
    assert sorted(result.null_distribution.tolist()) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert result.p_value == pytest.approx(2 / 6)


def test_gap_test_p_value_floor():
    groups = np.repeat(["A", "B"], 50)
    values = np.where(groups == "A", 1.0, 0.0)
    result = permutation_gap_test(values, groups, n_resamples=199)

    assert result.p_value == pytest.approx(1 / 200)


def test_gap_test_constant_values_p_one():
    result = permutation_gap_test(np.full(20, 100.0), ["A", "B"] * 10, n_resamples=99)

    assert result.statistic == 0.0
    assert result.p_value == 1.0


def test_gap_test_skips_empty_groups():
    rng = np.random.default_rng(2)
    values = rng.normal(size=40)
    groups = ["A", "B"] * 20
    with_empty = permutation_gap_test(values, groups, group_names=["A", "B", "C"], n_resamples=199, seed=1)
    without = permutation_gap_test(values, groups, n_resamples=199, seed=1)

    assert with_empty.p_value == without.p_value
    assert with_empty.n["C"] == 0


def test_gap_test_single_group_returns_nan():
    result = permutation_gap_test([1.0, 2.0, 3.0], ["A"] * 3, group_names=["A", "B"])

    assert np.isnan(result.statistic)
    assert np.isnan(result.p_value)
    assert result.n_resamples == 0


def test_gap_of_means_is_vectorised():
    batch = np.arange(12.0).reshape(3, 4)
    other = np.zeros((3, 2))

    np.testing.assert_allclose(_gap_of_means(batch, other, axis=-1), [1.5, 5.5, 9.5])


@pytest.mark.slow
def test_gap_test_calibrated_under_null():
    # 1000 data sets of 0/1 correctness with no group difference, 7 unequal groups.
    rng = np.random.default_rng(123)
    sizes = [20, 30, 40, 50, 60, 80, 120]
    groups = np.repeat(np.arange(7), sizes)
    rejections = 0
    for simulation in range(1000):
        correct = (rng.random(groups.size) < 0.7).astype(float)
        result = permutation_gap_test(correct, groups, group_names=SEVEN, n_resamples=200, seed=simulation)
        rejections += result.p_value <= 0.05

    assert 0.03 <= rejections / 1000 <= 0.07


@pytest.mark.slow
def test_gap_test_detects_twenty_point_drop():
    # Accuracy 0.5 in one group against 0.7 in six others, 150 images each.
    rng = np.random.default_rng(321)
    groups = np.repeat(np.arange(7), 150)
    accuracy = np.where(groups == 3, 0.5, 0.7)
    rejections = 0
    for simulation in range(1000):
        correct = (rng.random(groups.size) < accuracy).astype(float)
        result = permutation_gap_test(correct, groups, group_names=SEVEN, n_resamples=200, seed=simulation)
        rejections += result.p_value <= 0.05

    assert rejections / 1000 >= 0.90


def _content_and_codecs(extra_loss_in_b: float, seed: int):
    # Group B's faces are harder to compress (-3 dB with either codec). Codec 2 loses
    # 0.5 dB on every image, plus extra_loss_in_b on group B.
    rng = np.random.default_rng(seed)
    groups = np.repeat(["A", "B"], 120)
    content = rng.normal(32.0, 2.0, groups.size) - np.where(groups == "B", 3.0, 0.0)
    codec_1 = content + rng.normal(0.0, 0.3, groups.size)
    codec_2 = codec_1 - 0.5 - np.where(groups == "B", extra_loss_in_b, 0.0) + rng.normal(0.0, 0.3, groups.size)
    return codec_1, codec_2, groups


def test_paired_test_cancels_group_content():
    codec_1, codec_2, groups = _content_and_codecs(extra_loss_in_b=0.0, seed=5)
    unpaired = permutation_gap_test(codec_2, groups, n_resamples=999)
    paired = paired_gap_test(codec_1, codec_2, groups, n_resamples=999)

    assert unpaired.p_value == pytest.approx(1 / 1000)
    assert paired.p_value > 0.05
    assert paired.by_group["A"] == pytest.approx(0.5, abs=0.1)
    assert paired.by_group["B"] == pytest.approx(0.5, abs=0.1)


def test_paired_test_detects_codec_bias():
    codec_1, codec_2, groups = _content_and_codecs(extra_loss_in_b=0.4, seed=6)
    paired = paired_gap_test(codec_1, codec_2, groups, n_resamples=999)

    assert paired.p_value == pytest.approx(1 / 1000)
    assert paired.statistic == pytest.approx(0.4, abs=0.1)


def test_paired_test_change_is_before_minus_after():
    result = paired_gap_test([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0], ["A", "A", "B", "B"])

    assert result.by_group.to_dict() == {"A": 0.5, "B": -0.5}
    assert result.statistic == 1.0


def test_paired_test_rejects_length_mismatch():
    with pytest.raises(ValueError, match="before has 3 values but after has 2"):
        paired_gap_test([1.0, 2.0, 3.0], [1.0, 2.0], ["A", "A", "B"])


def test_paired_test_rejects_nan_in_after():
    with pytest.raises(ValueError, match="after contains 1 non-finite"):
        paired_gap_test([1.0, 2.0], [1.0, np.nan], ["A", "B"])


def test_max_t_two_groups_matches_welch():
    rng = np.random.default_rng(8)
    groups = np.repeat(["A", "B"], [300, 200])
    values = rng.normal(30.0, 2.0, 500) - np.where(groups == "B", 0.3, 0.0)
    result = pairwise_max_t(values, groups, n_resamples=4000, seed=1)
    welch = stats.ttest_ind(values[groups == "A"], values[groups == "B"], equal_var=False)
    welch_ci = welch.confidence_interval(0.95)
    row = result.table.iloc[0]

    assert result.critical_value == pytest.approx(1.97, abs=0.1)
    assert row.difference == pytest.approx(values[groups == "A"].mean() - values[groups == "B"].mean())
    assert row.ci_low == pytest.approx(welch_ci.low, abs=0.03)
    assert row.ci_high == pytest.approx(welch_ci.high, abs=0.03)
    assert row.p_adjusted == pytest.approx(welch.pvalue, abs=0.02)


def test_max_t_wider_than_single_pair():
    rng = np.random.default_rng(9)
    groups = np.repeat(SEVEN, 100)
    values = rng.normal(30.0, 2.0, groups.size)
    result = pairwise_max_t(values, groups, group_names=SEVEN, n_resamples=2000, seed=0)

    # Tukey's studentized range for 7 groups and many images: q / sqrt(2) is about 2.9.
    tukey = stats.studentized_range.ppf(0.95, 7, 693) / np.sqrt(2)
    assert len(result.table) == 21
    assert result.critical_value == pytest.approx(tukey, abs=0.15)


def test_max_t_worst_vs_best_is_gap():
    groups = np.repeat(["A", "B", "C"], 50)
    rng = np.random.default_rng(10)
    values = rng.normal(0.0, 1.0, groups.size) + np.select([groups == "A", groups == "C"], [2.0, -1.0], 0.0)
    frame = GroupFrame(values, groups)

    higher = pairwise_max_t(values, groups, higher_is_better=True, n_resamples=500)
    assert higher.worst_group == "C"
    assert higher.best_group == "A"
    assert higher.worst_vs_best["difference"] == pytest.approx(frame.difference())
    assert higher.worst_vs_best["ci_low"] > 0

    lower = pairwise_max_t(values, groups, higher_is_better=False, n_resamples=500)
    assert lower.worst_group == "A"
    assert lower.best_group == "C"
    assert lower.worst_vs_best["difference"] == pytest.approx(frame.difference())
    assert lower.worst_vs_best["ci_low"] == pytest.approx(higher.worst_vs_best["ci_low"])


def test_max_t_small_group_gets_nan_rows():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0]
    groups = ["A", "A", "A", "B", "B", "B", "C"]
    result = pairwise_max_t(values, groups, n_resamples=200)
    table = result.table.set_index(["group_a", "group_b"])

    assert np.isnan(table.loc[("A", "C"), "ci_low"])
    assert np.isnan(table.loc[("B", "C"), "p_adjusted"])
    assert np.isfinite(table.loc[("A", "B"), "ci_low"])
    assert table.loc[("A", "C"), "difference"] == -8.0


def test_max_t_constant_groups_zero_width():
    values = np.r_[np.ones(20), np.ones(20), np.zeros(20)]
    groups = np.repeat(["A", "B", "C"], 20)
    table = pairwise_max_t(values, groups, n_resamples=200).table.set_index(["group_a", "group_b"])

    assert table.loc[("A", "B"), "ci_low"] == 0.0
    assert table.loc[("A", "B"), "ci_high"] == 0.0
    assert table.loc[("A", "B"), "p_adjusted"] == 1.0
    assert table.loc[("A", "C"), "ci_low"] == 1.0
    assert table.loc[("A", "C"), "p_adjusted"] == pytest.approx(1 / 201)


def test_max_t_is_reproducible():
    rng = np.random.default_rng(11)
    values = rng.normal(size=90)
    groups = np.repeat(["A", "B", "C"], 30)
    first = pairwise_max_t(values, groups, n_resamples=300, seed=3)
    second = pairwise_max_t(values, groups, n_resamples=300, seed=3)

    assert first.critical_value == second.critical_value
    assert first.table.equals(second.table)


@pytest.mark.slow
def test_max_t_simultaneous_coverage():
    # All 21 pairwise intervals must cover the true differences at once.
    rng = np.random.default_rng(77)
    sizes = [40, 60, 80, 100, 150, 200, 300]
    groups = np.repeat(np.arange(7), sizes)
    true_means = np.array([30.0, 29.5, 31.0, 30.2, 28.8, 30.0, 29.0])
    true_differences = np.array([true_means[a] - true_means[b] for a, b in itertools.combinations(range(7), 2)])
    covered = 0
    for simulation in range(1000):
        # Skewed per-image noise with mean 0, like PSNR around a group mean.
        values = true_means[groups] + rng.gamma(4.0, 0.5, groups.size) - 2.0
        table = pairwise_max_t(values, groups, group_names=SEVEN, n_resamples=500, seed=simulation).table
        covered += np.all((table.ci_low <= true_differences) & (true_differences <= table.ci_high))

    assert covered / 1000 >= 0.93


def test_holm_equals_statsmodels():
    rng = np.random.default_rng(12)
    cases = [
        rng.random(12),
        rng.random(40) ** 4,
        np.array([0.01, 0.01, 0.04, 0.04, 0.5, 1.0]),
        np.array([0.2]),
    ]
    for p_values in cases:
        expected = multipletests(p_values, method="holm")[1]
        np.testing.assert_allclose(holm(p_values), expected, rtol=1e-12)


def test_holm_keeps_nan_out_of_family():
    p_values = [0.01, np.nan, 0.04, 0.03]
    adjusted = holm(p_values)

    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2, 3]], multipletests([0.01, 0.04, 0.03], method="holm")[1])


def test_holm_rejects_out_of_range():
    with pytest.raises(ValueError, match="must lie in"):
        holm([0.2, 1.5])


def test_mde_matches_statsmodels_power():
    n_per_group = {"White": 500, "Black": 120, "Indian": 90, "Middle Eastern": 0}
    mde = minimum_detectable_effect(n_per_group, sd=2.5)
    effect_size = NormalIndPower().solve_power(nobs1=90, ratio=120 / 90, alpha=0.05, power=0.8)

    assert mde == pytest.approx(2.5 * effect_size, rel=1e-4)


def test_mde_proportion_uses_binomial_sd():
    from_p = minimum_detectable_effect([150] * 7, p=0.7)
    from_sd = minimum_detectable_effect([150] * 7, sd=np.sqrt(0.21))

    assert from_p == pytest.approx(from_sd)
    # 2.8 * sqrt(0.21 * 2 / 150) is about 0.148: a 20-point drop is detectable.
    assert from_p == pytest.approx(0.1482, abs=1e-3)


def test_mde_needs_two_groups_and_one_spread():
    assert np.isnan(minimum_detectable_effect([100, 0], sd=1.0))
    with pytest.raises(ValueError, match="exactly one of sd"):
        minimum_detectable_effect([100, 100], sd=1.0, p=0.5)
    with pytest.raises(ValueError, match="exactly one of sd"):
        minimum_detectable_effect([100, 100])


def test_underpowered_flags_small_and_empty_groups():
    counts = {"A": 150, "B": 99, "C": 0, "D": 100}

    assert underpowered(counts)
    assert underpowered_groups(counts) == ["B", "C"]
    assert not underpowered({"A": 100, "B": 250})
    assert underpowered([120, 8], min_group_size=10)
    assert underpowered_groups([120, 8], min_group_size=10) == [1]


def test_gap_test_leaves_out_single_image_groups():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    groups = ["A", "A", "A", "B", "B", "B", "C"]
    with_single = permutation_gap_test(values, groups, n_resamples=999, seed=0)
    without = permutation_gap_test(values[:6], groups[:6], n_resamples=999, seed=0)
    assert with_single.p_value == without.p_value
    assert with_single.by_group["C"] == 1.0
