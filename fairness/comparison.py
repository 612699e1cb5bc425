"""Compare two runs (two trainings, or two codecs) group by group at matched bpp.

Both sides must be scored on the same images (the same ``sample_id``), as evaluate.py
does on a data set's test partition. For each metric and group the comparison

1. draws each side's group curve: the group mean metric against the group mean bpp at
   each of the side's rate points (per-image values averaged over training seeds first);
2. picks common bpp points inside the range that every group curve of both sides covers
   (evenly spaced in log(bpp)) and interpolates each image's value there, linearly in
   log(bpp) with its group curve's weights. A group's mean of these per-image values is
   exactly its interpolated curve;
3. reports the per-group difference (side A - side B) with a paired bootstrap CI over
   images. It then tests whether the difference depends on the group, by shuffling group
   labels and recomputing the gap of the group mean differences
   (:func:`fairness.hypothesis.paired_gap_test`). This difference-in-differences cancels
   whatever makes one group's faces easier for both sides;
4. Holm-corrects all those tests together.

With a single rate point on either side, or curves that share no bpp range, the rate
points are paired by rank (lowest rate first) and compared directly. The bpp of the two
sides then differ, and the table shows by how much.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fairness.hypothesis import paired_gap_test
from fairness.intervals import bootstrap_mean_interval
from fairness.ladder import PER_IMAGE_METRICS, attribute_names, higher_is_better
from fairness.multiple import DEFAULT_MIN_GROUP_SIZE, holm, minimum_detectable_effect
from fairness.rate_matching import common_bpp_points

log = logging.getLogger(__name__)

__all__ = [
    "COMPARISON_COLUMNS",
    "ComparisonResult",
    "QUALITY_COLUMNS",
    "classifier_quality",
    "compare_runs",
    "interpolation_weights",
    "select_codec",
]

COMPARISON_COLUMNS = [
    "kind", "attribute", "metric", "mode", "group", "bpp", "pair", "bpp_a", "bpp_b", "value_a", "value_b",
    "difference", "ci_low", "ci_high", "n", "sd_a", "sd_b", "p_value", "p_holm", "mde", "worst_group",
    "best_group", "underpowered",
]
"""Columns of comparison.csv. ``kind`` is ``group`` for one group's difference (``all`` for
every image), or ``did`` for the difference-in-differences test across groups. In a
``did`` row, ``difference`` is the gap of the group mean differences, ``worst_group`` the
group where side A fares worst relative to side B, and ``best_group`` where it fares best."""

# Attribute outcomes compared per image: 1 when correct on the reconstruction
# (unlabelled images left out), and 1 when the prediction is unchanged by compression.
ATTRIBUTE_OUTCOMES = ("acc_rec", "agreement")
_RATE_METRICS = ("bpp", "bpp_est")


@dataclass
class ComparisonResult:
    """Everything comparison.md and comparison.csv show.

    Attributes
    ----------
    table : pandas.DataFrame
        Rows with :data:`COMPARISON_COLUMNS`.
    curves : pandas.DataFrame
        ``side``, ``attribute``, ``metric``, ``group``, ``rate_point``, ``bpp``, ``value``:
        each side's group means per rate point, for the plots.
    names : (str, str)
        Display names of side A and side B.
    codecs : (str, str)
        The codec compared on each side.
    n_seeds : (int, int)
        Training seeds averaged per side.
    rate_points : (list, list)
        Each side's rate points, lowest bpp first.
    n_images : pandas.Series
        Paired images per group.
    notes : list of str
        Caveats for the report (dropped images, direct comparisons).
    quality : pandas.DataFrame
        Classifier quality gate per side and attribute (:data:`QUALITY_COLUMNS`); the
        caller fills it, because the training-time flags live in the run folders.
    """

    table: pd.DataFrame
    curves: pd.DataFrame
    names: tuple[str, str]
    codecs: tuple[str, str]
    n_seeds: tuple[int, int]
    rate_points: tuple[list[str], list[str]]
    n_images: pd.Series
    notes: list[str] = field(default_factory=list)
    quality: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QUALITY_COLUMNS))


QUALITY_COLUMNS = ["side", "check", "attribute", "acc_orig", "majority_rate", "required_margin", "passes"]
"""Columns of a classifier quality-gate table. ``check`` names where the gate ran (the
training-time fairness callback or evaluate.py on its partition); ``passes`` is False when
the classifier's pooled accuracy on originals does not exceed the majority-class rate by
``required_margin``, so that attribute's results are not trustworthy."""


