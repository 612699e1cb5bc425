"""Per-image rows of many codecs and rates to summary.csv, gaps.csv and matched-rate tables.

evaluate.py scores every codec instance (one codec at one rate point, one training seed)
on the same images. This module turns the resulting per-image table into two tables.

``summary``
    One row per (instance, group, attribute, metric) with value, n and a 95% CI.
``gaps``
    One row per (instance, attribute, metric) with gap, ratio, worst and best group. It
    also has the permutation test of "no group difference", its Holm-adjusted p-value,
    the minimum detectable effect and the simultaneous (max-T) interval of the
    worst-versus-best difference.

It also adds across-seed rows (``seed="mean"``: mean over seeds with the across-seed SD) for
every configuration trained with several seeds. Per-group BD-rates against an anchor
codec and gaps at matched bpp come from the summary.

Classifier bias (``acc_orig``) does not depend on the codec, so it is summarised and
tested once, under the pseudo-codec ``original``, and not repeated for every instance.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fairness.attribute_metrics import HIGHER_IS_BETTER as ATTRIBUTE_HIGHER_IS_BETTER
from fairness.attribute_metrics import attribute_fidelity, metric_gap, per_image_outcomes
from fairness.hypothesis import pairwise_max_t
from fairness.multiple import DEFAULT_MIN_GROUP_SIZE
from fairness.rate_matching import common_bpp_points, interpolate_at_bpp, per_group_bd_rate
from fairness.summaries import IMAGE_METRICS, apply_holm, gap_test, summarize_image_metrics

log = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTE_GAP_METRICS",
    "GAPS_COLUMNS",
    "INSTANCE_COLUMNS",
    "ORIGINAL_CODEC",
    "PER_IMAGE_METRICS",
    "SEED_MEAN",
    "SUMMARY_COLUMNS",
    "aggregate_seeds",
    "attribute_names",
    "group_bd_rates",
    "group_counts",
    "higher_is_better",
    "instance_table",
    "matched_gaps",
    "read_per_image",
    "representative_rows",
    "summarize_ladder",
]

INSTANCE_COLUMNS = ["codec", "rate_point", "quality", "lmbda", "seed"]
"""Columns that identify one codec instance in every evaluate.py table."""

SUMMARY_COLUMNS = [
    "codec", "rate_point", "quality", "lmbda", "bpp_mean", "group", "attribute", "metric",
    "value", "n", "ci_low", "ci_high", "seed", "n_seeds", "seed_sd",
]
GAPS_COLUMNS = [
    "codec", "rate_point", "quality", "lmbda", "bpp_mean", "epoch", "partition", "attribute",
    "metric", "gap", "ratio", "worst_group", "best_group", "p_value", "p_holm", "mde",
    "seed", "n_seeds", "gap_sd", "worst_best_low", "worst_best_high", "underpowered",
]

PER_IMAGE_METRICS = ("psnr", "ms_ssim", "bpp", "bpp_est", "lpips", "feat_dist")
"""Per-image metric columns of per_image.csv, in report order."""

SET_METRICS = {"fid": False, "kid": False}
"""Set-level realism metrics and their direction (lower is better)."""

ATTRIBUTE_GAP_METRICS = ("acc_rec", "agreement", "degradation")
"""Attribute metrics drawn against bpp in the report."""

ORIGINAL_CODEC = "original"
"""Pseudo-codec under which the classifier's accuracy on the originals is reported."""

SEED_MEAN = "mean"
"""``seed`` value of rows that average a configuration over its training seeds."""

# Attribute metrics that describe the originals only, summarised once per report.
_ORIGINAL_ONLY = ("acc_orig", "bal_acc_orig")
# Attribute metrics that are means of per-image 0/1 (or -1/0/1) outcomes, so they can be
# tested by shuffling group labels.
_OUTCOME_COLUMN = {
    "acc_orig": "correct_orig",
    "acc_rec": "correct_rec",
    "agreement": "agreement",
    "retention": "retained",
    "degradation": "degradation",
}


