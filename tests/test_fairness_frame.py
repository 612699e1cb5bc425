"""GroupFrame summaries and per-group intervals against fairlearn, scipy and statsmodels."""

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from scipy import stats
from sklearn.metrics import accuracy_score
from statsmodels.stats.proportion import proportion_confint

from fairness.frame import GroupFrame, encode_groups
from fairness.intervals import bootstrap_mean_interval, finite_values, wilson_interval

NAMES = ["White", "Black", "East Asian", "Indian"]


def _mean_of_predictions(y_true, y_pred):
    return float(np.mean(y_pred))


@pytest.fixture
def psnr_data():
    rng = np.random.default_rng(7)
    sizes = [40, 25, 60, 33]
    groups = np.repeat(NAMES, sizes)
    offsets = np.repeat([0.0, -1.5, 0.4, -0.7], sizes)
    values = rng.normal(31.0, 2.0, groups.size) + offsets
    return values, groups


def test_frame_matches_fairlearn_means(psnr_data):
    values, groups = psnr_data
    frame = GroupFrame(values, groups)
    reference = MetricFrame(
        metrics=_mean_of_predictions,
        y_true=np.zeros_like(values),
        y_pred=values,
        sensitive_features=groups,
    )

    expected = reference.by_group.sort_index()
    assert list(frame.by_group.index) == list(expected.index)
    np.testing.assert_allclose(frame.by_group.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert frame.difference() == pytest.approx(reference.difference(), rel=1e-12)
    assert frame.ratio() == pytest.approx(reference.ratio(), rel=1e-12)
    assert frame.group_min() == pytest.approx(reference.group_min(), rel=1e-12)
    assert frame.group_max() == pytest.approx(reference.group_max(), rel=1e-12)
    assert frame.overall == pytest.approx(reference.overall, rel=1e-12)


def test_frame_matches_fairlearn_accuracy():
    rng = np.random.default_rng(3)
    groups = rng.choice(NAMES, size=300)
    y_true = rng.integers(0, 2, size=300)
    flip = rng.random(300) < np.select(
        [groups == "Black", groups == "Indian"], [0.35, 0.2], default=0.1
    )
    y_pred = np.where(flip, 1 - y_true, y_true)
    correct = (y_pred == y_true).astype(float)

    frame = GroupFrame(correct, groups, kind="proportion")
    reference = MetricFrame(
        metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups
    )

    expected = reference.by_group.sort_index()
    np.testing.assert_allclose(frame.by_group.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert frame.difference() == pytest.approx(reference.difference(), rel=1e-12)
    assert frame.ratio() == pytest.approx(reference.ratio(), rel=1e-12)
    assert frame.group_min() == pytest.approx(reference.group_min(), rel=1e-12)
    assert frame.group_max() == pytest.approx(reference.group_max(), rel=1e-12)
    assert frame.worst_group == expected.idxmin()
    assert frame.best_group == expected.idxmax()


def test_frame_follows_group_names_order(psnr_data):
    values, groups = psnr_data
    frame = GroupFrame(values, groups, group_names=NAMES)

    assert list(frame.by_group.index) == NAMES
    assert list(frame.n) == [40, 25, 60, 33]
    assert frame.by_group["Black"] == pytest.approx(values[groups == "Black"].mean())


def test_frame_integer_groups_index_names():
    frame = GroupFrame([1.0, 2.0, 3.0, 5.0], [0, 0, 2, 2], group_names=["a", "b", "c"])

    assert frame.n.to_dict() == {"a": 2, "b": 0, "c": 2}
    assert frame.by_group["a"] == 1.5
    assert frame.by_group["c"] == 4.0
    assert np.isnan(frame.by_group["b"])


def test_frame_integer_names_are_labels():
    codes, names = encode_groups([3, 3, 7], group_names=[7, 3])

    assert names == [7, 3]
    assert codes.tolist() == [1, 1, 0]


def test_frame_rejects_unknown_label():
    with pytest.raises(ValueError, match=r"not in group_names: \['Martian'\]"):
        GroupFrame([1.0, 2.0], ["White", "Martian"], group_names=NAMES)


def test_frame_rejects_index_out_of_range():
    with pytest.raises(ValueError, match="group index 4 at position 1 is out of range"):
        GroupFrame([1.0, 2.0], [0, 4], group_names=NAMES)


def test_frame_rejects_nan_with_count_and_position():
    values = [30.0, 31.0, 29.0, np.nan, 28.0, np.nan]
    with pytest.raises(ValueError, match="2 non-finite entries") as error:
        GroupFrame(values, ["A"] * 6)
    assert "position 3" in str(error.value)


def test_frame_rejects_missing_group_label():
    with pytest.raises(ValueError, match="1 missing labels"):
        GroupFrame([1.0, 2.0], ["A", None])


def test_frame_rejects_length_mismatch():
    with pytest.raises(ValueError, match="values has 3 entries but groups has 2"):
        GroupFrame([1.0, 2.0, 3.0], ["A", "B"])


def test_frame_proportion_rejects_non_binary():
    with pytest.raises(ValueError, match='kind="proportion" needs 0/1 values, got 0.5'):
        GroupFrame([1.0, 0.5], ["A", "B"], kind="proportion")


def test_frame_empty_group_kept_but_not_in_gap():
    frame = GroupFrame([0.9, 0.8, 0.5, 0.7], ["A", "A", "B", "B"], group_names=["A", "B", "C"])

    assert list(frame.by_group.index) == ["A", "B", "C"]
    assert frame.n["C"] == 0
    assert np.isnan(frame.by_group["C"])
    assert frame.difference() == pytest.approx(0.85 - 0.6)
    assert frame.ratio() == pytest.approx(0.6 / 0.85)
    assert frame.worst_group == "B"
    assert frame.best_group == "A"

    table = frame.intervals()
    assert table.loc["C", "n"] == 0
    assert np.isnan(table.loc["C", "ci_low"])
    assert np.isnan(table.loc["C", "ci_high"])


def test_frame_single_image_group_has_nan_interval():
    frame = GroupFrame([30.0, 31.0, 33.0, 25.0], ["A", "A", "A", "B"])
    table = frame.intervals(n_resamples=200)

    assert table.loc["B", "value"] == 25.0
    assert table.loc["B", "n"] == 1
    assert np.isnan(table.loc["B", "ci_low"])
    assert np.isnan(table.loc["B", "ci_high"])
    assert table.loc["A", "ci_low"] < 31.33 < table.loc["A", "ci_high"]

    proportion = GroupFrame([1.0, 0.0, 1.0], ["A", "A", "B"], kind="proportion")
    wilson_table = proportion.intervals()
    assert np.isnan(wilson_table.loc["B", "ci_low"])
    assert wilson_table.loc["A", "ci_low"] > 0.0


def test_frame_no_images_at_all():
    frame = GroupFrame([], [], group_names=["A", "B"])

    assert frame.n.tolist() == [0, 0]
    assert np.isnan(frame.overall)
    assert np.isnan(frame.difference())
    assert np.isnan(frame.ratio())
    assert frame.worst_group is None


def test_frame_constant_capped_psnr():
    # Identical reconstructions give PSNR capped at 100 dB in every group.
    frame = GroupFrame(np.full(12, 100.0), ["A", "B", "C"] * 4)
    table = frame.intervals(n_resamples=200)

    assert frame.difference() == 0.0
    assert frame.ratio() == 1.0
    assert frame.worst_group == "A"
    assert table["ci_low"].tolist() == [100.0, 100.0, 100.0]
    assert table["ci_high"].tolist() == [100.0, 100.0, 100.0]


def test_frame_all_zero_ratio_is_nan():
    frame = GroupFrame(np.zeros(6), ["A", "B"] * 3, kind="proportion")

    assert frame.difference() == 0.0
    assert np.isnan(frame.ratio())
    table = frame.intervals()
    assert table["ci_low"].tolist() == [0.0, 0.0]
    assert table["ci_high"].tolist() == pytest.approx([0.5615, 0.5615], abs=1e-4)


def test_frame_direction_picks_worst_group(psnr_data):
    values, groups = psnr_data
    higher = GroupFrame(values, groups, higher_is_better=True)
    lower = GroupFrame(values, groups, higher_is_better=False)

    assert higher.worst_group == higher.by_group.idxmin()
    assert higher.best_group == higher.by_group.idxmax()
    assert lower.worst_group == higher.best_group
    assert lower.best_group == higher.worst_group


def test_frame_summary_reports_gap_and_counts(psnr_data):
    values, groups = psnr_data
    frame = GroupFrame(values, groups, group_names=NAMES + ["Middle Eastern"])
    summary = frame.summary()

    assert summary["gap"] == pytest.approx(frame.difference())
    assert summary["ratio"] == pytest.approx(frame.ratio())
    assert summary["worst_group"] == "Black"
    assert summary["n"]["Middle Eastern"] == 0


def test_finite_values_rejects_inf():
    with pytest.raises(ValueError, match="1 non-finite entries"):
        finite_values([1.0, np.inf])


def test_wilson_matches_statsmodels_and_scipy():
    cases = [(0, 10), (1, 10), (5, 10), (10, 10), (37, 150), (149, 150), (3, 7)]
    for confidence in (0.9, 0.95, 0.99):
        for successes, n in cases:
            low, high = wilson_interval(successes, n, confidence)
            sm_low, sm_high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
            scipy_ci = stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")
            assert low == pytest.approx(sm_low, abs=1e-12)
            assert high == pytest.approx(sm_high, abs=1e-12)
            assert low == pytest.approx(scipy_ci.low, abs=1e-12)
            assert high == pytest.approx(scipy_ci.high, abs=1e-12)


def test_wilson_exact_coverage_grid():
    # Exact coverage: the binomial probability of the counts whose interval contains p.
    def coverage(n, p):
        successes = np.arange(n + 1)
        low, high = wilson_interval(successes, np.full(n + 1, n))
        return stats.binom.pmf(successes, n, p)[(low <= p) & (p <= high)].sum()

    proportions = np.arange(0.05, 0.96, 0.05)
    grid = np.array([[coverage(n, p) for p in proportions] for n in (50, 75, 100, 150, 200, 300)])

    assert grid.min() >= 0.93
    assert grid.mean() >= 0.945


def test_wilson_vectorised_and_zero_n():
    low, high = wilson_interval(np.array([0, 4, 0]), np.array([5, 8, 0]))

    assert low.shape == (3,)
    assert low[0] == 0.0
    assert np.isnan(low[2])
    assert np.isnan(high[2])
    assert low[1] < 0.5 < high[1]


def test_wilson_rejects_successes_above_n():
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(6, 5)


def test_bootstrap_interval_equals_scipy_same_seed():
    values = np.random.default_rng(11).gamma(2.0, 3.0, size=45)
    for method in ("BCa", "percentile", "basic"):
        ours = bootstrap_mean_interval(values, confidence=0.9, n_resamples=999, seed=5, method=method)
        reference = stats.bootstrap(
            (values,),
            np.mean,
            n_resamples=999,
            confidence_level=0.9,
            method=method,
            rng=np.random.default_rng(5),
        ).confidence_interval
        assert ours[0] == pytest.approx(reference.low, rel=1e-12)
        assert ours[1] == pytest.approx(reference.high, rel=1e-12)


def test_frame_intervals_equal_scipy_per_group(psnr_data):
    values, groups = psnr_data
    frame = GroupFrame(values, groups, group_names=NAMES)
    table = frame.intervals(confidence=0.95, n_resamples=500, seed=2)
    seeds = np.random.SeedSequence(2).spawn(len(NAMES))

    assert table.attrs["method"] == "bootstrap-BCa"
    for name, group_seed in zip(NAMES, seeds):
        reference = stats.bootstrap(
            (values[groups == name],), np.mean, n_resamples=500, rng=np.random.default_rng(group_seed)
        ).confidence_interval
        assert table.loc[name, "ci_low"] == pytest.approx(reference.low, rel=1e-12)
        assert table.loc[name, "ci_high"] == pytest.approx(reference.high, rel=1e-12)


def test_frame_intervals_proportion_are_wilson():
    correct = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=float)
    groups = ["A"] * 6 + ["B"] * 4
    table = GroupFrame(correct, groups, kind="proportion").intervals(confidence=0.9)

    assert table.attrs["method"] == "wilson"
    expected = proportion_confint([3, 3], [6, 4], alpha=0.1, method="wilson")
    np.testing.assert_allclose(table["ci_low"], expected[0], rtol=1e-12)
    np.testing.assert_allclose(table["ci_high"], expected[1], rtol=1e-12)


def test_bootstrap_interval_large_sample_is_batched():
    values = np.random.default_rng(4).normal(30.0, 2.0, size=3000)
    low, high = bootstrap_mean_interval(values, n_resamples=1000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)

    assert low == pytest.approx(values.mean() - half_width, abs=0.02)
    assert high == pytest.approx(values.mean() + half_width, abs=0.02)


def test_bootstrap_interval_two_values_falls_back():
    low, high = bootstrap_mean_interval([0.0, 1.0], n_resamples=200)

    assert low == 0.0
    assert high == 1.0


@pytest.mark.slow
def test_interval_coverage_over_simulations():
    # 1000 data sets, 3 groups each: Wilson for accuracy, BCa bootstrap for skewed
    # PSNR-like means. Below about 50 images the BCa coverage drops to about 92%.
    rng = np.random.default_rng(2024)
    sizes = [60, 100, 200]
    true_accuracy = [0.8, 0.55, 0.9]
    true_mean = 30.0
    groups = np.repeat(["A", "B", "C"], sizes)
    wilson_hits = np.zeros(3)
    bootstrap_hits = np.zeros(3)
    n_simulations = 1000

    for simulation in range(n_simulations):
        correct = np.concatenate(
            [rng.random(size) < p for size, p in zip(sizes, true_accuracy)]
        ).astype(float)
        wilson = GroupFrame(correct, groups, kind="proportion").intervals()
        wilson_hits += (wilson["ci_low"] <= true_accuracy) & (true_accuracy <= wilson["ci_high"])

        psnr = true_mean + rng.gamma(4.0, 0.5, size=groups.size) - 2.0
        bootstrap = GroupFrame(psnr, groups).intervals(n_resamples=1000, seed=simulation)
        bootstrap_hits += (bootstrap["ci_low"] <= true_mean) & (true_mean <= bootstrap["ci_high"])

    wilson_coverage = wilson_hits / n_simulations
    bootstrap_coverage = bootstrap_hits / n_simulations
    assert np.all(wilson_coverage >= 0.93), wilson_coverage
    assert np.all(bootstrap_coverage >= 0.93), bootstrap_coverage