def classifier_quality(per_image: pd.DataFrame, *, min_margin: float = 0.05, side: str = "",
                       check: str = "evaluate.py") -> pd.DataFrame:
    """Apply the classifier quality gate to the originals of an evaluate.py per-image table.

    The gate of the training-time fairness callback: an attribute passes when the
    classifier's pooled accuracy on the labelled originals exceeds the share of the most
    common label (the accuracy of always predicting it) by more than ``min_margin``.
    Each image counts once, whatever the number of codec instances.

    Returns
    -------
    pandas.DataFrame
        One row per attribute with :data:`QUALITY_COLUMNS`.
    """
    images = per_image.drop_duplicates("sample_id")
    rows = []
    for attribute in attribute_names(per_image):
        labels = pd.to_numeric(images[f"{attribute}_label"], errors="coerce")
        predictions = pd.to_numeric(images[f"{attribute}_pred_orig"], errors="coerce")
        labelled = labels.notna() & (labels >= 0)
        if not labelled.any():
            continue
        accuracy = float((predictions[labelled] == labels[labelled]).mean())
        majority = float(labels[labelled].value_counts(normalize=True).max())
        rows.append({"side": side, "check": check, "attribute": attribute, "acc_orig": accuracy,
                     "majority_rate": majority, "required_margin": float(min_margin),
                     "passes": bool(accuracy > majority + min_margin)})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def select_codec(per_image: pd.DataFrame, codec: str | None = None, *, side: str = "") -> tuple[pd.DataFrame, str]:
    """Return the rows of one codec. With ``codec=None`` the table must contain exactly one.

    Raises
    ------
    ValueError
        When ``codec`` is absent, or None while several codecs are present; the
        message lists the codecs.
    """
    codecs = list(dict.fromkeys(per_image["codec"].astype(str)))
    label = f" of {side}" if side else ""
    if codec is None:
        if len(codecs) != 1:
            raise ValueError(
                f"the per-image table{label} contains codecs {codecs}; choose one with compare_codecs=[A_CODEC,B_CODEC]"
            )
        codec = codecs[0]
    if codec not in codecs:
        raise ValueError(f"codec {codec!r} is not in the per-image table{label}, which contains {codecs}")
    return per_image[per_image["codec"].astype(str) == codec].copy(), codec


def interpolation_weights(bpp: np.ndarray, target: float) -> np.ndarray | None:
    """Return weights over rate points that interpolate linearly in log(bpp) at ``target``.

    ``values @ weights`` equals :func:`fairness.rate_matching.interpolate_at_bpp` of
    ``(bpp, values)`` at ``target``, including its averaging of rate points with equal
    bpp. None when ``target`` lies outside ``[min(bpp), max(bpp)]``.
    """
    log_bpp = np.log(np.asarray(bpp, dtype=np.float64))
    unique, inverse, counts = np.unique(log_bpp, return_inverse=True, return_counts=True)
    log_target = float(np.log(target))
    if log_target < unique[0] or log_target > unique[-1]:
        return None

    unique_weights = np.zeros(unique.size)
    if unique.size == 1:
        unique_weights[0] = 1.0
    else:
        right = int(np.clip(np.searchsorted(unique, log_target, side="right"), 1, unique.size - 1))
        fraction = (log_target - unique[right - 1]) / (unique[right] - unique[right - 1])
        unique_weights[right - 1] = 1.0 - fraction
        unique_weights[right] = fraction
    return unique_weights[inverse] / counts[inverse]


@dataclass
class _Side:
    name: str
    codec: str
    rate_points: list[str]          # lowest bpp first
    values: dict[str, pd.DataFrame]  # metric key -> [sample_id x rate_point], seed-averaged
    seed_values: dict[str, dict[str, pd.DataFrame]]  # seed -> metric key -> same layout
    bpp: pd.DataFrame                # [sample_id x rate_point], seed-averaged
    seed_bpp: dict[str, pd.DataFrame]
    n_seeds: int


def _outcome_columns(per_image: pd.DataFrame) -> pd.DataFrame:
    frame = per_image.copy()
    for attribute in attribute_names(per_image):
        label = pd.to_numeric(frame[f"{attribute}_label"], errors="coerce").fillna(-1)
        pred_orig = pd.to_numeric(frame[f"{attribute}_pred_orig"], errors="coerce")
        pred_rec = pd.to_numeric(frame[f"{attribute}_pred_rec"], errors="coerce")
        frame[f"{attribute}/acc_rec"] = np.where(label >= 0, (pred_rec == label).astype(float), np.nan)
        frame[f"{attribute}/agreement"] = (pred_rec == pred_orig).astype(float)
    return frame


