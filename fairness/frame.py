"""Per-group summaries of one per-image metric, in fairlearn's MetricFrame terms.

``GroupFrame`` groups one value per image by demographic group. Like
``fairlearn.metrics.MetricFrame`` it reports ``by_group``, ``n``, ``overall``,
``group_min()``, ``group_max()``, ``difference()`` (the gap, max - min) and ``ratio()``
(min / max). It adds the worst and best group by the metric's direction and per-group
confidence intervals.

Empty groups named in ``group_names`` stay in ``by_group`` with value NaN and n 0, and
are left out of the gap, the ratio and the worst and best group. A report must show
them, because an absent group is itself a finding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from fairness.intervals import (
    BootstrapMethod,
    bootstrap_mean_interval,
    finite_values,
    wilson_interval,
)

logger = logging.getLogger(__name__)

Kind = Literal["mean", "proportion"]


def encode_groups(groups, group_names: Sequence | None = None) -> tuple[np.ndarray, list]:
    """Map each image's group to an integer code indexing ``group_names``.

    Parameters
    ----------
    groups : array-like
        One group per image: labels that appear in ``group_names``, or integer
        indices into ``group_names`` (the datamodules' ``group`` tensor) when
        ``group_names`` contains non-integers.
    group_names : sequence, optional
        All groups, in report order. Default: the sorted distinct labels of ``groups``.

    Returns
    -------
    codes : numpy.ndarray of int64
        Index into ``names`` for each image.
    names : list
        The group names.

    Raises
    ------
    ValueError
        On missing group labels, duplicate names, labels not in ``group_names`` and
        indices out of range.
    """
    labels = np.asarray(groups)
    if labels.ndim != 1:
        raise ValueError(f"groups must be 1-D with one label per image, got shape {labels.shape}.")
    missing = pd.isna(labels)
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"groups contains {int(missing.sum())} missing labels (None or NaN). The first "
            f"is at position {first}. Drop those images or give them a group."
        )

    if group_names is None:
        names = np.unique(labels).tolist()
    else:
        names = list(group_names)
        if len(set(names)) != len(names):
            raise ValueError(f"group_names contains duplicates: {names}.")

    names_are_integers = all(isinstance(name, (int, np.integer)) for name in names)
    if np.issubdtype(labels.dtype, np.integer) and not names_are_integers:
        codes = labels.astype(np.int64)
        out_of_range = (codes < 0) | (codes >= len(names))
        if out_of_range.any():
            first = int(np.flatnonzero(out_of_range)[0])
            raise ValueError(
                f"group index {codes[first]} at position {first} is out of range for "
                f"{len(names)} group_names {names}."
            )
        return codes, names

    code_of = {name: code for code, name in enumerate(names)}
    codes = np.fromiter(
        (code_of.get(label, -1) for label in labels.tolist()), dtype=np.int64, count=labels.size
    )
    unknown = codes < 0
    if unknown.any():
        unknown_labels = sorted({str(label) for label in labels[unknown].tolist()})
        raise ValueError(
            f"groups contains {int(unknown.sum())} images with labels not in group_names: "
            f"{unknown_labels[:5]}. Known names: {names}. Add the labels to group_names "
            "or drop those images."
        )
    return codes, names


def _seed_sequence(seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(seed)


class GroupFrame:
    """One per-image metric grouped by demographic group.

    Parameters
    ----------
    values : array-like
        One finite value per image. ``kind="proportion"`` needs 0/1 values
        (for example "correct on the reconstruction").
    groups : array-like
        One group per image, see :func:`encode_groups`.
    group_names : sequence, optional
        All groups in report order. Groups listed here without images stay in
        ``by_group`` with NaN.
    higher_is_better : bool
        Direction of the metric: True for PSNR or accuracy, False for bpp or LPIPS.
        Decides ``worst_group`` and ``best_group``.
    kind : {"mean", "proportion"}
        Decides the confidence interval: bootstrap for means, Wilson for proportions.
    name : str, optional
        Metric name, used as the name of the ``by_group`` Series.

    Raises
    ------
    ValueError
        If values contain NaN or inf (the message gives the count and the first
        position), lengths differ, or a proportion has values other than 0 and 1.

    Examples
    --------
    >>> frame = GroupFrame([30.0, 32.0, 28.0, 29.0], ["A", "A", "B", "B"])
    >>> frame.difference(), frame.worst_group
    (2.5, 'B')
    """

    def __init__(
        self,
        values,
        groups,
        *,
        group_names: Sequence | None = None,
        higher_is_better: bool = True,
        kind: Kind = "mean",
        name: str | None = None,
    ):
        if kind not in ("mean", "proportion"):
            raise ValueError(f"kind must be 'mean' or 'proportion', got {kind!r}.")
        self.values = finite_values(values)
        self.codes, self.group_names = encode_groups(groups, group_names)
        if self.codes.size != self.values.size:
            raise ValueError(
                f"values has {self.values.size} entries but groups has {self.codes.size}. "
                "Give one group per value."
            )
        if kind == "proportion":
            not_binary = (self.values != 0.0) & (self.values != 1.0)
            if not_binary.any():
                first = int(np.flatnonzero(not_binary)[0])
                raise ValueError(
                    f'kind="proportion" needs 0/1 values, got {self.values[first]} at '
                    f'position {first}. Use kind="mean" for other values.'
                )
        self.kind = kind
        self.higher_is_better = bool(higher_is_better)
        self.name = name

        n_groups = len(self.group_names)
        counts = np.bincount(self.codes, minlength=n_groups)
        sums = np.bincount(self.codes, weights=self.values, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        index = pd.Index(self.group_names, name="group")
        self._by_group = pd.Series(means, index=index, name=name, dtype=np.float64)
        self._n = pd.Series(counts.astype(np.int64), index=index, name="n")

    def __repr__(self) -> str:
        return (
            f"GroupFrame(name={self.name!r}, kind={self.kind!r}, "
            f"higher_is_better={self.higher_is_better}, by_group={self._by_group.to_dict()})"
        )

    @property
    def by_group(self) -> pd.Series:
        """Mean per group (a proportion for 0/1 values), NaN for empty groups."""
        return self._by_group.copy()

    @property
    def n(self) -> pd.Series:
        """Number of images per group."""
        return self._n.copy()

    @property
    def overall(self) -> float:
        """Mean over all images pooled, NaN without images."""
        if self.values.size == 0:
            return float("nan")
        return float(self.values.mean())

    def values_of(self, group) -> np.ndarray:
        """Return the per-image values of one group (a copy)."""
        if group not in self.group_names:
            raise KeyError(f"group {group!r} not in group_names {self.group_names}.")
        return self.values[self.codes == self.group_names.index(group)].copy()

    def _present(self) -> pd.Series:
        return self._by_group[self._n > 0]

    def group_min(self) -> float:
        """Smallest group value over groups with images, NaN if there are none."""
        present = self._present()
        return float(present.min()) if len(present) else float("nan")

    def group_max(self) -> float:
        """Largest group value over groups with images, NaN if there are none."""
        present = self._present()
        return float(present.max()) if len(present) else float("nan")

    def difference(self) -> float:
        """Return the gap, ``group_max() - group_min()``: 0 with a single group."""
        return self.group_max() - self.group_min()

    def ratio(self) -> float:
        """Return ``group_min() / group_max()``, NaN when the maximum is 0.

        Like fairlearn's ratio, it is meant for non-negative metrics. With negative
        group values (a BD-rate or a degradation, say) it is not a fraction of 1.
        """
        group_max = self.group_max()
        if np.isnan(group_max) or group_max == 0.0:
            return float("nan")
        return self.group_min() / group_max

    @property
    def worst_group(self):
        """Group with the worst value by the metric's direction (the first one on ties)."""
        present = self._present()
        if not len(present):
            return None
        return present.idxmin() if self.higher_is_better else present.idxmax()

    @property
    def best_group(self):
        """Group with the best value by the metric's direction (the first one on ties)."""
        present = self._present()
        if not len(present):
            return None
        return present.idxmax() if self.higher_is_better else present.idxmin()

    def summary(self) -> dict:
        """Return gap, ratio, worst and best group and n per group as a plain dict."""
        return {
            "gap": self.difference(),
            "ratio": self.ratio(),
            "worst_group": self.worst_group,
            "best_group": self.best_group,
            "n": self._n.to_dict(),
        }

    def intervals(
        self,
        confidence: float = 0.95,
        n_resamples: int = 2000,
        seed=0,
        method: BootstrapMethod = "BCa",
    ) -> pd.DataFrame:
        """Compute a confidence interval for each group's value.

        ``kind="proportion"`` uses the Wilson score interval. ``kind="mean"`` uses
        :func:`fairness.intervals.bootstrap_mean_interval` (BCa by default). Group ``i``
        (in ``group_names`` order) draws its resamples from
        ``numpy.random.SeedSequence(seed).spawn(len(group_names))[i]``, so groups do not
        share resamples and the result is reproducible.

        Groups with fewer than 2 images get NaN bounds, because one image gives no
        estimate of the spread.

        These are per-group (marginal) intervals. Do not read the gap's uncertainty off
        them. Use ``fairness.hypothesis.pairwise_max_t`` for simultaneous intervals of
        differences between groups.

        Returns
        -------
        pandas.DataFrame
            Index ``group``, columns ``value``, ``n``, ``ci_low``, ``ci_high``.
            ``attrs["method"]`` names the interval method.
        """
        counts = self._n.to_numpy()
        if self.kind == "proportion":
            successes = np.bincount(self.codes, weights=self.values, minlength=len(counts))
            low, high = wilson_interval(np.rint(successes).astype(np.int64), counts, confidence)
            low = np.where(counts < 2, np.nan, low)
            high = np.where(counts < 2, np.nan, high)
            method_name = "wilson"
        else:
            seeds = _seed_sequence(seed).spawn(len(self.group_names))
            low = np.full(len(counts), np.nan)
            high = np.full(len(counts), np.nan)
            for code, group_seed in enumerate(seeds):
                group_values = self.values[self.codes == code]
                low[code], high[code] = bootstrap_mean_interval(
                    group_values, confidence, n_resamples, group_seed, method
                )
            method_name = f"bootstrap-{method}"

        table = pd.DataFrame(
            {"value": self._by_group, "n": self._n, "ci_low": low, "ci_high": high},
            index=self._by_group.index,
        )
        table.attrs["method"] = method_name
        table.attrs["confidence"] = confidence
        return table
