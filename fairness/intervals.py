"""Confidence intervals for one group: Wilson for proportions, bootstrap for means.

Both functions return ``(ci_low, ci_high)``. An interval that cannot be estimated is
``(nan, nan)``, never an exception, so that a report can show the gap in its table.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)

BootstrapMethod = Literal["BCa", "percentile", "basic"]

# Upper bound on resampled elements held in memory at once by scipy.stats.bootstrap.
# The BCa jackknife alone needs n * (n - 1) elements without a batch size.
_MAX_BOOTSTRAP_ELEMENTS = 4_000_000


def finite_values(values, name: str = "values") -> np.ndarray:
    """Convert ``values`` to a 1-D float64 array and reject NaN and infinity.

    Parameters
    ----------
    values : array-like
        One number per image.
    name : str
        Name of the argument, used in the error message.

    Returns
    -------
    numpy.ndarray
        A new 1-D float64 array.

    Raises
    ------
    ValueError
        If ``values`` is not 1-D or contains NaN or infinity. The message gives the
        number of bad entries and the position of the first one.
    """
    array = np.array(values, dtype=np.float64)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with one number per image, got shape {array.shape}."
        )

    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite entries (NaN or inf). The first "
            f"is at position {first} (value {array[first]}). Drop or fix those images "
            "before computing group statistics."
        )
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}.")


def wilson_interval(successes, n, confidence: float = 0.95):
    """Compute the Wilson score interval for a binomial proportion.

    The interval is the set of proportions p that a two-sided score test at level
    ``1 - confidence`` does not reject (Wilson, 1927, JASA 22:209). It stays inside
    [0, 1] and keeps close to nominal coverage at small n and near 0 or 1, where the
    Wald interval fails.

    Parameters
    ----------
    successes : int or array-like of int
        Number of successes (for example correctly classified images).
    n : int or array-like of int
        Number of trials. Where ``n`` is 0 the interval is NaN.
    confidence : float
        Confidence level in (0, 1).

    Returns
    -------
    tuple
        ``(ci_low, ci_high)`` as floats for scalar input, else as float64 arrays
        broadcast from ``successes`` and ``n``.
    """
    _check_confidence(confidence)
    successes_array = np.asarray(successes, dtype=np.float64)
    n_array = np.asarray(n, dtype=np.float64)
    if np.any(n_array < 0) or np.any(successes_array < 0) or np.any(successes_array > n_array):
        raise ValueError(
            f"Wilson interval needs 0 <= successes <= n, got successes={successes} and n={n}."
        )

    z = stats.norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        proportion = successes_array / n_array
        denominator = 1.0 + z**2 / n_array
        center = (proportion + z**2 / (2.0 * n_array)) / denominator
        half_width = (
            z
            * np.sqrt(proportion * (1.0 - proportion) / n_array + z**2 / (4.0 * n_array**2))
            / denominator
        )

    # The bound is exactly 0 at 0 successes and exactly 1 at n, which rounding misses.
    low = np.where(successes_array == 0, 0.0, np.clip(center - half_width, 0.0, 1.0))
    high = np.where(successes_array == n_array, 1.0, np.clip(center + half_width, 0.0, 1.0))
    low = np.where(n_array == 0, np.nan, low)
    high = np.where(n_array == 0, np.nan, high)

    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def bootstrap_mean_interval(
    values,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed=0,
    method: BootstrapMethod = "BCa",
):
    """Compute a bootstrap confidence interval for the mean with scipy.stats.bootstrap.

    The default is the bias-corrected and accelerated (BCa) interval, which corrects
    the percentile interval for skew and for the bias of the bootstrap distribution.
    Per-image PSNR, bpp and LPIPS are often skewed.

    Parameters
    ----------
    values : array-like
        One finite number per image.
    confidence : float
        Confidence level in (0, 1).
    n_resamples : int
        Number of bootstrap resamples.
    seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Passed to ``numpy.random.default_rng``. The same seed gives the same
        resamples as ``scipy.stats.bootstrap(..., rng=numpy.random.default_rng(seed))``.
    method : {"BCa", "percentile", "basic"}
        Interval method of scipy.stats.bootstrap.

    Returns
    -------
    tuple of float
        ``(ci_low, ci_high)``. It is ``(nan, nan)`` with fewer than 2 values and
        ``(v, v)`` when all values equal ``v``: the bootstrap distribution is then a
        single point, where scipy's BCa interval is undefined.
    """
    _check_confidence(confidence)
    if method not in ("BCa", "percentile", "basic"):
        raise ValueError(f"method must be 'BCa', 'percentile' or 'basic', got {method!r}.")
    array = finite_values(values)
    if array.size < 2:
        return float("nan"), float("nan")
    if np.all(array == array[0]):
        return float(array[0]), float(array[0])

    batch = None
    if array.size * max(n_resamples, array.size) > _MAX_BOOTSTRAP_ELEMENTS:
        batch = max(1, _MAX_BOOTSTRAP_ELEMENTS // array.size)

    result = stats.bootstrap(
        (array,),
        np.mean,
        n_resamples=n_resamples,
        batch=batch,
        vectorized=True,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval

    if not (np.isfinite(low) and np.isfinite(high)):
        # BCa is undefined when the resamples are nearly all equal (a two-valued
        # sample of size 2, say). The percentile interval of the same resamples is not.
        logger.warning(
            "BCa interval undefined for %d values with few distinct values, so the "
            "percentile interval of the same resamples is used.",
            array.size,
        )
        result = stats.bootstrap(
            (array,),
            np.mean,
            n_resamples=0,
            vectorized=True,
            confidence_level=confidence,
            method="percentile",
            bootstrap_result=result,
        )
        low, high = result.confidence_interval
    return float(low), float(high)