def _metric_keys(per_image: pd.DataFrame) -> list[str]:
    keys = [m for m in PER_IMAGE_METRICS if m in per_image.columns
            and pd.to_numeric(per_image[m], errors="coerce").notna().any()]
    for attribute in attribute_names(per_image):
        keys += [f"{attribute}/{outcome}" for outcome in ATTRIBUTE_OUTCOMES]
    return keys


def _build_side(name: str, codec: str, per_image: pd.DataFrame, sample_ids: list[str], keys: list[str]) -> _Side:
    frame = _outcome_columns(per_image)
    frame = frame[frame["sample_id"].isin(sample_ids)]
    frame = frame.assign(seed=frame["seed"].fillna("").astype(str))
    for key in [*keys, "bpp"]:
        frame[key] = pd.to_numeric(frame[key], errors="coerce")

    def wide(rows: pd.DataFrame, key: str) -> pd.DataFrame:
        table = rows.pivot_table(index="sample_id", columns="rate_point", values=key, aggfunc="mean", dropna=False)
        return table.reindex(index=sample_ids)

    bpp = wide(frame, "bpp")
    order = bpp.mean(axis=0).sort_values().index.tolist()
    seeds = sorted(frame["seed"].unique())
    seed_frames = {seed: frame[frame["seed"] == seed] for seed in seeds}
    return _Side(
        name=name, codec=codec, rate_points=order,
        values={key: wide(frame, key).reindex(columns=order) for key in keys},
        seed_values={seed: {key: wide(rows, key).reindex(columns=order) for key in keys}
                     for seed, rows in seed_frames.items()},
        bpp=bpp.reindex(columns=order),
        seed_bpp={seed: wide(rows, "bpp").reindex(columns=order) for seed, rows in seed_frames.items()},
        n_seeds=len(seeds),
    )


def compare_runs(
    per_image_a: pd.DataFrame,
    per_image_b: pd.DataFrame,
    group_names: Sequence[str],
    *,
    names: tuple[str, str] = ("A", "B"),
    codecs: tuple[str | None, str | None] = (None, None),
    n_points: int = 5,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
) -> ComparisonResult:
    """Compare side A with side B per group and metric, at matched bpp where possible.

    Parameters
    ----------
    per_image_a, per_image_b : pandas.DataFrame
        evaluate.py per-image tables (``codec``, ``rate_point``, ``seed``, ``sample_id``,
        ``group``, ``bpp`` and metric columns).
    group_names : sequence of str
        Groups in report order.
    names : (str, str)
        Display names of the two sides.
    codecs : (str or None, str or None)
        Codec to take from each table; None when the table contains one codec.
    n_points : int
        Matched bpp points per metric.
    confidence, n_resamples, seed
        Bootstrap CIs and permutation tests.
    min_group_size : int
        Rows whose smallest group has fewer paired images are flagged underpowered.

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ValueError
        When the two sides share no image.
    """
    rows_a, codec_a = select_codec(per_image_a, codecs[0], side=names[0])
    rows_b, codec_b = select_codec(per_image_b, codecs[1], side=names[1])
    notes: list[str] = []

    ids_a, ids_b = set(rows_a["sample_id"].astype(str)), set(rows_b["sample_id"].astype(str))
    shared = sorted(ids_a & ids_b)
    if not shared:
        raise ValueError(
            f"{names[0]} and {names[1]} share no sample_id, so they were not scored on the same images; "
            "evaluate both on the same data set, partition and data.eval_seed"
        )
    if len(shared) < max(len(ids_a), len(ids_b)):
        notes.append(f"Only the {len(shared)} images scored by both sides are compared "
                     f"({names[0]} has {len(ids_a)}, {names[1]} has {len(ids_b)}).")
    group_of = (pd.concat([rows_a, rows_b]).drop_duplicates("sample_id").set_index("sample_id")["group"]
                .astype(str).reindex(shared))
    groups = group_of.to_numpy()

    keys = [key for key in _metric_keys(rows_a) if key in set(_metric_keys(rows_b))]
    side_a = _build_side(names[0], codec_a, rows_a, shared, keys)
    side_b = _build_side(names[1], codec_b, rows_b, shared, keys)
    n_images = pd.Series(groups).value_counts().reindex(list(group_names), fill_value=0).astype(int)

    stats = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    records: list[dict] = []
    curves: list[dict] = []
    for key in keys:
        attribute, metric = key.split("/") if "/" in key else ("", key)
        curves += _curve_rows(side_a, key, groups, group_names, attribute, metric)
        curves += _curve_rows(side_b, key, groups, group_names, attribute, metric)
        targets = _matched_targets(side_a, side_b, key, groups, group_names, n_points)
        if targets is not None and metric not in _RATE_METRICS:
            records += _matched_rows(side_a, side_b, key, attribute, metric, targets, groups, group_names, stats)
        elif targets is None:
            records += _direct_rows(side_a, side_b, key, attribute, metric, groups, group_names, stats)
    if any(record["mode"] == "direct" for record in records):
        notes.append(
            "Some metrics are compared directly at paired rate points (lowest rate first) because a side has "
            "one rate point or the curves share no bpp range; bpp_a and bpp_b show how far the rates differ."
        )

    table = pd.DataFrame(records).reindex(columns=COMPARISON_COLUMNS) if records else pd.DataFrame(
        columns=COMPARISON_COLUMNS)
    table["underpowered"] = [bool((n_images[n_images.index.isin(group_names)] < min_group_size).any())] * len(table)
    tested = (table["kind"] == "did") & table["p_value"].notna()
    if tested.any():
        table.loc[tested, "p_holm"] = holm(table.loc[tested, "p_value"].to_numpy(dtype=np.float64))

    return ComparisonResult(
        table=table, curves=pd.DataFrame(curves), names=names, codecs=(codec_a, codec_b),
        n_seeds=(side_a.n_seeds, side_b.n_seeds), rate_points=(side_a.rate_points, side_b.rate_points),
        n_images=n_images, notes=notes,
    )


