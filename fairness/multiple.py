"""Multiple testing and power: Holm correction, minimum detectable effect, underpowered flags.

One report runs many tests (every metric, attribute and codec). Holm's step-down
correction keeps the chance of any false positive among them at alpha without assuming
independence. The minimum detectable effect (MDE) next to each test gives the size of
difference the data could have found, so that "no significant gap" is not read as
"no gap".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

DEFAULT_MIN_GROUP_SIZE = 100


def holm(p_values) -> np.ndarray:
    """Compute Holm-Bonferroni adjusted p-values.

    With the m p-values sorted ascending, the adjusted value of the i-th (from 0) is
    ``max over j <= i of min(1, (m - j) * p_(j))``. Rejecting every test whose adjusted
    p-value is at most alpha is Holm's step-down procedure at family-wise error rate
    alpha. The result equals ``statsmodels.stats.multitest.multipletests(p,
    method="holm")[1]``.

    Parameters
    ----------
    p_values : array-like of float
        Raw p-values in [0, 1]. NaN entries (tests that could not run) stay NaN and do
        not count towards m.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values in the input order.
    """
    p = np.array(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}.")
    valid = ~np.isnan(p)
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[valid].tolist()}.")

    adjusted = np.full_like(p, np.nan)
    tested = p[valid]
    m = tested.size
    if m == 0:
        return adjusted

    order = np.argsort(tested, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * tested[order])
    stepped = np.maximum.accumulate(scaled)
    result = np.empty(m)
    result[order] = stepped
    adjusted[valid] = result
    return adjusted


def _counts(n_per_group) -> pd.Series:
    if isinstance(n_per_group, pd.Series):
        counts = n_per_group.copy()
    elif isinstance(n_per_group, Mapping):
        counts = pd.Series(dict(n_per_group))
    elif isinstance(n_per_group, Sequence) or isinstance(n_per_group, np.ndarray):
        counts = pd.Series(list(n_per_group))
    else:
        raise TypeError(
            f"n_per_group must be a mapping, Series or sequence of counts, got "
            f"{type(n_per_group).__name__}."
        )
    if counts.isna().any() or (counts < 0).any():
        raise ValueError(f"group sizes must be non-negative counts, got {counts.to_dict()}.")
    return counts.astype(np.int64)


def minimum_detectable_effect(
    n_per_group,
    *,
    sd: float | None = None,
    p: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Estimate the smallest difference between two groups detectable at the given power.

    Uses the normal approximation for a two-sided two-sample test with a common
    standard deviation, applied to the two smallest non-empty groups (the pair with
    the least information)::

        mde = (z_{1 - alpha/2} + z_{power}) * sd * sqrt(1/n_1 + 1/n_2)

    For a proportion give ``p`` (for example the overall accuracy), so that
    ``sd = sqrt(p (1 - p))``. For a paired test give the SD of the per-image changes.

    This is an approximation. The gap test compares all groups at once with the max -
    min statistic and Holm then raises its p-value, so the true MDE of a reported test
    is somewhat larger. The value is a lower bound on what the report could have missed.

    Parameters
    ----------
    n_per_group : mapping, pandas.Series or sequence of int
        Images per group. Empty groups are ignored.
    sd : float, optional
        Standard deviation of the per-image values. Give exactly one of ``sd`` and ``p``.
    p : float, optional
        Proportion for a 0/1 metric.
    alpha : float
        Two-sided significance level.
    power : float
        Probability of detecting a true difference of the returned size.

    Returns
    -------
    float
        In the metric's unit (a proportion for 0/1 metrics). NaN with fewer than two
        non-empty groups.
    """
    if (sd is None) == (p is None):
        raise ValueError("Give exactly one of sd (for means) and p (for proportions).")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}.")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie strictly between 0 and 1, got {power}.")
    if p is not None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a proportion in [0, 1], got {p}.")
        sd = float(np.sqrt(p * (1.0 - p)))
    if not (np.isfinite(sd) and sd >= 0.0):
        raise ValueError(f"sd must be a finite non-negative number, got {sd}.")

    counts = _counts(n_per_group)
    present = np.sort(counts[counts > 0].to_numpy())
    if present.size < 2:
        return float("nan")
    n_1, n_2 = present[0], present[1]

    z_alpha = stats.norm.ppf(1.0 - alpha / 2.0)
    z_power = stats.norm.ppf(power)
    return float((z_alpha + z_power) * sd * np.sqrt(1.0 / n_1 + 1.0 / n_2))


def underpowered_groups(n_per_group, min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> list:
    """Return the groups (keys, or positions for a sequence) with fewer than ``min_group_size`` images.

    Empty groups count as underpowered.
    """
    counts = _counts(n_per_group)
    return counts.index[counts < min_group_size].tolist()


def underpowered(n_per_group, min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> bool:
    """Return True when any group has fewer than ``min_group_size`` images.

    A flagged result is still reported, never hidden. Empty groups count as
    underpowered, because a group without images cannot show a difference.
    """
    return bool(underpowered_groups(n_per_group, min_group_size))
