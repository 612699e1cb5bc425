"""Attribute fidelity per group: hand-computed cases and sklearn's balanced accuracy."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from fairness.attribute_metrics import (
    METRICS,
    attribute_fidelity,
    attribute_group_frame,
    classifier_bias,
    compression_bias,
    metric_gap,
    per_image_outcomes,
)
from fairness.hypothesis import paired_gap_test

# Seven images in two groups. Image 3 has an unknown label (-1).
GROUPS = ["A", "A", "A", "A", "B", "B", "B"]
LABELS = [0, 1, 1, -1, 0, 0, 1]
PRED_ORIG = [0, 1, 0, 1, 0, 0, 1]
PRED_REC = [0, 0, 0, 1, 1, 1, 1]

# By hand. Group A is correct on originals 1,1,0 and on reconstructions 1,0,0, and its
# predictions stay unchanged on images 0, 2 and 3. Group B is correct on originals
# 1,1,1 and on reconstructions 0,0,1, and only image 6 keeps its prediction.
EXPECTED = {
    ("A", "acc_orig"): (2 / 3, 3),
    ("A", "acc_rec"): (1 / 3, 3),
    ("A", "agreement"): (3 / 4, 4),
    ("A", "retention"): (1 / 2, 2),
    ("A", "degradation"): (1 / 3, 3),
    ("A", "bal_acc_orig"): ((1.0 + 0.5) / 2, 3),
    ("A", "bal_acc_rec"): ((1.0 + 0.0) / 2, 3),
    ("B", "acc_orig"): (1.0, 3),
    ("B", "acc_rec"): (1 / 3, 3),
    ("B", "agreement"): (1 / 3, 3),
    ("B", "retention"): (1 / 3, 3),
    ("B", "degradation"): (2 / 3, 3),
    ("B", "bal_acc_orig"): (1.0, 3),
    ("B", "bal_acc_rec"): ((0.0 + 1.0) / 2, 3),
}


@pytest.fixture
def table():
    return attribute_fidelity(LABELS, PRED_ORIG, PRED_REC, GROUPS, ["A", "B", "C"], n_resamples=200)


def test_fidelity_hand_computed_values(table):
    indexed = table.set_index(["group", "metric"])
    for (group, metric), (value, n) in EXPECTED.items():
        assert indexed.loc[(group, metric), "value"] == pytest.approx(value), (group, metric)
        assert indexed.loc[(group, metric), "n"] == n, (group, metric)


def test_fidelity_tidy_layout(table):
    assert list(table.columns) == ["group", "metric", "value", "n", "ci_low", "ci_high"]
    assert table["group"].tolist() == ["A"] * 7 + ["B"] * 7 + ["C"] * 7
    assert table["metric"].tolist() == list(METRICS) * 3
    assert table["n"].dtype == np.int64


def test_fidelity_empty_group_is_nan(table):
    empty = table[table["group"] == "C"]

    assert empty["value"].isna().all()
    assert (empty["n"] == 0).all()


def test_fidelity_named_biases(table):
    assert classifier_bias(table) == pytest.approx(1 / 3)
    assert compression_bias(table) == pytest.approx(1 / 3)
    degradation = metric_gap(table, "degradation")
    assert degradation["worst_group"] == "B"
    assert degradation["best_group"] == "A"
    assert degradation["ratio"] == pytest.approx(0.5)
    assert metric_gap(table, "agreement")["worst_group"] == "B"


def test_fidelity_intervals_wilson_for_accuracy(table):
    from statsmodels.stats.proportion import proportion_confint

    row = table.set_index(["group", "metric"]).loc[("A", "agreement")]
    low, high = proportion_confint(3, 4, method="wilson")

    assert row["ci_low"] == pytest.approx(low)
    assert row["ci_high"] == pytest.approx(high)


def test_fidelity_overall_rows():
    table = attribute_fidelity(LABELS, PRED_ORIG, PRED_REC, GROUPS, include_overall=True, intervals=False)
    overall = table[table["group"] == "all"].set_index("metric")

    assert overall.loc["acc_orig", "value"] == pytest.approx(5 / 6)
    assert overall.loc["acc_orig", "n"] == 6
    assert overall.loc["agreement", "n"] == 7
    assert overall.loc["bal_acc_orig", "value"] == pytest.approx(
        balanced_accuracy_score([0, 1, 1, 0, 0, 1], [0, 1, 0, 0, 0, 1])
    )
    assert classifier_bias(table) == pytest.approx(1 / 3)


def test_balanced_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    n = 600
    groups = rng.choice(["White", "Black", "Indian"], size=n)
    # A skewed 4-class attribute with about 15% unknown labels.
    labels = rng.choice([0, 1, 2, 3, -1], size=n, p=[0.55, 0.2, 0.07, 0.03, 0.15])
    pred_orig = np.where(rng.random(n) < 0.75, labels, rng.integers(0, 4, n)).clip(0)
    pred_rec = np.where(rng.random(n) < 0.85, pred_orig, rng.integers(0, 4, n))
    table = attribute_fidelity(labels, pred_orig, pred_rec, groups, intervals=False).set_index(["group", "metric"])

    for group in ["White", "Black", "Indian"]:
        keep = (groups == group) & (labels != -1)
        expected_orig = balanced_accuracy_score(labels[keep], pred_orig[keep])
        expected_rec = balanced_accuracy_score(labels[keep], pred_rec[keep])
        assert table.loc[(group, "bal_acc_orig"), "value"] == pytest.approx(expected_orig, rel=1e-12)
        assert table.loc[(group, "bal_acc_rec"), "value"] == pytest.approx(expected_rec, rel=1e-12)
        assert table.loc[(group, "bal_acc_rec"), "n"] == keep.sum()
        assert table.loc[(group, "agreement"), "n"] == (groups == group).sum()


def test_per_image_outcomes_columns():
    outcomes = per_image_outcomes(LABELS, PRED_ORIG, PRED_REC)

    assert outcomes["labelled"].tolist() == [True, True, True, False, True, True, True]
    assert np.isnan(outcomes.loc[3, "correct_orig"])
    assert outcomes.loc[3, "agreement"] == 1.0
    assert outcomes["degradation"].tolist()[:3] == [0.0, 1.0, 0.0]
    assert np.isnan(outcomes.loc[2, "retained"])
    assert outcomes.loc[1, "retained"] == 0.0


def test_per_image_means_equal_table(table):
    outcomes = per_image_outcomes(LABELS, PRED_ORIG, PRED_REC)
    outcomes["group"] = GROUPS
    indexed = table.set_index(["group", "metric"])
    columns = {
        "acc_orig": "correct_orig",
        "acc_rec": "correct_rec",
        "agreement": "agreement",
        "retention": "retained",
        "degradation": "degradation",
    }
    for metric, column in columns.items():
        means = outcomes.groupby("group")[column].mean()
        for group in ["A", "B"]:
            assert indexed.loc[(group, metric), "value"] == pytest.approx(means[group])


def test_group_frame_kinds_and_directions():
    accuracy = attribute_group_frame("acc_rec", LABELS, PRED_ORIG, PRED_REC, GROUPS)
    degradation = attribute_group_frame("degradation", LABELS, PRED_ORIG, PRED_REC, GROUPS)

    assert accuracy.kind == "proportion"
    assert accuracy.n.to_dict() == {"A": 3, "B": 3}
    assert degradation.kind == "mean"
    assert not degradation.higher_is_better
    assert degradation.worst_group == "B"
    with pytest.raises(ValueError, match="for a per-image frame"):
        attribute_group_frame("bal_acc_rec", LABELS, PRED_ORIG, PRED_REC, GROUPS)


def test_integer_group_labels_not_confused_with_codes():
    # Group labels 5 and 9: codes 0 and 1 must not be read as labels.
    groups = [5, 5, 5, 5, 9, 9, 9]
    table = attribute_fidelity(LABELS, PRED_ORIG, PRED_REC, groups, intervals=False).set_index(["group", "metric"])

    assert table.loc[(9, "acc_orig"), "value"] == pytest.approx(1.0)
    assert table.loc[(5, "agreement"), "n"] == 4


def test_compression_bias_paired_test_uses_outcomes():
    rng = np.random.default_rng(3)
    n = 400
    groups = np.repeat(["A", "B"], n // 2)
    labels = rng.integers(0, 2, n)
    pred_orig = np.where(rng.random(n) < 0.9, labels, 1 - labels)
    # Compression flips 30% of group B's predictions and 2% of group A's.
    flip = rng.random(n) < np.where(groups == "B", 0.3, 0.02)
    pred_rec = np.where(flip, 1 - pred_orig, pred_orig)
    outcomes = per_image_outcomes(labels, pred_orig, pred_rec)
    result = paired_gap_test(outcomes["correct_orig"], outcomes["correct_rec"], groups, n_resamples=999)
    table = attribute_fidelity(labels, pred_orig, pred_rec, groups, intervals=False)

    assert result.statistic == pytest.approx(compression_bias(table))
    assert result.p_value == pytest.approx(1 / 1000)


def test_fidelity_rejects_bad_labels():
    with pytest.raises(ValueError, match="-1 for unknown, got -2"):
        attribute_fidelity([0, -2], [0, 1], [0, 1], ["A", "B"])
    with pytest.raises(ValueError, match="one entry per image, got 2, 2 and 3"):
        attribute_fidelity([0, 1], [0, 1], [0, 1, 1], ["A", "B"])
    with pytest.raises(ValueError, match="integer class indices"):
        attribute_fidelity([0.5, 1.0], [0, 1], [0, 1], ["A", "B"])


def test_fidelity_returns_dataframe_for_empty_input():
    table = attribute_fidelity([], [], [], [], ["A"], intervals=False)

    assert isinstance(table, pd.DataFrame)
    assert table["value"].isna().all()
    assert (table["n"] == 0).all()
