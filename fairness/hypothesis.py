"""Tests of group differences in one per-image metric.

- :func:`permutation_gap_test` tests whether any group differs. It is a permutation
  test of the gap (max - min of group means) with group labels shuffled.
- :func:`paired_gap_test` tests whether compression causes the difference. It runs the
  same test on per-image changes (before - after), a difference-in-differences that
  cancels content which simply differs between groups.
- :func:`pairwise_max_t` estimates how large the differences are. It gives every
  pairwise difference of group means with simultaneous (max-T) bootstrap intervals,
  including worst versus best group.

A percentile bootstrap interval of max - min is biased upwards, because the maximum of
noisy means exceeds the maximum of the true means. It does not cover 0 when there is no
difference, so this module offers none.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from fairness.frame import GroupFrame
from fairness.intervals import finite_values

logger = logging.getLogger(__name__)

# Upper bound on resampled elements held at once by the permutation and bootstrap loops.
_MAX_RESAMPLE_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class GapTestResult:
    """Result of a permutation test of the gap between group means.

    Attributes
    ----------
    statistic : float
        Observed gap, max - min of the group means (NaN with fewer than 2 groups).
    p_value : float
        One-sided permutation p-value, P(gap under shuffled labels >= observed gap).
        Its floor is ``1 / (n_resamples + 1)``, or ``1 / n_resamples`` for an exact test.
    null_distribution : numpy.ndarray
        Gaps under shuffled labels.
    n_resamples : int
        Number of permutations evaluated.
    exact : bool
        True when every distinct partition was enumerated (small data).
    by_group : pandas.Series
        Mean of the tested values per group (NaN for empty groups).
    n : pandas.Series
        Number of images per group.
    """

    statistic: float
    p_value: float
    null_distribution: np.ndarray
    n_resamples: int
    exact: bool
    by_group: pd.Series
    n: pd.Series


def _gap_of_means(*samples, axis=-1):
    # Vectorised: each sample has the permutations along the leading axes.
    means = np.stack([np.mean(sample, axis=axis) for sample in samples])
    return np.max(means, axis=0) - np.min(means, axis=0)


def permutation_gap_test(
    values,
    groups,
    *,
    group_names: Sequence | None = None,
    n_resamples: int = 9999,
    seed=0,
    batch: int | None = None,
) -> GapTestResult:
    """Test whether any group mean differs, by shuffling group labels.

    Uses ``scipy.stats.permutation_test`` with ``permutation_type="independent"``: all
    images are pooled and redistributed into groups of the observed sizes. The
    statistic is the gap of group means, and large gaps count as extreme
    (``alternative="greater"``). Under the null hypothesis that the metric does not
    depend on the group, the images are exchangeable and the p-value is valid at any
    sample size.

    Groups without images are left out. With fewer than 2 non-empty groups there is
    nothing to compare, so statistic and p-value are NaN and a warning is logged.

    Parameters
    ----------
    values : array-like
        One finite value per image (0/1 for correctness).
    groups : array-like
        One group per image, see :func:`fairness.frame.encode_groups`.
    group_names : sequence, optional
        All groups in report order.
    n_resamples : int
        Number of random permutations. When it is at least the number of distinct
        partitions, scipy enumerates all of them and the test is exact.
    seed : int, numpy.random.SeedSequence or None
        Seed of the permutation generator.
    batch : int, optional
        Permutations evaluated per vectorised call. The default keeps about 4 million
        values in memory. It does not change the result.

    Returns
    -------
    GapTestResult
    """
    frame = GroupFrame(values, groups, group_names=group_names)
    return _gap_test(frame, n_resamples=n_resamples, seed=seed, batch=batch)


def _gap_test(frame: GroupFrame, *, n_resamples: int, seed, batch: int | None) -> GapTestResult:
    # scipy.stats.permutation_test needs two observations per sample, so a group with a
    # single image is left out of the test; its mean still appears in by_group.
    singletons = [name for code, name in enumerate(frame.group_names) if frame.n.iloc[code] == 1]
    if singletons:
        logger.info("Gap test leaves out groups with one image: %s", singletons)
    samples = [
        frame.values[frame.codes == code]
        for code in range(len(frame.group_names))
        if frame.n.iloc[code] > 1
    ]
    if len(samples) < 2:
        logger.warning(
            "Gap test skipped: %d group(s) with images among %s, but at least 2 are needed.",
            len(samples),
            frame.group_names,
        )
        return GapTestResult(
            statistic=float("nan"),
            p_value=float("nan"),
            null_distribution=np.empty(0),
            n_resamples=0,
            exact=False,
            by_group=frame.by_group,
            n=frame.n,
        )

    if batch is None:
        # scipy would hold all n_resamples permuted copies of the data at once.
        # Batching does not change its permutations, only the memory they take.
        n_images = sum(sample.size for sample in samples)
        batch = max(1, _MAX_RESAMPLE_ELEMENTS // n_images)
    result = stats.permutation_test(
        samples,
        _gap_of_means,
        permutation_type="independent",
        vectorized=True,
        n_resamples=n_resamples,
        batch=batch,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    null_distribution = np.asarray(result.null_distribution, dtype=np.float64)

    # scipy enumerates every partition instead of sampling when there are at most
    # n_resamples of them. That p-value is exact and has no +1 term.
    n_partitions = _count_partitions([sample.size for sample in samples], n_resamples)
    return GapTestResult(
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        null_distribution=null_distribution,
        n_resamples=int(null_distribution.size),
        exact=n_partitions <= n_resamples,
        by_group=frame.by_group,
        n=frame.n,
    )


def _count_partitions(sizes: list[int], limit: int) -> int:
    # Distinct ways to split the pooled images into groups of these sizes, counted only
    # until the count exceeds limit.
    count, total = 1, 0
    for size in sizes:
        total += size
        count *= math.comb(total, size)
        if count > limit:
            break
    return count


def paired_gap_test(
    before,
    after,
    groups,
    *,
    group_names: Sequence | None = None,
    n_resamples: int = 9999,
    seed=0,
    batch: int | None = None,
) -> GapTestResult:
    """Test whether the per-image change differs between groups (difference-in-differences).

    The per-image change is ``before - after``: for instance correct on the original
    minus correct on the reconstruction (so its group mean is the accuracy
    degradation), or a metric under codec A minus codec B on the same image. The gap of
    the group means of these changes is then tested with
    :func:`permutation_gap_test`. Pairing each image with itself removes everything that
    differs between groups but not between the two conditions, such as how hard a
    group's faces are to classify or to compress.

    Parameters
    ----------
    before, after : array-like
        The two measurements of each image, in the same order.
    groups : array-like
        One group per image.
    group_names, n_resamples, seed, batch
        As in :func:`permutation_gap_test`.

    Returns
    -------
    GapTestResult
        ``by_group`` is the mean change per group and ``statistic`` its gap.
    """
    before_array = finite_values(before, "before")
    after_array = finite_values(after, "after")
    if before_array.size != after_array.size:
        raise ValueError(
            f"before has {before_array.size} values but after has {after_array.size}. "
            "Pair each image's two measurements in the same order."
        )
    return permutation_gap_test(
        before_array - after_array,
        groups,
        group_names=group_names,
        n_resamples=n_resamples,
        seed=seed,
        batch=batch,
    )


@dataclass(frozen=True)
class PairwiseResult:
    """All pairwise differences of group means with simultaneous intervals.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per pair (``group_a`` before ``group_b`` in ``group_names`` order):
        ``difference`` (mean a - mean b), ``se`` (Welch standard error), ``ci_low``,
        ``ci_high`` and ``p_adjusted`` (single-step max-T adjusted p-value). Pairs with
        a group of fewer than 2 images have NaN intervals.
    critical_value : float
        Bootstrap quantile of the maximum absolute studentized difference.
    confidence : float
        Simultaneous confidence level of all intervals together.
    worst_group, best_group
        By the metric's direction, as in :class:`fairness.frame.GroupFrame`.
    worst_vs_best : pandas.Series
        ``difference`` (mean of the higher of the two groups minus the lower, which
        equals the gap), ``ci_low``, ``ci_high`` and ``p_adjusted`` for that pair.
    """

    table: pd.DataFrame
    critical_value: float
    confidence: float
    worst_group: object
    best_group: object
    worst_vs_best: pd.Series


def pairwise_max_t(
    values,
    groups,
    *,
    group_names: Sequence | None = None,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed=0,
) -> PairwiseResult:
    """Estimate all pairwise differences of group means with simultaneous max-T intervals.

    For each pair (a, b) the difference ``d = mean_a - mean_b`` has Welch standard error
    ``se = sqrt(s_a^2 / n_a + s_b^2 / n_b)``. Each group is resampled with replacement
    within itself, and each resample yields ``max over pairs |d* - d| / se*``. The
    ``confidence`` quantile ``c`` of this maximum gives the intervals ``d +- c * se``,
    which cover all true differences at once with probability ``confidence``
    (a studentized bootstrap version of Tukey's max-T idea, which allows unequal group
    sizes and variances). Because the coverage is simultaneous, the
    interval of the pair chosen after looking at the data (worst versus best group) is
    still valid for that pair's true difference. It is not an interval for the true
    gap between the truly worst and truly best groups.

    Parameters
    ----------
    values : array-like
        One finite value per image.
    groups : array-like
        One group per image.
    group_names : sequence, optional
        All groups in report order.
    higher_is_better : bool
        Direction of the metric, decides worst and best group.
    confidence : float
        Simultaneous confidence level.
    n_resamples : int
        Number of bootstrap resamples.
    seed : int, numpy.random.SeedSequence or None
        Seed of the bootstrap generator.

    Returns
    -------
    PairwiseResult
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}.")
    frame = GroupFrame(values, groups, group_names=group_names, higher_is_better=higher_is_better)
    names = frame.group_names
    counts = frame.n.to_numpy()
    means = frame.by_group.to_numpy()
    group_values = [frame.values[frame.codes == code] for code in range(len(names))]
    variances = np.array(
        [np.var(sample, ddof=1) if sample.size >= 2 else np.nan for sample in group_values]
    )

    pairs = list(itertools.combinations(range(len(names)), 2))
    eligible = counts >= 2
    eligible_pairs = [(a, b) for a, b in pairs if eligible[a] and eligible[b]]
    if len(eligible) and not eligible.all():
        logger.warning(
            "Groups with fewer than 2 images get no interval: %s.",
            [names[code] for code in np.flatnonzero(~eligible)],
        )

    with np.errstate(invalid="ignore", divide="ignore"):
        differences = np.array([means[a] - means[b] for a, b in pairs])
        standard_errors = np.array(
            [np.sqrt(variances[a] / counts[a] + variances[b] / counts[b]) for a, b in pairs]
        )

    max_t = _bootstrap_max_t(group_values, means, eligible_pairs, n_resamples, seed)
    critical_value = float(np.quantile(max_t, confidence)) if max_t.size else float("nan")

    with np.errstate(invalid="ignore", divide="ignore"):
        observed_t = np.abs(_studentize(differences, standard_errors))
    p_adjusted = np.array(
        [
            np.nan if np.isnan(t) else (1.0 + np.count_nonzero(max_t >= t)) / (max_t.size + 1.0)
            for t in observed_t
        ]
    )
    pair_eligible = np.array([eligible[a] and eligible[b] for a, b in pairs], dtype=bool)
    p_adjusted = np.where(pair_eligible, p_adjusted, np.nan)
    # Two constant groups have se 0 and a zero-width interval, even if c is infinite.
    with np.errstate(invalid="ignore"):
        half_width = np.where(standard_errors == 0, 0.0, critical_value * standard_errors)
    half_width = np.where(pair_eligible, half_width, np.nan)

    table = pd.DataFrame(
        {
            "group_a": [names[a] for a, _ in pairs],
            "group_b": [names[b] for _, b in pairs],
            "difference": differences,
            "se": standard_errors,
            "ci_low": differences - half_width,
            "ci_high": differences + half_width,
            "p_adjusted": p_adjusted,
        }
    )
    worst_vs_best = _worst_vs_best(table, frame)
    return PairwiseResult(
        table=table,
        critical_value=critical_value,
        confidence=confidence,
        worst_group=frame.worst_group,
        best_group=frame.best_group,
        worst_vs_best=worst_vs_best,
    )


