"""Train / val / test partitions that depend only on ``data.eval_seed``.

Every run on a dataset is scored on the same val and test images, whatever its ``seed``
or training split kind, so runs can be paired image by image.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PARTITIONS = ("train", "val", "test", "unused")


def _shuffled(index: pd.Index, sample_ids: pd.Series, seed: int, group_position: int) -> list:
    """Return ``index`` in a random order fixed by (seed, group), independent of row order."""
    ordered = sample_ids.loc[index].sort_values(kind="stable").index
    rng = np.random.default_rng([seed, group_position])
    return list(ordered[rng.permutation(len(ordered))])


def assign_partitions(
    samples: pd.DataFrame,
    group_names: list[str],
    *,
    eval_seed: int = 0,
    eval_fraction: float = 0.1,
) -> pd.Series:
    """Return the partition of every row of ``samples`` (aligned to its index).

    With an official evaluation pool (rows whose ``pool`` is ``eval``), each group's
    evaluation rows are split in halves into val and test. Without one (``pool`` ``all``),
    ``eval_fraction`` of the smallest group's count is carved out of every group for val
    and again for test. Val and test are then group-balanced by downsampling every group to
    the smallest group's count; the rows removed that way become ``unused``.
    """
    pools = set(samples["pool"])
    if "all" in pools and pools != {"all"}:
        raise ValueError("a sample table mixes pool 'all' with official pools; use one or the other")
    partition = pd.Series("train", index=samples.index, dtype=object)
    sample_ids = samples["sample_id"]

    val_rows: dict[str, list] = {}
    test_rows: dict[str, list] = {}
    if pools == {"all"}:
        counts = samples["group"].value_counts()
        present = [g for g in group_names if counts.get(g, 0) > 0]
        smallest = min(counts[g] for g in present)
        per_group = int(round(smallest * eval_fraction))
        if per_group < 1:
            raise ValueError(
                f"cannot carve val/test out of groups this small: the smallest group has "
                f"{smallest} images, and data.eval_fraction={eval_fraction} of it is below 1"
            )
        for position, group in enumerate(group_names):
            rows = samples.index[samples["group"] == group]
            if len(rows) == 0:
                continue
            order = _shuffled(rows, sample_ids, eval_seed, position)
            val_rows[group] = order[:per_group]
            test_rows[group] = order[per_group : 2 * per_group]
    else:
        partition.loc[samples["pool"] == "eval"] = "unused"
        for position, group in enumerate(group_names):
            rows = samples.index[(samples["pool"] == "eval") & (samples["group"] == group)]
            order = _shuffled(rows, sample_ids, eval_seed, position)
            half = (len(order) + 1) // 2
            val_rows[group] = order[:half]
            test_rows[group] = order[half:]

    for name, chosen in (("val", val_rows), ("test", test_rows)):
        empty = [g for g in group_names if len(chosen.get(g, [])) == 0]
        if empty and len(empty) < len(group_names):
            raise ValueError(
                f"the {name} partition would have no image of group(s) {empty}; every group "
                "needs evaluation images (check the labels or the group scheme)"
            )
        keep = min((len(v) for v in chosen.values()), default=0)
        for rows in chosen.values():
            partition.loc[rows[:keep]] = name
    return partition
