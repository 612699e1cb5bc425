import numpy as np
import pandas as pd
import pytest

from datamodules.groups import FAIRFACE7, identifier, resolve_group_key
from datamodules.partitions import assign_partitions
from datamodules.splits import (
    SplitRequestError,
    draw_training_split,
    largest_remainder_counts,
    split_counts,
)

GROUPS = ["A", "B", "C"]


def test_largest_remainder_sums_to_total():
    for total in range(0, 50):
        counts = largest_remainder_counts(total, [0.5, 0.3, 0.2])
        assert sum(counts) == total
        assert all(abs(c - total * p) < 1 for c, p in zip(counts, [0.5, 0.3, 0.2]))


def test_largest_remainder_ties_go_to_first_group():
    # 10 / 3 = 3.33 each: one leftover unit goes to the first group.
    assert largest_remainder_counts(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]
    assert largest_remainder_counts(5, [0.5, 0.5]) == [3, 2]


def test_balanced_default_is_smallest_group():
    counts = split_counts({"A": 10, "B": 7, "C": 12}, GROUPS, "balanced")
    assert counts == {"A": 7, "B": 7, "C": 7}


def test_balanced_total_divides_by_groups():
    counts = split_counts({"A": 10, "B": 7, "C": 12}, GROUPS, "balanced", total=20)
    assert counts == {"A": 6, "B": 6, "C": 6}


def test_balanced_rejects_both_per_group_and_total():
    with pytest.raises(SplitRequestError, match="not both"):
        split_counts({"A": 10, "B": 7, "C": 12}, GROUPS, "balanced", per_group=2, total=6)


def test_imbalanced_counts_and_default_total():
    avail = {"A": 100, "B": 10, "C": 10}
    shares = {"A": 0.8, "B": 0.1, "C": 0.1}
    assert split_counts(avail, GROUPS, "imbalanced", proportions=shares, total=50) == {"A": 40, "B": 5, "C": 5}
    # The largest supported total: B and C cap it at 10 / 0.1 = 100, and A needs 80 <= 100.
    assert split_counts(avail, GROUPS, "imbalanced", proportions=shares) == {"A": 80, "B": 10, "C": 10}


def test_imbalanced_default_total_respects_rounding():
    avail = {"A": 3, "B": 3, "C": 3}
    counts = split_counts(avail, GROUPS, "imbalanced", proportions={"A": 0.5, "B": 0.25, "C": 0.25})
    assert counts["A"] <= 3
    assert sum(counts.values()) == 6


def test_request_above_pool_names_group_and_counts():
    with pytest.raises(SplitRequestError) as error:
        split_counts({"A": 67, "B": 70, "C": 70}, GROUPS, "imbalanced",
                     proportions={"A": 0.7, "B": 0.15, "C": 0.15}, total=200)
    message = str(error.value)
    assert "group A" in message
    assert "140" in message
    assert "67" in message


def test_proportions_must_cover_groups_and_sum_to_one():
    with pytest.raises(SplitRequestError, match="lacks group"):
        split_counts({"A": 5, "B": 5, "C": 5}, GROUPS, "imbalanced", proportions={"A": 0.5, "B": 0.5})
    with pytest.raises(SplitRequestError, match="sum to"):
        split_counts({"A": 5, "B": 5, "C": 5}, GROUPS, "imbalanced",
                     proportions={"A": 0.5, "B": 0.5, "C": 0.5})


def test_unknown_kind_lists_kinds():
    with pytest.raises(SplitRequestError, match="balanced"):
        split_counts({"A": 1}, ["A"], "stratified")


def test_identifier_aliases_resolve():
    assert identifier("East Asian") == "East_Asian"
    assert resolve_group_key("East_Asian", FAIRFACE7) == "East Asian"
    assert resolve_group_key("Southeast Asian", FAIRFACE7) == "Southeast Asian"
    with pytest.raises(KeyError, match="Latino_Hispanic"):
        resolve_group_key("Hispanic", FAIRFACE7)


def _pool(n_per_group: dict[str, int]) -> pd.DataFrame:
    rows = [{"sample_id": f"{g}/{i}", "group": g} for g, n in n_per_group.items() for i in range(n)]
    return pd.DataFrame(rows)


def test_draw_is_reproducible_and_seed_dependent():
    pool = _pool({"A": 30, "B": 30, "C": 30})
    counts = {"A": 10, "B": 5, "C": 1}
    first = draw_training_split(pool, counts, GROUPS, seed=3)
    again = draw_training_split(pool.sample(frac=1.0, random_state=1), counts, GROUPS, seed=3)
    other = draw_training_split(pool, counts, GROUPS, seed=4)
    assert sorted(first) == sorted(again)
    assert sorted(first) != sorted(other)
    drawn = pool.loc[first, "group"].value_counts().to_dict()
    assert drawn == counts


def test_partitions_from_official_eval_pool_are_balanced_halves():
    train = _pool({"A": 20, "B": 20, "C": 20}).assign(pool="train")
    evaluation = _pool({"A": 9, "B": 12, "C": 10}).assign(pool="eval")
    evaluation["sample_id"] = "val/" + evaluation["sample_id"]
    samples = pd.concat([train, evaluation], ignore_index=True)
    partition = assign_partitions(samples, GROUPS, eval_seed=0)
    table = samples.assign(partition=partition)
    val = table[table.partition == "val"].group.value_counts()
    test = table[table.partition == "test"].group.value_counts()
    # A has 9 eval images: halves of 5 and 4, so every group keeps 5 in val and 4 in test.
    assert val.to_dict() == {"A": 5, "B": 5, "C": 5}
    assert test.to_dict() == {"A": 4, "B": 4, "C": 4}
    assert (table.loc[table.pool == "train", "partition"] == "train").all()
    assert set(table.loc[table.partition == "unused", "pool"]) == {"eval"}


def test_partitions_depend_only_on_eval_seed():
    samples = _pool({"A": 40, "B": 50, "C": 60}).assign(pool="all")
    first = assign_partitions(samples, GROUPS, eval_seed=0, eval_fraction=0.1)
    shuffled = samples.sample(frac=1.0, random_state=7)
    again = assign_partitions(shuffled, GROUPS, eval_seed=0, eval_fraction=0.1).loc[samples.index]
    other = assign_partitions(samples, GROUPS, eval_seed=1, eval_fraction=0.1)
    assert (first == again).all()
    assert not (first == other).all()
    counts = samples.assign(p=first).groupby(["p", "group"]).size()
    assert counts["val"].tolist() == [4, 4, 4]
    assert counts["test"].tolist() == [4, 4, 4]


def test_partitions_reject_group_without_eval_images():
    train = _pool({"A": 5, "B": 5}).assign(pool="train")
    evaluation = _pool({"A": 4}).assign(pool="eval")
    evaluation["sample_id"] = "val/" + evaluation["sample_id"]
    samples = pd.concat([train, evaluation], ignore_index=True)
    with pytest.raises(ValueError, match=r"\['B'\]"):
        assign_partitions(samples, ["A", "B"], eval_seed=0)
