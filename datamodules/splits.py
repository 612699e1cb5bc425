"""Training split kinds drawn from the train pool: balanced, imbalanced and natural."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from datamodules.groups import identifier, resolve_group_key

SPLIT_KINDS = ("balanced", "imbalanced", "natural")


class SplitRequestError(ValueError):
    """A split requests more images, or other proportions, than the pool can supply."""


def largest_remainder_counts(total: int, proportions: list[float]) -> list[int]:
    """Round ``total * proportions`` to integers that sum to ``total``.

    Floors first, then hands the leftover units to the largest fractional parts; ties go to
    the earlier group, so the result depends only on the group order.
    """
    exact = [total * p for p in proportions]
    counts = [math.floor(x + 1e-9) for x in exact]
    leftover = total - sum(counts)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:leftover]:
        counts[i] += 1
    return counts


def normalise_proportions(proportions: Mapping[str, float], group_names: list[str]) -> list[float]:
    """Return proportions in ``group_names`` order from config keys (names or aliases)."""
    resolved: dict[str, float] = {}
    for key, value in proportions.items():
        name = resolve_group_key(str(key), group_names)
        if float(value) < 0:
            raise SplitRequestError(f"split.proportions.{identifier(name)} is negative ({value})")
        resolved[name] = float(value)
    missing = [identifier(g) for g in group_names if g not in resolved]
    if missing:
        raise SplitRequestError(
            f"split.proportions lacks group(s) {missing}; give every group a fraction "
            "(0 to leave a group out)"
        )
    total = sum(resolved.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitRequestError(f"split.proportions sum to {total:.6g}, not 1")
    return [resolved[g] for g in group_names]


def split_counts(
    available: Mapping[str, int],
    group_names: list[str],
    kind: str,
    *,
    per_group: int | None = None,
    proportions: Mapping[str, float] | None = None,
    total: int | None = None,
) -> dict[str, int]:
    """Return how many training images each group contributes.

    Raises
    ------
    SplitRequestError
        If a group is asked for more images than the pool has; the message names the
        group, the count requested and the count available.
    """
    if kind not in SPLIT_KINDS:
        raise SplitRequestError(f"unknown split.kind {kind!r}; expected one of {SPLIT_KINDS}")
    avail = [int(available.get(g, 0)) for g in group_names]

    if kind == "natural":
        return dict(zip(group_names, avail))

    if kind == "balanced":
        if per_group is not None and total is not None:
            raise SplitRequestError("set split.per_group or split.total for a balanced split, not both")
        if per_group is None:
            per_group = total // len(group_names) if total is not None else min(avail)
        counts = [int(per_group)] * len(group_names)
    else:
        if not proportions:
            raise SplitRequestError("an imbalanced split needs split.proportions {group: fraction}")
        shares = normalise_proportions(proportions, group_names)
        if total is None:
            total = _largest_supported_total(avail, shares)
        counts = largest_remainder_counts(int(total), shares)

    for group, requested, have in zip(group_names, counts, avail):
        if requested > have:
            raise SplitRequestError(
                f"split.kind={kind}: group {group} needs {requested} training images but the "
                f"train pool has {have} available; lower split.total or split.per_group"
            )
    return dict(zip(group_names, counts))


def _largest_supported_total(avail: list[int], shares: list[float]) -> int:
    bounds = [a / p for a, p in zip(avail, shares) if p > 0]
    total = int(math.floor(min(bounds) + 1e-9))
    while total > 0 and any(c > a for c, a in zip(largest_remainder_counts(total, shares), avail)):
        total -= 1
    return total


def draw_training_split(
    pool: pd.DataFrame,
    counts: Mapping[str, int],
    group_names: list[str],
    seed: int,
) -> pd.Index:
    """Draw ``counts[g]`` rows of each group from ``pool``, reproducibly from ``seed``.

    Each group is shuffled by its own generator seeded with (seed, group position), after
    ordering rows by ``sample_id``, so the draw does not depend on the pool's row order.
    """
    chosen = []
    for position, group in enumerate(group_names):
        rows = pool.loc[pool["group"] == group].sort_values("sample_id", kind="stable").index
        rng = np.random.default_rng([seed, position])
        chosen.extend(rows[rng.permutation(len(rows))[: counts[group]]])
    return pd.Index(chosen)