def _group_curve(side: _Side, values: pd.DataFrame, bpp: pd.DataFrame, mask: np.ndarray):
    # Group mean bpp and metric per rate point, over the images with a value for this metric.
    defined = values.notna().all(axis=1).to_numpy() & mask
    if not defined.any():
        return None, None, defined
    return (bpp.to_numpy()[defined].mean(axis=0), values.to_numpy()[defined].mean(axis=0), defined)


def _curve_rows(side: _Side, key: str, groups, group_names, attribute: str, metric: str) -> list[dict]:
    rows = []
    for group in group_names:
        bpp, values, _ = _group_curve(side, side.values[key], side.bpp, groups == group)
        if bpp is None:
            continue
        for rate_point, x, y in zip(side.rate_points, bpp, values):
            rows.append({"side": side.name, "attribute": attribute, "metric": metric, "group": group,
                         "rate_point": rate_point, "bpp": float(x), "value": float(y)})
    return rows


def _matched_targets(side_a: _Side, side_b: _Side, key: str, groups, group_names, n_points: int):
    if len(side_a.rate_points) < 2 or len(side_b.rate_points) < 2:
        return None
    ranges = {}
    for side in (side_a, side_b):
        for group in group_names:
            bpp, _, _ = _group_curve(side, side.values[key], side.bpp, groups == group)
            if bpp is not None:
                ranges[(side.name, group)] = bpp
    if not ranges:
        return None
    try:
        return common_bpp_points(ranges, n_points=n_points)
    except ValueError:
        return None


def _interpolated(side: _Side, values: pd.DataFrame, bpp: pd.DataFrame, groups, group, target: float):
    # Per-image values of one group at the target bpp, with that group's curve weights.
    curve_bpp, _, defined = _group_curve(side, values, bpp, groups == group)
    if curve_bpp is None:
        return None, defined
    weights = interpolation_weights(curve_bpp, target)
    if weights is None:
        return None, defined
    return values.to_numpy()[defined] @ weights, defined


def _seed_spread(side: _Side, key: str, groups, group, target: float | None, column: int | None) -> float:
    if side.n_seeds < 2:
        return float("nan")
    means = []
    for seed, values in side.seed_values.items():
        values = values[key]
        if target is not None:
            per_image, _ = _interpolated(side, values, side.seed_bpp[seed], groups, group, target)
            if per_image is not None and per_image.size:
                means.append(float(per_image.mean()))
        else:
            mask = groups == group
            column_values = values.to_numpy()[mask, column]
            column_values = column_values[np.isfinite(column_values)]
            if column_values.size:
                means.append(float(column_values.mean()))
    return float(np.std(means, ddof=1)) if len(means) >= 2 else float("nan")