def _studentize(numerator: np.ndarray, standard_error: np.ndarray) -> np.ndarray:
    # The standard error is 0 when both groups are constant (all images correct, say).
    # Then a zero difference counts as t = 0 and any other as infinitely extreme.
    t = numerator / standard_error
    both_zero = (standard_error == 0) & (numerator == 0)
    return np.where(both_zero, 0.0, t)


def _bootstrap_max_t(group_values, means, eligible_pairs, n_resamples: int, seed) -> np.ndarray:
    if not eligible_pairs or n_resamples < 1:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    largest_group = max(sample.size for sample in group_values)
    chunk = max(1, min(n_resamples, _MAX_RESAMPLE_ELEMENTS // max(largest_group, 1)))

    max_t = np.empty(n_resamples)
    used = sorted({code for pair in eligible_pairs for code in pair})
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        boot_means = {}
        boot_variances = {}
        for code in used:
            sample = group_values[code]
            resamples = sample[rng.integers(0, sample.size, size=(stop - start, sample.size))]
            boot_means[code] = resamples.mean(axis=1)
            boot_variances[code] = resamples.var(axis=1, ddof=1)

        largest = np.zeros(stop - start)
        for a, b in eligible_pairs:
            n_a, n_b = group_values[a].size, group_values[b].size
            with np.errstate(invalid="ignore", divide="ignore"):
                shift = (boot_means[a] - boot_means[b]) - (means[a] - means[b])
                standard_error = np.sqrt(boot_variances[a] / n_a + boot_variances[b] / n_b)
                t = np.abs(_studentize(shift, standard_error))
            largest = np.maximum(largest, t)
        max_t[start:stop] = largest
    return max_t


def _worst_vs_best(table: pd.DataFrame, frame: GroupFrame) -> pd.Series:
    worst, best = frame.worst_group, frame.best_group
    empty = pd.Series(
        {"worst_group": worst, "best_group": best, "difference": np.nan,
         "ci_low": np.nan, "ci_high": np.nan, "p_adjusted": np.nan}
    )
    if worst is None or worst == best:
        return empty

    # Orient the pair as higher mean minus lower mean, so difference equals the gap.
    means = frame.by_group
    high, low = (best, worst) if means[best] >= means[worst] else (worst, best)
    row = table[(table.group_a == high) & (table.group_b == low)]
    sign = 1.0
    if row.empty:
        row = table[(table.group_a == low) & (table.group_b == high)]
        sign = -1.0
    row = row.iloc[0]
    bounds = sorted([sign * row.ci_low, sign * row.ci_high])
    return pd.Series(
        {
            "worst_group": worst,
            "best_group": best,
            "difference": sign * row.difference,
            "ci_low": bounds[0],
            "ci_high": bounds[1],
            "p_adjusted": row.p_adjusted,
        }
    )
