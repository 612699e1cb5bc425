"""Train / val / test partitions that depend only on ``data.eval_seed``.

Every run on a dataset is scored on the same val and test images, whatever its ``seed``
or training split kind, so runs can be paired image by image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PARTITIONS = ("train", "val", "test", "unused")


def assign_partitions(
    samples: pd.DataFrame,
    group_names: list[str],
    *,
    eval_seed: int = 0,
    eval_fraction: float = 0.1,
    identity_column: str | None = None,
    eval_per_group: int | None = None,
) -> pd.Series:
    """Return the partition of every row of ``samples`` (aligned to its index).

    The ``pool`` column decides how val and test are formed:

    - ``train`` and ``eval`` (one official evaluation file, FairFace): each group's
      evaluation rows are split in halves into val and test.
    - ``train``, ``val`` and ``test`` (official val and test files, CelebA): val comes from
      the ``val`` rows and test from the ``test`` rows.
    - ``all`` (no official partition): ``eval_fraction`` of the smallest group's count is
      carved out of every group for val, and again for test. The rest is the train pool.

    Val and test are then group-balanced by downsampling every group to the smallest
    group's count, and to at most ``eval_per_group`` images per group when given. Rows
    of the evaluation pools left over after that become ``unused``.

    With ``identity_column``, whole identities are drawn instead of single images, so no
    identity appears in two of train, val and test. Carved val and test then contain at
    least the requested count per group, because the last identity drawn may overshoot.
    The downsampling that balances groups moves the surplus images to ``unused``, never
    to train.
    """
    pools = set(samples["pool"])
    _check_pools(pools)
    if eval_per_group is not None and int(eval_per_group) < 1:
        raise ValueError(f"data.eval_per_group must be at least 1 or null, got {eval_per_group}")
    present = set(samples["group"])
    no_images = [g for g in group_names if g not in present]
    if no_images and len(no_images) < len(group_names):
        raise ValueError(
            f"group(s) {no_images} have no images at all, so they cannot be evaluated; check "
            "the labels, or choose a group scheme whose groups all occur in this dataset"
        )
    units = _units(samples, identity_column)
    partition = pd.Series("train", index=samples.index, dtype=object)

    if pools == {"all"}:
        per_group = _carve_size(samples, group_names, eval_fraction)
        if eval_per_group is not None:
            per_group = min(per_group, int(eval_per_group))
        quota = {g: per_group for g in group_names}
        drawn = _draw_units(samples, group_names, units, [("val", quota), ("test", quota)], eval_seed)
    elif pools <= {"train", "eval"}:
        evaluation = samples.loc[samples["pool"] == "eval"]
        partition.loc[evaluation.index] = "unused"
        sizes = evaluation["group"].value_counts()
        val_quota = {g: math.ceil(sizes.get(g, 0) / 2) for g in group_names}
        rest = {g: math.inf for g in group_names}
        drawn = _draw_units(evaluation, group_names, units, [("val", val_quota), ("test", rest)], eval_seed)
    else:
        drawn = {}
        everything = {g: math.inf for g in group_names}
        for name in ("val", "test"):
            official = samples.loc[samples["pool"] == name]
            partition.loc[official.index] = "unused"
            drawn.update(_draw_units(official, group_names, units, [(name, everything)], eval_seed))

    for name in ("val", "test"):
        chosen = drawn[name]
        absent = [g for g in group_names if not chosen[g]]
        if absent and len(absent) < len(group_names):
            raise ValueError(
                f"the {name} partition would have no image of group(s) {absent}; every group "
                "needs evaluation images (check the labels, the official partition files or "
                "the group scheme)"
            )
        keep = min(len(rows) for rows in chosen.values())
        if eval_per_group is not None:
            keep = min(keep, int(eval_per_group))
        for rows in chosen.values():
            partition.loc[rows[:keep]] = name
            partition.loc[rows[keep:]] = "unused"
    return partition


def _check_pools(pools: set[str]) -> None:
    if "all" in pools and pools != {"all"}:
        raise ValueError("a sample table mixes pool 'all' with official pools; use one or the other")
    if "eval" in pools and pools & {"val", "test"}:
        raise ValueError(
            "a sample table mixes pool 'eval' (split in halves into val and test) with official "
            "'val'/'test' pools; use one or the other"
        )
    if pools & {"val", "test"} and not {"val", "test"} <= pools:
        present = sorted(pools & {"val", "test"})
        raise ValueError(
            f"the sample table has official {present} rows but not both val and test; mark "
            "the evaluation rows 'eval' to split them in halves, or provide both"
        )


def _units(samples: pd.DataFrame, identity_column: str | None) -> pd.Series:
    """Return the drawing unit of every row: its identity, or the row itself."""
    if identity_column is None:
        return samples["sample_id"].astype(str)
    if identity_column not in samples.columns:
        raise ValueError(
            f"identity column {identity_column!r} is not in the sample table; columns: "
            f"{list(samples.columns)}"
        )
    identities = samples[identity_column].astype(str)
    empty = identities.str.strip() == ""
    if empty.any():
        first = samples.loc[empty, "sample_id"].iloc[0]
        raise ValueError(
            f"{int(empty.sum())} samples have an empty {identity_column}, first {first!r}; "
            "give every sample an identity or unset the identity column"
        )
    return identities


def _carve_size(samples: pd.DataFrame, group_names: list[str], eval_fraction: float) -> int:
    counts = samples["group"].value_counts()
    present = [counts[g] for g in group_names if counts.get(g, 0) > 0]
    if not present:
        raise ValueError("the sample table is empty; nothing to partition")
    smallest = min(present)
    per_group = int(round(smallest * eval_fraction))
    if per_group < 1:
        raise ValueError(
            f"cannot carve val/test out of groups this small: the smallest group has "
            f"{smallest} images, and data.eval_fraction={eval_fraction} of it is below 1"
        )
    return per_group


def _draw_units(
    frame: pd.DataFrame,
    group_names: list[str],
    units: pd.Series,
    quotas: list[tuple[str, dict[str, float]]],
    seed: int,
) -> dict[str, dict[str, list[Hashable]]]:
    """Fill partitions with whole units of ``frame``, group by group, in a seeded order.

    Each group's units are sorted, then shuffled by a generator seeded with (seed, group
    position), so the result does not depend on row order. Units go to the first
    partition in ``quotas`` whose count for that group is below its quota. A unit's rows
    in other groups follow it into the same partition and count there too.
    Returns partition -> group -> row labels in drawing order.
    """
    drawn_rows: dict[str, dict[str, list[Hashable]]] = {name: {g: [] for g in group_names} for name, _ in quotas}
    filled = {name: dict.fromkeys(group_names, 0) for name, _ in quotas}
    if frame.empty:
        return drawn_rows

    frame_units = units.loc[frame.index]
    group_of_row = dict(zip(frame.index, frame["group"]))
    if frame_units.is_unique:
        members = {unit: [row] for unit, row in zip(frame_units, frame.index)}
    else:
        ordered = frame.assign(_unit=frame_units).sort_values("sample_id", kind="stable")
        members = {unit: list(rows) for unit, rows in ordered.groupby("_unit", sort=False).groups.items()}

    assigned: set[str] = set()
    for position, group in enumerate(group_names):
        group_units = np.sort(frame_units[frame["group"] == group].unique())
        rng = np.random.default_rng([seed, position])
        for unit in group_units[rng.permutation(len(group_units))]:
            if unit in assigned:
                continue
            target = next((name for name, quota in quotas if filled[name][group] < quota[group]), None)
            if target is None:
                break
            assigned.add(unit)
            for row in members[unit]:
                row_group = group_of_row[row]
                drawn_rows[target][row_group].append(row)
                filled[target][row_group] += 1
    return drawn_rows
