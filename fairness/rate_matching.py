"""Comparisons at matched rate: interpolation over log(bpp) and Bjontegaard deltas.

Two codecs, two trainings or two groups are never compared at the same lambda or
quality setting, because the bits per pixel (bpp) they spend there differ. Each
rate-distortion curve is instead interpolated to common bpp points inside the range all
curves cover (:func:`common_bpp_points`, :func:`interpolate_at_bpp`), or summarised by
the Bjontegaard delta over the overlapping range (:func:`bd_rate`, :func:`bd_metric`).

Bjontegaard deltas (G. Bjontegaard, "Calculation of average PSNR differences between
RD-curves", VCEG-M33, 2001) fit each curve over log rate and average the difference of
the fits. The original fits a cubic polynomial. The default here is the piecewise cubic
Hermite interpolant (PCHIP) through the points, which cannot overshoot between points
and needs only 2 points. ``method="cubic"`` gives the original polynomial fit. Both
match the PyPI ``bjontegaard`` package (1.3.0) with the same method name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import interpolate

from fairness.intervals import finite_values

logger = logging.getLogger(__name__)

FitMethod = Literal["pchip", "cubic"]


def _rate_curve(bpp, values) -> tuple[np.ndarray, np.ndarray]:
    # Sorted by bpp, duplicate bpp averaged, bpp checked positive.
    rate = finite_values(bpp, "bpp")
    metric = finite_values(values, "values")
    if rate.size != metric.size:
        raise ValueError(
            f"bpp has {rate.size} points but values has {metric.size}. Give one value per rate point."
        )
    if rate.size == 0:
        raise ValueError("A rate-distortion curve needs at least one point, got none.")
    if np.any(rate <= 0):
        raise ValueError(f"bpp must be positive to take its logarithm, got {rate.tolist()}.")

    unique_rate, inverse = np.unique(rate, return_inverse=True)
    if unique_rate.size < rate.size:
        # Two settings can give the same size (JPEG at its lowest qualities, say).
        mean_metric = np.bincount(inverse, weights=metric) / np.bincount(inverse)
        return unique_rate, mean_metric
    order = np.argsort(rate)
    return rate[order], metric[order]


def interpolate_at_bpp(bpp, values, targets) -> np.ndarray:
    """Interpolate a metric linearly in log(bpp) at target rates.

    Points are sorted by bpp first, and points with equal bpp are averaged.

    Parameters
    ----------
    bpp : array-like
        Bits per pixel of each rate point, positive.
    values : array-like
        Metric at each rate point (a group mean, for instance).
    targets : array-like or float
        Rates (bpp) to evaluate at.

    Returns
    -------
    numpy.ndarray
        One value per target. Targets outside ``[min(bpp), max(bpp)]`` get NaN,
        because extrapolating a rate-distortion curve is a guess.
    """
    rate, metric = _rate_curve(bpp, values)
    target_array = np.atleast_1d(np.asarray(targets, dtype=np.float64))
    if np.any(~(target_array > 0)):
        raise ValueError(f"targets must be positive bpp values, got {target_array.tolist()}.")

    log_rate = np.log(rate)
    log_target = np.log(target_array)
    result = np.interp(log_target, log_rate, metric)
    outside = (log_target < log_rate[0]) | (log_target > log_rate[-1])
    return np.where(outside, np.nan, result)


def _bpp_arrays(curves) -> dict:
    if isinstance(curves, Mapping):
        items = curves.items()
    else:
        items = enumerate(curves)
    arrays = {}
    for name, curve in items:
        # A curve is a bpp array, or a (bpp, values) pair.
        if isinstance(curve, tuple) and len(curve) == 2:
            curve = curve[0]
        arrays[name] = finite_values(curve, f"bpp of curve {name!r}")
    return arrays


def common_bpp_points(curves, n_points: int = 5) -> np.ndarray:
    """Return rates inside the range that every curve covers, evenly spaced in log(bpp).

    Parameters
    ----------
    curves : mapping or sequence
        Each curve's bpp values, or ``(bpp, values)`` pairs.
    n_points : int
        Number of points. Both ends of the common range are included. With 1 point
        it is the geometric middle of the range.

    Returns
    -------
    numpy.ndarray
        Increasing bpp values. The ends equal the range ends exactly, so that
        :func:`interpolate_at_bpp` returns no NaN there.

    Raises
    ------
    ValueError
        If the curves share no rate range, naming the curve ranges.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be at least 1, got {n_points}.")
    arrays = _bpp_arrays(curves)
    if not arrays:
        raise ValueError("common_bpp_points needs at least one curve, got none.")
    for name, rate in arrays.items():
        if rate.size == 0 or np.any(rate <= 0):
            raise ValueError(f"curve {name!r} needs positive bpp values, got {rate.tolist()}.")

    low = max(float(rate.min()) for rate in arrays.values())
    high = min(float(rate.max()) for rate in arrays.values())
    if low > high:
        ranges = {name: (float(rate.min()), float(rate.max())) for name, rate in arrays.items()}
        raise ValueError(
            f"The curves share no bpp range: {ranges}. Add rate points so that they overlap."
        )
    if n_points == 1:
        return np.array([np.sqrt(low * high)])

    points = np.exp(np.linspace(np.log(low), np.log(high), n_points))
    points[0], points[-1] = low, high
    return points