def higher_is_better(metric: str) -> bool:
    """Return the direction of any metric evaluate.py reports (image, attribute, set level)."""
    if metric in IMAGE_METRICS:
        return IMAGE_METRICS[metric].higher_is_better
    if metric in ATTRIBUTE_HIGHER_IS_BETTER:
        return ATTRIBUTE_HIGHER_IS_BETTER[metric]
    if metric in SET_METRICS:
        return SET_METRICS[metric]
    if metric == "bd_rate":
        return False
    raise KeyError(f"unknown metric {metric!r}; add its direction to fairness.ladder")


def attribute_names(per_image: pd.DataFrame) -> list[str]:
    """Return the attributes with ``<a>_label``, ``<a>_pred_orig`` and ``<a>_pred_rec`` columns."""
    names = []
    for column in per_image.columns:
        if column.endswith("_pred_rec"):
            name = column[: -len("_pred_rec")]
            if f"{name}_label" in per_image.columns and f"{name}_pred_orig" in per_image.columns:
                names.append(name)
    return names


def read_per_image(path) -> pd.DataFrame:
    """Read an evaluate.py per_image.csv, keeping codec, rate point, seed and ids as text."""
    text_columns = {"codec": str, "rate_point": str, "seed": str, "sample_id": str, "group": str}
    frame = pd.read_csv(path, dtype=text_columns)
    frame["seed"] = frame["seed"].fillna("") if "seed" in frame.columns else ""
    return frame


def _instance_keys(per_image: pd.DataFrame) -> pd.DataFrame:
    # One row per instance, in first-appearance order, with its descriptive columns.
    keys = per_image[INSTANCE_COLUMNS].copy()
    keys["seed"] = keys["seed"].fillna("").astype(str)
    return keys.drop_duplicates(["codec", "rate_point", "seed"]).reset_index(drop=True)


def _instance_rows(per_image: pd.DataFrame, codec: str, rate_point: str, seed: str) -> pd.DataFrame:
    seeds = per_image["seed"].fillna("").astype(str)
    mask = (per_image["codec"] == codec) & (per_image["rate_point"] == rate_point) & (seeds == seed)
    return per_image.loc[mask.to_numpy()]


def instance_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Return one row per codec instance: its key columns, image count, mean bpp and epoch."""
    rows = []
    for _, key in _instance_keys(per_image).iterrows():
        rows_of = _instance_rows(per_image, key["codec"], key["rate_point"], key["seed"])
        bpp = pd.to_numeric(rows_of.get("bpp"), errors="coerce") if "bpp" in rows_of else pd.Series(dtype=float)
        epoch = rows_of["epoch"].iloc[0] if "epoch" in rows_of.columns and len(rows_of) else np.nan
        rows.append({**key.to_dict(), "n_images": len(rows_of),
                     "bpp_mean": float(bpp.mean()) if bpp.notna().any() else np.nan, "epoch": epoch})
    return pd.DataFrame(rows, columns=[*INSTANCE_COLUMNS, "n_images", "bpp_mean", "epoch"])


def summarize_ladder(
    per_image: pd.DataFrame,
    group_names: Sequence[str],
    *,
    set_metrics: pd.DataFrame | None = None,
    partition: str = "test",
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summarise every codec instance of ``per_image`` per group, with tests.

    Parameters
    ----------
    per_image : pandas.DataFrame
        evaluate.py's per-image table: the instance columns (``codec``, ``rate_point``,
        ``quality``, ``lmbda``, ``seed``), ``sample_id``, ``group``, metric columns and
        ``<a>_label``, ``<a>_pred_orig``, ``<a>_pred_rec`` per attribute.
    group_names : sequence of str
        All groups in report order.
    set_metrics : pandas.DataFrame, optional
        Set-level rows (FID, KID) with the instance columns plus ``group``, ``metric``,
        ``value`` and ``n``. Their gaps are reported without a test, because they have
        no per-image values to shuffle.
    partition : str
        Written to the ``partition`` column of gaps.
    min_group_size : int
        Gap rows whose smallest group has fewer images are flagged ``underpowered``.
    confidence, n_resamples, seed
        Confidence level, bootstrap and permutation resamples, and their seed.

    Returns
    -------
    summary, gaps : pandas.DataFrame
        With columns :data:`SUMMARY_COLUMNS` and :data:`GAPS_COLUMNS`. Every tested row
        gets ``p_holm`` from one Holm correction over all tests of the report.
    """
    summary_parts: list[pd.DataFrame] = []
    gap_parts: list[pd.DataFrame] = []
    stats = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    attributes = attribute_names(per_image)

    instances = instance_table(per_image)
    for _, instance in instances.iterrows():
        rows = _instance_rows(per_image, instance["codec"], instance["rate_point"], instance["seed"])
        groups_frame, gaps_frame = _summarize_instance(rows, group_names, attributes, partition, stats)
        _stamp(groups_frame, instance)
        _stamp(gaps_frame, instance)
        summary_parts.append(groups_frame)
        gap_parts.append(gaps_frame)

    if attributes and not instances.empty:
        original_groups, original_gaps = _summarize_originals(per_image, instances.iloc[0], group_names,
                                                              attributes, partition, stats)
        summary_parts.append(original_groups)
        gap_parts.append(original_gaps)

    if set_metrics is not None and not set_metrics.empty:
        set_groups, set_gaps = _summarize_set_metrics(set_metrics, instances, group_names, partition)
        summary_parts.append(set_groups)
        gap_parts.append(set_gaps)

    summary = _concat(summary_parts, SUMMARY_COLUMNS)
    gaps = _concat(gap_parts, GAPS_COLUMNS)
    summary["n_seeds"] = 1
    gaps["n_seeds"] = 1
    gaps["underpowered"] = [_underpowered(summary, gap, min_group_size) for _, gap in gaps.iterrows()]

    return summary, apply_holm(gaps)


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def _stamp(frame: pd.DataFrame, instance: pd.Series) -> None:
    for column in [*INSTANCE_COLUMNS, "bpp_mean"]:
        frame[column] = instance[column]
    if "epoch" in frame.columns:
        frame["epoch"] = instance["epoch"]