def _paired_rows(values_a: np.ndarray, values_b: np.ndarray, image_groups: np.ndarray, group_names,
                 base: dict, stats: dict, group_extra: dict) -> list[dict]:
    rows = []
    difference = values_a - values_b
    direction = higher_is_better(base["metric"])
    means = {}
    for group in [*group_names, "all"]:
        mask = np.ones(difference.size, dtype=bool) if group == "all" else image_groups == group
        if not mask.any():
            continue
        low, high = bootstrap_mean_interval(difference[mask], stats["confidence"], stats["n_resamples"],
                                            stats["seed"])
        if group != "all":
            means[group] = float(difference[mask].mean())
        rows.append({**base, "kind": "group", "group": group, "value_a": float(values_a[mask].mean()),
                     "value_b": float(values_b[mask].mean()), "difference": float(difference[mask].mean()),
                     "ci_low": low, "ci_high": high, "n": int(mask.sum()), **group_extra.get(group, {})})

    if len(means) >= 2:
        result = paired_gap_test(values_a, values_b, image_groups, group_names=list(group_names),
                                 n_resamples=stats["n_resamples"], seed=stats["seed"])
        counts = [int(count) for count in result.n.to_numpy() if count > 0]
        spread = float(np.std(difference, ddof=1)) if difference.size > 1 else float("nan")
        by_group = pd.Series(means)
        # Worst: the group where side A fares worst relative to side B, by the metric's direction.
        worst, best = (by_group.idxmin(), by_group.idxmax()) if direction else (by_group.idxmax(), by_group.idxmin())
        rows.append({**base, "kind": "did", "group": "gap", "difference": float(result.statistic),
                     "n": int(difference.size), "p_value": float(result.p_value),
                     "mde": minimum_detectable_effect(counts, sd=spread) if np.isfinite(spread) else np.nan,
                     "worst_group": worst, "best_group": best})
    return rows


def _matched_rows(side_a, side_b, key, attribute, metric, targets, groups, group_names, stats) -> list[dict]:
    rows = []
    for target in targets:
        parts_a, parts_b, part_groups, extra = [], [], [], {}
        for group in group_names:
            values_a, defined_a = _interpolated(side_a, side_a.values[key], side_a.bpp, groups, group, target)
            values_b, defined_b = _interpolated(side_b, side_b.values[key], side_b.bpp, groups, group, target)
            if values_a is None or values_b is None:
                continue
            # Keep images with a value on both sides (attribute outcomes skip unlabelled images).
            ids_a = np.flatnonzero(defined_a)
            ids_b = np.flatnonzero(defined_b)
            both = np.intersect1d(ids_a, ids_b)
            parts_a.append(values_a[np.isin(ids_a, both)])
            parts_b.append(values_b[np.isin(ids_b, both)])
            part_groups.append(np.full(both.size, group, dtype=object))
            extra[group] = {"sd_a": _seed_spread(side_a, key, groups, group, target, None),
                            "sd_b": _seed_spread(side_b, key, groups, group, target, None)}
        if not parts_a:
            continue
        base = {"attribute": attribute, "metric": metric, "mode": "matched", "bpp": float(target)}
        rows += _paired_rows(np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(part_groups),
                             group_names, base, stats, extra)
    return rows


def _direct_rows(side_a, side_b, key, attribute, metric, groups, group_names, stats) -> list[dict]:
    rows = []
    values_a_all = side_a.values[key].to_numpy()
    values_b_all = side_b.values[key].to_numpy()
    for pair in range(min(len(side_a.rate_points), len(side_b.rate_points))):
        values_a = values_a_all[:, pair]
        values_b = values_b_all[:, pair]
        defined = np.isfinite(values_a) & np.isfinite(values_b)
        if not defined.any():
            continue
        extra = {}
        for group in [*group_names, "all"]:
            mask = np.ones(groups.size, dtype=bool) if group == "all" else groups == group
            extra[group] = {
                "bpp_a": float(np.nanmean(side_a.bpp.to_numpy()[mask, pair])) if mask.any() else np.nan,
                "bpp_b": float(np.nanmean(side_b.bpp.to_numpy()[mask, pair])) if mask.any() else np.nan,
            }
            if group != "all":
                extra[group]["sd_a"] = _seed_spread(side_a, key, groups, group, None, pair)
                extra[group]["sd_b"] = _seed_spread(side_b, key, groups, group, None, pair)
        base = {"attribute": attribute, "metric": metric, "mode": "direct", "pair": pair + 1,
                "bpp_a": extra["all"]["bpp_a"], "bpp_b": extra["all"]["bpp_b"]}
        rows += _paired_rows(values_a[defined], values_b[defined], groups[defined], group_names, base, stats,
                             extra)
    return rows