def matched_difference(
    anchor_bpp,
    anchor_values,
    test_bpp,
    test_values,
    *,
    targets=None,
    n_points: int = 5,
) -> pd.DataFrame:
    """Compare two rate-distortion curves at the same bpp.

    Parameters
    ----------
    anchor_bpp, anchor_values : array-like
        Reference curve (a baseline codec, or the balanced training).
    test_bpp, test_values : array-like
        Curve compared with the anchor.
    targets : array-like, optional
        Rates to compare at. Default: :func:`common_bpp_points` of both curves.
    n_points : int
        Number of default targets.

    Returns
    -------
    pandas.DataFrame
        Columns ``bpp``, ``anchor``, ``test`` and ``difference`` (test - anchor).
    """
    if targets is None:
        targets = common_bpp_points([anchor_bpp, test_bpp], n_points=n_points)
    targets = np.atleast_1d(np.asarray(targets, dtype=np.float64))
    anchor = interpolate_at_bpp(anchor_bpp, anchor_values, targets)
    test = interpolate_at_bpp(test_bpp, test_values, targets)
    return pd.DataFrame({"bpp": targets, "anchor": anchor, "test": test, "difference": test - anchor})


def matched_by_group(curves: Mapping, *, targets=None, n_points: int = 5) -> pd.DataFrame:
    """Interpolate each group's curve at common bpp points.

    Parameters
    ----------
    curves : mapping
        Group -> ``(bpp, values)``, for instance the mean bpp and mean PSNR of that
        group's images at each lambda of one codec.
    targets : array-like, optional
        Rates to compare at. Default: :func:`common_bpp_points` of all curves.
    n_points : int
        Number of default targets.

    Returns
    -------
    pandas.DataFrame
        Index ``bpp``, one column per group. The gap at each rate is
        ``table.max(axis=1) - table.min(axis=1)``.
    """
    if targets is None:
        targets = common_bpp_points(curves, n_points=n_points)
    targets = np.atleast_1d(np.asarray(targets, dtype=np.float64))
    columns = {group: interpolate_at_bpp(bpp, values, targets) for group, (bpp, values) in curves.items()}
    return pd.DataFrame(columns, index=pd.Index(targets, name="bpp"))


class _Fit:
    """A fitted curve y(x) that can be integrated, by PCHIP or a cubic polynomial."""

    def __init__(self, x: np.ndarray, y: np.ndarray, method: FitMethod):
        order = np.argsort(x)
        x, y = x[order], y[order]
        if np.any(np.diff(x) == 0):
            raise ValueError(
                f"Bjontegaard fit needs distinct values on its x axis, got {x.tolist()}. "
                "Two rate points with the same metric value cannot both lie on the fit."
            )
        if method == "pchip":
            if x.size < 2:
                raise ValueError(f"method='pchip' needs at least 2 rate points, got {x.size}.")
            self._pchip = interpolate.PchipInterpolator(x, y)
        elif method == "cubic":
            if x.size < 4:
                raise ValueError(f"method='cubic' needs at least 4 rate points, got {x.size}.")
            self._polynomial = np.polynomial.Polynomial.fit(x, y, 3)
        else:
            raise ValueError(f"method must be 'pchip' or 'cubic', got {method!r}.")
        self.method = method
        self.low, self.high = float(x[0]), float(x[-1])

    def integrate(self, low: float, high: float) -> float:
        if self.method == "pchip":
            return float(self._pchip.integrate(low, high))
        antiderivative = self._polynomial.integ()
        return float(antiderivative(high) - antiderivative(low))


def _bd_average(x_anchor, y_anchor, x_test, y_test, method: FitMethod) -> float:
    # Mean of (test fit - anchor fit) over the overlap of the two x ranges.
    anchor = _Fit(x_anchor, y_anchor, method)
    test = _Fit(x_test, y_test, method)
    low = max(anchor.low, test.low)
    high = min(anchor.high, test.high)
    if not low < high:
        logger.warning(
            "Bjontegaard delta undefined: the curves do not overlap (anchor %s..%s, test %s..%s).",
            anchor.low, anchor.high, test.low, test.high,
        )
        return float("nan")
    return (test.integrate(low, high) - anchor.integrate(low, high)) / (high - low)