def _summarize_instance(
    rows: pd.DataFrame, group_names: Sequence[str], attributes: list[str], partition: str, stats: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = [name for name in PER_IMAGE_METRICS if name in rows.columns]
    group_rows, gap_rows = summarize_image_metrics(
        rows, group_names, metrics, epoch=0, partition=partition, test=True, **stats
    )
    gap_rows = _add_worst_best_intervals(gap_rows, rows, group_names, stats)

    for attribute in attributes:
        extra_groups, extra_gaps = _summarize_attribute(rows, attribute, group_names, partition, stats,
                                                        metrics=_codec_attribute_metrics())
        group_rows = pd.concat([group_rows, extra_groups], ignore_index=True)
        gap_rows = pd.concat([gap_rows, extra_gaps], ignore_index=True)
    return group_rows.drop(columns=["epoch", "partition"]), gap_rows


def _codec_attribute_metrics() -> list[str]:
    return ["acc_rec", "agreement", "retention", "degradation", "bal_acc_rec"]


def _add_worst_best_intervals(gap_rows: pd.DataFrame, rows: pd.DataFrame, group_names: Sequence[str],
                              stats: dict) -> pd.DataFrame:
    # Simultaneous max-T interval of the worst-versus-best difference, which (unlike a
    # percentile bootstrap interval of max - min) can cover 0 when there is no gap.
    gap_rows = gap_rows.copy()
    gap_rows["worst_best_low"] = np.nan
    gap_rows["worst_best_high"] = np.nan
    for index, gap in gap_rows.iterrows():
        column = pd.to_numeric(rows[gap["metric"]], errors="coerce")
        present = column.notna().to_numpy()
        low, high = _worst_best_interval(column.to_numpy()[present], rows["group"].to_numpy()[present],
                                         group_names, higher_is_better(gap["metric"]), stats)
        gap_rows.loc[index, ["worst_best_low", "worst_best_high"]] = [low, high]
    return gap_rows


def _worst_best_interval(values, groups, group_names, direction: bool, stats: dict) -> tuple[float, float]:
    if len(values) < 4 or len(set(groups)) < 2:
        return np.nan, np.nan
    # NOTE: with 0/1 outcomes in small groups a resample can have zero standard error and
    # so an infinite t. The critical value is then infinite, and the interval is reported
    # as unavailable (NaN) rather than as infinitely wide.
    with np.errstate(invalid="ignore", divide="ignore"):
        result = pairwise_max_t(values, groups, group_names=list(group_names), higher_is_better=direction,
                                confidence=stats["confidence"], n_resamples=stats["n_resamples"],
                                seed=stats["seed"])
    low, high = float(result.worst_vs_best["ci_low"]), float(result.worst_vs_best["ci_high"])
    if not (np.isfinite(low) and np.isfinite(high)):
        return np.nan, np.nan
    return low, high


def _summarize_attribute(
    rows: pd.DataFrame,
    attribute: str,
    group_names: Sequence[str],
    partition: str,
    stats: dict,
    *,
    metrics: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = rows[f"{attribute}_label"].fillna(-1).to_numpy(dtype=np.int64)
    pred_orig = rows[f"{attribute}_pred_orig"].fillna(-1).to_numpy(dtype=np.int64)
    pred_rec = rows[f"{attribute}_pred_rec"].fillna(-1).to_numpy(dtype=np.int64)
    groups = rows["group"].to_numpy()

    table = attribute_fidelity(labels, pred_orig, pred_rec, groups, list(group_names), intervals=True,
                               confidence=stats["confidence"], n_resamples=stats["n_resamples"],
                               seed=stats["seed"], include_overall=True)
    table = table[table["metric"].isin(metrics)].copy()
    table["attribute"] = attribute

    outcomes = per_image_outcomes(labels, pred_orig, pred_rec)
    gap_rows = []
    for metric in metrics:
        summary = metric_gap(table, metric)
        row = {"partition": partition, "attribute": attribute, "metric": metric, **summary,
               "p_value": np.nan, "p_holm": np.nan, "mde": np.nan,
               "worst_best_low": np.nan, "worst_best_high": np.nan}
        if metric in _OUTCOME_COLUMN:
            values = outcomes[_OUTCOME_COLUMN[metric]].to_numpy()
            defined = ~np.isnan(values)
            row.update(_permutation_row(values[defined], groups[defined], group_names, metric, stats))
            low, high = _worst_best_interval(values[defined], groups[defined], group_names,
                                             ATTRIBUTE_HIGHER_IS_BETTER[metric], stats)
            row["worst_best_low"], row["worst_best_high"] = low, high
        gap_rows.append(row)
    return table, pd.DataFrame(gap_rows)


def _permutation_row(values: np.ndarray, groups: np.ndarray, group_names, metric: str, stats: dict) -> dict:
    # Degradation is a mean of -1/0/1 changes; the other outcomes are 0/1 proportions.
    return gap_test(values, groups, group_names, n_resamples=stats["n_resamples"], seed=stats["seed"],
                    proportion=metric != "degradation")


def _summarize_originals(per_image: pd.DataFrame, first: pd.Series, group_names, attributes, partition,
                         stats) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Predictions on the originals are the same for every instance; take the first.
    rows = _instance_rows(per_image, first["codec"], first["rate_point"], first["seed"])
    group_parts, gap_parts = [], []
    for attribute in attributes:
        groups_frame, gaps_frame = _summarize_attribute(rows, attribute, group_names, partition, stats,
                                                        metrics=list(_ORIGINAL_ONLY))
        group_parts.append(groups_frame)
        gap_parts.append(gaps_frame)
    groups_frame = pd.concat(group_parts, ignore_index=True)
    gaps_frame = pd.concat(gap_parts, ignore_index=True)
    for frame in (groups_frame, gaps_frame):
        frame["codec"] = ORIGINAL_CODEC
        frame["rate_point"] = ""
        frame["seed"] = ""
    return groups_frame, gaps_frame


def _summarize_set_metrics(set_metrics: pd.DataFrame, instances: pd.DataFrame, group_names,
                           partition: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = set_metrics.copy()
    frame["seed"] = frame["seed"].fillna("").astype(str)
    for column in ("ci_low", "ci_high", "attribute"):
        if column not in frame.columns:
            frame[column] = np.nan if column != "attribute" else ""
    bpp_of = {(row.codec, row.rate_point, row.seed): row.bpp_mean for row in instances.itertuples()}
    frame["bpp_mean"] = [bpp_of.get((row.codec, row.rate_point, row.seed), np.nan) for row in frame.itertuples()]

    gap_rows = []
    for (codec, rate_point, seed, metric), rows in frame.groupby(["codec", "rate_point", "seed", "metric"],
                                                                 sort=False):
        per_group = rows[rows["group"].isin(group_names)].set_index("group")["value"].dropna()
        if len(per_group) < 2:
            continue
        direction = higher_is_better(metric)
        first = rows.iloc[0]
        gap_rows.append({
            "codec": codec, "rate_point": rate_point, "quality": first["quality"], "lmbda": first["lmbda"],
            "seed": seed, "bpp_mean": first["bpp_mean"], "partition": partition, "attribute": "",
            "metric": metric, "gap": float(per_group.max() - per_group.min()),
            "ratio": float(per_group.min() / per_group.max()) if per_group.max() != 0 else np.nan,
            "worst_group": per_group.idxmax() if not direction else per_group.idxmin(),
            "best_group": per_group.idxmin() if not direction else per_group.idxmax(),
            "p_value": np.nan, "p_holm": np.nan, "mde": np.nan,
        })
    return frame, pd.DataFrame(gap_rows)


def _underpowered(summary: pd.DataFrame, gap: pd.Series, min_group_size: int) -> bool:
    rows = summary[(summary["codec"] == gap["codec"]) & (summary["rate_point"] == gap["rate_point"])
                   & (summary["seed"].astype(str) == str(gap["seed"]))
                   & (summary["metric"] == gap["metric"])
                   & (summary["attribute"].fillna("") == (gap["attribute"] if isinstance(gap["attribute"], str) else ""))
                   & (summary["group"] != "all")]
    counts = pd.to_numeric(rows["n"], errors="coerce").dropna()
    return bool(counts.empty or (counts < min_group_size).any())


# ---------------------------------------------------------------------------- seeds


def aggregate_seeds(summary: pd.DataFrame, gaps: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Append across-seed rows for every configuration evaluated with several seeds.

    A configuration is one (codec, rate_point). Its ``seed="mean"`` rows hold the mean
    over seeds of each group value and of each gap, ``seed_sd`` / ``gap_sd`` the
    across-seed standard deviation (ddof 1) and ``n_seeds`` the number of seeds. The
    per-seed rows stay, so nothing is averaged away. Across-seed rows have no CI and
    no test: the seeds share the test images, so their spread measures training
    randomness only.
    """
    summary = summary.copy()
    gaps = gaps.copy()
    per_seed = summary[(summary["seed"].astype(str) != "") & (summary["seed"].astype(str) != SEED_MEAN)]
    if per_seed.empty:
        return summary, gaps

    seeds_per_config = per_seed.groupby(["codec", "rate_point"], sort=False)["seed"].nunique()
    configs = seeds_per_config[seeds_per_config >= 2].index
    if len(configs) == 0:
        return summary, gaps

    new_summary, new_gaps = [], []
    for codec, rate_point in configs:
        rows = per_seed[(per_seed["codec"] == codec) & (per_seed["rate_point"] == rate_point)]
        n_seeds = rows["seed"].nunique()
        keys = ["group", "attribute", "metric"]
        rows = rows.assign(attribute=rows["attribute"].fillna(""))
        grouped = rows.groupby(keys, sort=False)
        values = grouped["value"].agg(["mean", "std"]).reset_index()
        first = rows.iloc[0]
        for _, value in values.iterrows():
            new_summary.append({
                "codec": codec, "rate_point": rate_point, "quality": first["quality"], "lmbda": first["lmbda"],
                "bpp_mean": float(rows.drop_duplicates("seed")["bpp_mean"].mean()),
                "group": value["group"], "attribute": value["attribute"], "metric": value["metric"],
                "value": value["mean"], "n": int(grouped.get_group(tuple(value[keys]))["n"].min()),
                "ci_low": np.nan, "ci_high": np.nan, "seed": SEED_MEAN, "n_seeds": n_seeds,
                "seed_sd": value["std"],
            })

        gap_rows = gaps[(gaps["codec"] == codec) & (gaps["rate_point"] == rate_point)
                        & (gaps["seed"].astype(str) != SEED_MEAN)]
        gap_rows = gap_rows.assign(attribute=gap_rows["attribute"].fillna(""))
        averaged = pd.DataFrame(new_summary)
        averaged = averaged[(averaged["codec"] == codec) & (averaged["rate_point"] == rate_point)]
        for (attribute, metric), group_gaps in gap_rows.groupby(["attribute", "metric"], sort=False):
            by_group = averaged[(averaged["attribute"] == attribute) & (averaged["metric"] == metric)
                                & (averaged["group"] != "all")].set_index("group")["value"].dropna()
            direction = higher_is_better(metric)
            first_gap = group_gaps.iloc[0]
            new_gaps.append({
                "codec": codec, "rate_point": rate_point, "quality": first_gap["quality"],
                "lmbda": first_gap["lmbda"], "bpp_mean": float(group_gaps["bpp_mean"].mean()),
                "epoch": np.nan, "partition": first_gap["partition"], "attribute": attribute, "metric": metric,
                "gap": float(group_gaps["gap"].mean()), "ratio": float(group_gaps["ratio"].mean()),
                "worst_group": _extreme(by_group, worst=True, direction=direction),
                "best_group": _extreme(by_group, worst=False, direction=direction),
                "p_value": np.nan, "p_holm": np.nan, "mde": np.nan, "seed": SEED_MEAN,
                "n_seeds": int(group_gaps["seed"].nunique()), "gap_sd": float(group_gaps["gap"].std(ddof=1)),
                "worst_best_low": np.nan, "worst_best_high": np.nan,
                "underpowered": bool(group_gaps["underpowered"].any()),
            })

    summary = pd.concat([summary, pd.DataFrame(new_summary)], ignore_index=True).reindex(columns=SUMMARY_COLUMNS)
    gaps = pd.concat([gaps, pd.DataFrame(new_gaps)], ignore_index=True).reindex(columns=GAPS_COLUMNS)
    return summary, gaps


def _extreme(by_group: pd.Series, *, worst: bool, direction: bool):
    if by_group.empty:
        return None
    if worst == direction:
        return by_group.idxmin()
    return by_group.idxmax()


def representative_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row set per configuration: the across-seed mean where it exists, else the single seed."""
    seeds = frame["seed"].fillna("").astype(str)
    has_mean = set(map(tuple, frame.loc[seeds == SEED_MEAN, ["codec", "rate_point"]].to_numpy().tolist()))
    keep = [
        seed == SEED_MEAN or (codec, rate_point) not in has_mean
        for codec, rate_point, seed in zip(frame["codec"], frame["rate_point"], seeds)
    ]
    return frame.loc[keep]


# ---------------------------------------------------------------------------- matched rates


def _group_curves(summary: pd.DataFrame, codec: str, metric: str, group_names: Sequence[str],
                  attribute: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = representative_rows(summary[summary["codec"] == codec])
    rows = rows[rows["attribute"].fillna("") == attribute]
    bpp = rows[rows["metric"] == "bpp"].set_index(["rate_point", "group"])["value"]
    values = rows[rows["metric"] == metric].set_index(["rate_point", "group"])["value"]
    curves = {}
    for group in [*group_names, "all"]:
        points = [(bpp.get((rate_point, group)), values.get((rate_point, group)))
                  for rate_point in rows["rate_point"].unique()]
        points = [(b, v) for b, v in points if b is not None and v is not None
                  and np.isfinite(b) and np.isfinite(v) and b > 0]
        if points:
            curves[group] = (np.array([b for b, _ in points]), np.array([v for _, v in points]))
    return curves


def matched_gaps(summary: pd.DataFrame, group_names: Sequence[str], metrics: Sequence[str],
                 *, n_points: int = 5) -> pd.DataFrame:
    """Gap between groups at matched bpp, per codec with at least two rate points.

    Each group's metric is interpolated over log(bpp), where bpp is that group's own
    mean bpp at each rate point, to common points inside the range every group covers.
    At a fixed quality or lambda the groups spend different bpp, so this gap separates
    "the codec treats a group worse" from "the group's faces cost more bits".

    Returns
    -------
    pandas.DataFrame
        Columns ``codec``, ``metric``, ``bpp``, one column per group, ``gap``,
        ``worst_group``, ``best_group``. Codecs whose group curves share no bpp range
        are left out with a log message.
    """
    rows = []
    for codec in summary["codec"].unique():
        if codec == ORIGINAL_CODEC:
            continue
        for metric in metrics:
            curves = _group_curves(summary, codec, metric, group_names)
            curves = {group: curve for group, curve in curves.items() if group != "all"}
            if len(curves) < 2 or min(curve[0].size for curve in curves.values()) < 2:
                continue
            try:
                targets = common_bpp_points(curves, n_points=n_points)
            except ValueError as error:
                log.info("No matched-bpp gap for %s %s: %s", codec, metric, error)
                continue
            direction = higher_is_better(metric)
            for target in targets:
                by_group = pd.Series({group: float(interpolate_at_bpp(*curve, target)[0])
                                      for group, curve in curves.items()}).dropna()
                if len(by_group) < 2:
                    continue
                rows.append({"codec": codec, "metric": metric, "bpp": float(target), **by_group.to_dict(),
                             "gap": float(by_group.max() - by_group.min()),
                             "worst_group": _extreme(by_group, worst=True, direction=direction),
                             "best_group": _extreme(by_group, worst=False, direction=direction)})
    columns = ["codec", "metric", "bpp", *group_names, "gap", "worst_group", "best_group"]
    return pd.DataFrame(rows).reindex(columns=columns) if rows else pd.DataFrame(columns=columns)


def group_bd_rates(summary: pd.DataFrame, group_names: Sequence[str], anchor: str, *,
                   metric: str = "psnr") -> pd.DataFrame:
    """Per-group BD-rate (percent) of every codec against ``anchor``, on each group's own images.

    Each curve is (group mean bpp, group mean ``metric``) over the codec's rate points,
    the across-seed mean where a configuration has several seeds. The fit is PCHIP over
    log rate (:func:`fairness.rate_matching.bd_rate`), which needs two rate points per
    curve. Negative means the codec needs fewer bits than the anchor for the same quality.

    Returns
    -------
    pandas.DataFrame
        Columns ``codec``, ``anchor``, ``metric``, ``group`` (each group, then ``all``),
        ``bd_rate``. A gap row per codec has group ``gap`` and lists the worst group in
        ``note``. NaN where the two curves do not overlap in ``metric``.
    """
    columns = ["codec", "anchor", "metric", "group", "bd_rate", "note"]
    anchor_curves = _group_curves(summary, anchor, metric, group_names)
    if not anchor_curves:
        return pd.DataFrame(columns=columns)
    rows = []
    for codec in summary["codec"].unique():
        if codec in (anchor, ORIGINAL_CODEC):
            continue
        test_curves = _group_curves(summary, codec, metric, group_names)
        names = [group for group in [*group_names, "all"]
                 if group in test_curves and group in anchor_curves]
        usable = [group for group in names
                  if test_curves[group][0].size >= 2 and anchor_curves[group][0].size >= 2]
        if not usable:
            rows.append({"codec": codec, "anchor": anchor, "metric": metric, "group": "all",
                         "bd_rate": np.nan, "note": "needs at least two rate points per codec"})
            continue
        result = per_group_bd_rate({g: anchor_curves[g] for g in usable}, {g: test_curves[g] for g in usable},
                                   group_names=usable)
        for group, value in result.by_group.items():
            rows.append({"codec": codec, "anchor": anchor, "metric": metric, "group": group,
                         "bd_rate": float(value),
                         "note": "" if np.isfinite(value) else f"no {metric} overlap with the anchor"})
        per_group = result.by_group.drop("all", errors="ignore").dropna()
        if len(per_group) >= 2:
            rows.append({"codec": codec, "anchor": anchor, "metric": metric, "group": "gap",
                         "bd_rate": float(per_group.max() - per_group.min()),
                         "note": f"worst group {per_group.idxmax()}, best {per_group.idxmin()}"})
    return pd.DataFrame(rows, columns=columns)


def group_counts(per_image: pd.DataFrame, group_names: Sequence[str]) -> pd.Series:
    """Return the number of distinct images per group (each image counted once)."""
    unique = per_image.drop_duplicates("sample_id")
    return unique["group"].value_counts().reindex(list(group_names), fill_value=0).astype(int)

