"""Per-image tables to the rows of group_metrics.csv and gaps.csv.

The callback (every validation epoch) and evaluate.py (per codec and rate point) both
turn a per-image DataFrame into the same tidy rows, so their files read alike:

``group_metrics``: epoch, partition, group, attribute, metric, value, n, ci_low, ci_high
``gaps``:          epoch, partition, attribute, metric, gap, ratio, worst_group, best_group,
                   p_value, p_holm, mde
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairness.frame import GroupFrame

log = logging.getLogger(__name__)

GROUP_METRIC_COLUMNS = ["epoch", "partition", "group", "attribute", "metric", "value", "n", "ci_low", "ci_high"]
GAP_COLUMNS = ["epoch", "partition", "attribute", "metric", "gap", "ratio", "worst_group", "best_group",
               "p_value", "p_holm", "mde"]


@dataclass(frozen=True)
class MetricSpec:
    """Summary settings of a per-image metric: its direction and interval kind."""

    name: str
    higher_is_better: bool
    kind: str = "mean"  # "mean" (bootstrap CI) or "proportion" (Wilson CI)
    unit: str = ""


IMAGE_METRICS = {
    spec.name: spec
    for spec in (
        MetricSpec("psnr", True, unit="dB"),
        MetricSpec("psnr_decoded", True, unit="dB"),
        MetricSpec("ms_ssim", True),
        MetricSpec("bpp", False, unit="bits per pixel"),
        MetricSpec("bpp_est", False, unit="bits per pixel"),
        MetricSpec("lpips", False),
        MetricSpec("feat_dist", False),
    )
}


def summarize_metric(
    values: np.ndarray,
    groups: np.ndarray,
    group_names: Sequence[str],
    spec: MetricSpec,
    *,
    epoch: int,
    partition: str,
    attribute: str = "",
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    test: bool = False,
    test_values: np.ndarray | None = None,
) -> tuple[list[dict], dict]:
    """Return the group_metrics rows (every group plus ``all``) and the gaps row of one metric.

    ``test`` adds the permutation test of "no group difference" (p_value) and the minimum
    detectable effect at 80% power; ``test_values`` (per-image changes, e.g. correct on the
    original minus correct on the reconstruction) replaces ``values`` in the test, making it
    the paired difference-in-differences form.
    """
    frame = GroupFrame(values, groups, group_names=list(group_names),
                       higher_is_better=spec.higher_is_better, kind=spec.kind, name=spec.name)
    intervals = frame.intervals(confidence=confidence, n_resamples=n_resamples, seed=seed)
    rows = []
    for group in group_names:
        rows.append({
            "epoch": epoch, "partition": partition, "group": group, "attribute": attribute,
            "metric": spec.name, "value": float(frame.by_group[group]), "n": int(frame.n[group]),
            "ci_low": float(intervals.loc[group, "ci_low"]), "ci_high": float(intervals.loc[group, "ci_high"]),
        })
    overall_low, overall_high = _overall_interval(frame, spec, confidence, n_resamples, seed)
    rows.append({
        "epoch": epoch, "partition": partition, "group": "all", "attribute": attribute,
        "metric": spec.name, "value": frame.overall, "n": int(len(frame.values)),
        "ci_low": overall_low, "ci_high": overall_high,
    })

    gap = {
        "epoch": epoch, "partition": partition, "attribute": attribute, "metric": spec.name,
        "gap": frame.difference(), "ratio": frame.ratio(),
        "worst_group": frame.worst_group, "best_group": frame.best_group,
        "p_value": np.nan, "p_holm": np.nan, "mde": np.nan,
    }
    if test:
        gap.update(gap_test(values if test_values is None else test_values, groups, group_names,
                            n_resamples=n_resamples, seed=seed))
    return rows, gap


def _overall_interval(frame: GroupFrame, spec: MetricSpec, confidence: float, n_resamples: int, seed: int):
    from fairness.intervals import bootstrap_mean_interval, wilson_interval

    values = frame.values
    if values.size < 2:
        return float("nan"), float("nan")
    if spec.kind == "proportion":
        low, high = wilson_interval(int(round(values.sum())), int(values.size), confidence)
        return float(low), float(high)
    low, high = bootstrap_mean_interval(values, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return float(low), float(high)


def gap_test(values, groups, group_names, *, n_resamples: int, seed: int, proportion: bool = False) -> dict:
    """Return the permutation test's p-value of the gap and its minimum detectable effect.

    Only groups with at least two images take part, because scipy's permutation_test needs
    two observations per sample. The MDE (80% power) uses those groups' sizes and the
    spread of their values: the standard deviation, or the pooled rate for 0/1 outcomes
    (``proportion=True``). Both are NaN when fewer than two groups can be tested.
    """
    from fairness.hypothesis import permutation_gap_test
    from fairness.multiple import minimum_detectable_effect

    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    names, counts = np.unique(groups, return_counts=True)
    tested = names[counts >= 2]
    if len(tested) < 2:
        return {"p_value": float("nan"), "mde": float("nan")}

    result = permutation_gap_test(values, groups, group_names=list(group_names),
                                  n_resamples=n_resamples, seed=seed)
    tested_values = values[np.isin(groups, tested)]
    tested_counts = [int(c) for c in result.n.to_numpy() if c >= 2]
    if proportion:
        mde = minimum_detectable_effect(tested_counts, p=float(np.mean(tested_values)))
    else:
        sd = float(np.std(tested_values, ddof=1))
        mde = minimum_detectable_effect(tested_counts, sd=sd) if np.isfinite(sd) else float("nan")
    return {"p_value": float(result.p_value), "mde": float(mde)}


def apply_holm(gaps: pd.DataFrame) -> pd.DataFrame:
    """Fill ``p_holm`` over every tested row of one report (one family of tests)."""
    from fairness.multiple import holm

    gaps = gaps.copy()
    tested = gaps["p_value"].notna()
    if tested.any():
        gaps.loc[tested, "p_holm"] = holm(gaps.loc[tested, "p_value"].to_numpy(dtype=np.float64))
    return gaps


def summarize_image_metrics(
    per_image: pd.DataFrame,
    group_names: Sequence[str],
    metrics: Sequence[str],
    *,
    epoch: int,
    partition: str,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    test: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summarise per-image metric columns of ``per_image`` (columns ``group`` and metrics).

    Metrics whose column is missing or entirely empty are skipped; rows with an empty
    value for one metric are left out of that metric only, and its ``n`` counts only the rows used.
    """
    group_rows: list[dict] = []
    gap_rows: list[dict] = []
    for name in metrics:
        if name not in per_image.columns:
            continue
        column = pd.to_numeric(per_image[name], errors="coerce")
        present = column.notna().to_numpy()
        if not present.any():
            continue
        spec = IMAGE_METRICS.get(name, MetricSpec(name, True))
        rows, gap = summarize_metric(
            column.to_numpy()[present], per_image["group"].to_numpy()[present], group_names, spec,
            epoch=epoch, partition=partition, confidence=confidence, n_resamples=n_resamples,
            seed=seed, test=test,
        )
        group_rows.extend(rows)
        gap_rows.append(gap)
    return (pd.DataFrame(group_rows, columns=GROUP_METRIC_COLUMNS),
            pd.DataFrame(gap_rows, columns=GAP_COLUMNS))