def _as_curve(bpp, metric) -> tuple[np.ndarray, np.ndarray]:
    rate = finite_values(bpp, "bpp")
    values = finite_values(metric, "metric")
    if rate.size != values.size:
        raise ValueError(f"bpp has {rate.size} points but metric has {values.size}.")
    if np.any(rate <= 0):
        raise ValueError(f"bpp must be positive to take its logarithm, got {rate.tolist()}.")
    return rate, values


def bd_rate(anchor_bpp, anchor_metric, test_bpp, test_metric, *, method: FitMethod = "pchip") -> float:
    """Compute the Bjontegaard delta rate: the mean rate change of test against anchor, in percent.

    log(bpp) is fitted as a function of the metric for each curve. The mean of
    (test fit - anchor fit) over the metric range both curves cover is ``d``, and the
    result is ``100 * (exp(d) - 1)``. Negative values mean the test codec needs fewer
    bits for the same quality. The metric may rise with rate (PSNR) or fall (LPIPS).

    Parameters
    ----------
    anchor_bpp, anchor_metric : array-like
        Reference curve.
    test_bpp, test_metric : array-like
        Compared curve.
    method : {"pchip", "cubic"}
        Fit over log rate, see the module docstring.

    Returns
    -------
    float
        Percent. NaN (with a warning) when the metric ranges do not overlap.
    """
    anchor_rate, anchor_values = _as_curve(anchor_bpp, anchor_metric)
    test_rate, test_values = _as_curve(test_bpp, test_metric)
    mean_log_ratio = _bd_average(anchor_values, np.log(anchor_rate), test_values, np.log(test_rate), method)
    return float(100.0 * np.expm1(mean_log_ratio))


def bd_metric(anchor_bpp, anchor_metric, test_bpp, test_metric, *, method: FitMethod = "pchip") -> float:
    """Compute the Bjontegaard delta metric: the mean metric change of test against anchor.

    The metric is fitted as a function of log(bpp) for each curve, and the result is
    the mean of (test fit - anchor fit) over the log-rate range both curves cover. For
    PSNR this is BD-PSNR in dB, where positive means better. For a lower-is-better
    metric, negative means better.

    Returns
    -------
    float
        In the metric's unit. NaN (with a warning) when the rate ranges do not overlap.
    """
    anchor_rate, anchor_values = _as_curve(anchor_bpp, anchor_metric)
    test_rate, test_values = _as_curve(test_bpp, test_metric)
    return _bd_average(np.log(anchor_rate), anchor_values, np.log(test_rate), test_values, method)


@dataclass(frozen=True)
class GroupBDRate:
    """BD-rate of a test codec against an anchor, per group.

    Attributes
    ----------
    by_group : pandas.Series
        BD-rate in percent per group, NaN where the group's curves do not overlap.
    gap : float
        max - min over groups with a value.
    worst_group, best_group
        Highest and lowest BD-rate: the group for which the test codec saves the
        fewest and the most bits.
    """

    by_group: pd.Series
    gap: float
    worst_group: object
    best_group: object


def per_group_bd_rate(
    anchor_curves: Mapping,
    test_curves: Mapping,
    *,
    group_names: Sequence | None = None,
    method: FitMethod = "pchip",
) -> GroupBDRate:
    """Compute each group's BD-rate of the test codec against the anchor on that group's images.

    Parameters
    ----------
    anchor_curves, test_curves : mapping
        Group -> ``(bpp, metric)`` of that group's images at each rate point.
    group_names : sequence, optional
        Groups in report order. Default: the anchor's keys.
    method : {"pchip", "cubic"}
        Fit over log rate.

    Returns
    -------
    GroupBDRate
    """
    names = list(group_names) if group_names is not None else list(anchor_curves)
    missing = [name for name in names if name not in anchor_curves or name not in test_curves]
    if missing:
        raise ValueError(
            f"groups {missing} lack a curve in the anchor or the test. Both need one per group."
        )

    values = {}
    for name in names:
        anchor_bpp, anchor_metric = anchor_curves[name]
        test_bpp, test_metric = test_curves[name]
        values[name] = bd_rate(anchor_bpp, anchor_metric, test_bpp, test_metric, method=method)
    by_group = pd.Series(values, index=pd.Index(names, name="group"), name="bd_rate", dtype=np.float64)

    present = by_group.dropna()
    if present.empty:
        return GroupBDRate(by_group=by_group, gap=float("nan"), worst_group=None, best_group=None)
    return GroupBDRate(
        by_group=by_group,
        gap=float(present.max() - present.min()),
        worst_group=present.idxmax(),
        best_group=present.idxmin(),
    )
