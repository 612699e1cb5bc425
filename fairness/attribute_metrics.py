"""Attribute fidelity: does a classifier read the same attribute from the reconstruction?

For one attribute (skin type, gender, age bin...) an attribute classifier predicts on the
original image and on its reconstruction. Per group this module computes:

``acc_orig`` (+)
    Accuracy on originals, over labelled images.
``acc_rec`` (+)
    Accuracy on reconstructions, over labelled images.
``agreement`` (+)
    Fraction of images whose prediction is unchanged by compression. It needs no labels.
``retention`` (+)
    P(correct on reconstruction | correct on original), over images correct on the original.
``degradation`` (-)
    ``acc_orig - acc_rec`` on the same labelled images.
``bal_acc_orig``, ``bal_acc_rec`` (+)
    Balanced accuracy (mean recall over the classes present in the group's labels, as
    ``sklearn.metrics.balanced_accuracy_score``), for skewed attributes.

Labels of -1 mean unknown. Those images count for ``agreement`` only, and ``n`` is
reported per metric. ``classifier_bias`` is the gap of ``acc_orig`` (the classifier's own
bias). ``compression_bias`` is the gap of ``degradation``. It is not an additive part of
the gap of ``acc_rec``, because the worst group can differ between the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fairness.frame import GroupFrame, encode_groups

UNKNOWN_LABEL = -1

METRICS = (
    "acc_orig",
    "acc_rec",
    "agreement",
    "retention",
    "degradation",
    "bal_acc_orig",
    "bal_acc_rec",
)

HIGHER_IS_BETTER = {
    "acc_orig": True,
    "acc_rec": True,
    "agreement": True,
    "retention": True,
    "degradation": False,
    "bal_acc_orig": True,
    "bal_acc_rec": True,
}

# Metrics that are the mean of one per-image value, see per_image_outcomes.
_PER_IMAGE_COLUMN = {
    "acc_orig": "correct_orig",
    "acc_rec": "correct_rec",
    "agreement": "agreement",
    "retention": "retained",
    "degradation": "degradation",
}


def _class_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one class per image, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        as_float = array.astype(np.float64)
        if np.any(~np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
            raise ValueError(f"{name} must contain integer class indices, got dtype {array.dtype}.")
    return array.astype(np.int64)


def _check_inputs(labels, pred_orig, pred_rec):
    labels_array = _class_array(labels, "labels")
    orig_array = _class_array(pred_orig, "pred_orig")
    rec_array = _class_array(pred_rec, "pred_rec")
    sizes = {labels_array.size, orig_array.size, rec_array.size}
    if len(sizes) != 1:
        raise ValueError(
            f"labels, pred_orig and pred_rec need one entry per image, got {labels_array.size}, "
            f"{orig_array.size} and {rec_array.size}."
        )
    if np.any(labels_array < UNKNOWN_LABEL):
        raise ValueError(
            f"labels must be class indices or {UNKNOWN_LABEL} for unknown, got "
            f"{int(labels_array.min())}."
        )
    return labels_array, orig_array, rec_array


def per_image_outcomes(labels, pred_orig, pred_rec) -> pd.DataFrame:
    """Compute the per-image 0/1 outcomes behind every attribute metric.

    Parameters
    ----------
    labels : array-like of int
        True class per image, -1 where unknown.
    pred_orig, pred_rec : array-like of int
        Predicted class on the original and on the reconstruction.

    Returns
    -------
    pandas.DataFrame
        One row per image, columns

        - ``labelled``: label known (bool),
        - ``correct_orig``, ``correct_rec``: 0/1, NaN where the label is unknown,
        - ``agreement``: 0/1 for every image,
        - ``degradation``: ``correct_orig - correct_rec`` (-1, 0 or 1), NaN where unknown,
        - ``retained``: ``correct_rec`` where ``correct_orig`` is 1, NaN elsewhere.

        The mean of a column over a group's non-NaN rows is that group's metric.
    """
    labels_array, orig_array, rec_array = _check_inputs(labels, pred_orig, pred_rec)
    labelled = labels_array != UNKNOWN_LABEL

    correct_orig = np.where(labelled, (orig_array == labels_array).astype(np.float64), np.nan)
    correct_rec = np.where(labelled, (rec_array == labels_array).astype(np.float64), np.nan)
    retained = np.where(correct_orig == 1.0, correct_rec, np.nan)
    return pd.DataFrame(
        {
            "labelled": labelled,
            "correct_orig": correct_orig,
            "correct_rec": correct_rec,
            "agreement": (orig_array == rec_array).astype(np.float64),
            "degradation": correct_orig - correct_rec,
            "retained": retained,
        }
    )


def attribute_group_frame(
    metric: str,
    labels,
    pred_orig,
    pred_rec,
    groups,
    group_names: Sequence | None = None,
) -> GroupFrame:
    """Build a GroupFrame of one per-image attribute metric over the images where it is defined.

    ``acc_orig``, ``acc_rec``, ``agreement`` and ``retention`` become proportions (Wilson
    intervals), ``degradation`` a mean of -1/0/1 values (bootstrap intervals). The
    balanced variants are not means of per-image values and have no frame.
    """
    outcomes = per_image_outcomes(labels, pred_orig, pred_rec)
    codes, names = encode_groups(groups, group_names)
    if codes.size != len(outcomes):
        raise ValueError(f"groups has {codes.size} entries but there are {len(outcomes)} images.")
    return _frame_from_outcomes(metric, outcomes, codes, names)


def _frame_from_outcomes(metric: str, outcomes: pd.DataFrame, codes: np.ndarray, names: list) -> GroupFrame:
    if metric not in _PER_IMAGE_COLUMN:
        raise ValueError(
            f"metric must be one of {sorted(_PER_IMAGE_COLUMN)} for a per-image frame, got {metric!r}."
        )
    column = outcomes[_PER_IMAGE_COLUMN[metric]].to_numpy()
    defined = ~np.isnan(column)
    # Pass labels, not codes: integer codes would be read as labels when the names are integers.
    name_array = np.empty(len(names), dtype=object)
    name_array[:] = names
    labels_of_images = name_array[codes[defined]]
    return GroupFrame(
        column[defined],
        labels_of_images,
        group_names=names,
        higher_is_better=HIGHER_IS_BETTER[metric],
        kind="mean" if metric == "degradation" else "proportion",
        name=metric,
    )


def _balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    # Mean recall over the classes present in labels, as sklearn's balanced_accuracy_score.
    if labels.size == 0:
        return float("nan")
    recalls = [np.mean(predictions[labels == label] == label) for label in np.unique(labels)]
    return float(np.mean(recalls))


def attribute_fidelity(
    labels,
    pred_orig,
    pred_rec,
    groups,
    group_names: Sequence | None = None,
    *,
    intervals: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed=0,
    include_overall: bool = False,
    overall_name: str = "all",
) -> pd.DataFrame:
    """Compute every attribute metric per group as a tidy table.

    Parameters
    ----------
    labels : array-like of int
        True class per image, -1 where unknown.
    pred_orig, pred_rec : array-like of int
        Predicted class on the original and on the reconstruction.
    groups : array-like
        One group per image, see :func:`fairness.frame.encode_groups`.
    group_names : sequence, optional
        All groups in report order. Empty groups get NaN values and n 0.
    intervals : bool
        Add ``ci_low`` and ``ci_high``: Wilson for the proportions, bootstrap (BCa) for
        ``degradation``. The balanced variants get NaN bounds.
    confidence, n_resamples, seed
        As in :meth:`fairness.frame.GroupFrame.intervals`.
    include_overall : bool
        Also add rows for all images pooled, with group ``overall_name``.
    overall_name : str
        Group name of the pooled rows.

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``metric``, ``value``, ``n`` (images the metric is computed
        over), and ``ci_low``, ``ci_high`` when ``intervals`` is True. Rows follow
        ``group_names`` order, then :data:`METRICS` order.
    """
    labels_array, orig_array, rec_array = _check_inputs(labels, pred_orig, pred_rec)
    codes, names = encode_groups(groups, group_names)
    if codes.size != labels_array.size:
        raise ValueError(f"groups has {codes.size} entries but there are {labels_array.size} images.")

    outcomes = per_image_outcomes(labels_array, orig_array, rec_array)
    tables = []
    for metric in _PER_IMAGE_COLUMN:
        frame = _frame_from_outcomes(metric, outcomes, codes, names)
        if intervals:
            table = frame.intervals(confidence=confidence, n_resamples=n_resamples, seed=seed)
        else:
            table = pd.DataFrame({"value": frame.by_group, "n": frame.n})
        table = table.reset_index()
        table.insert(1, "metric", metric)
        if include_overall:
            overall = {"group": overall_name, "metric": metric, "value": frame.overall, "n": frame.values.size}
            if intervals:
                pooled = GroupFrame(
                    frame.values,
                    np.full(frame.values.size, overall_name, dtype=object),
                    group_names=[overall_name],
                    kind=frame.kind,
                )
                bounds = pooled.intervals(confidence=confidence, n_resamples=n_resamples, seed=seed)
                overall["ci_low"] = bounds["ci_low"].iloc[0]
                overall["ci_high"] = bounds["ci_high"].iloc[0]
            table = pd.concat([table, pd.DataFrame([overall])], ignore_index=True)
        tables.append(table)

    labelled = labels_array != UNKNOWN_LABEL
    balanced_rows = []
    group_codes = list(enumerate(names))
    if include_overall:
        group_codes.append((None, overall_name))
    for code, name in group_codes:
        in_group = labelled if code is None else labelled & (codes == code)
        for metric, predictions in (("bal_acc_orig", orig_array), ("bal_acc_rec", rec_array)):
            row = {
                "group": name,
                "metric": metric,
                "value": _balanced_accuracy(labels_array[in_group], predictions[in_group]),
                "n": int(in_group.sum()),
            }
            if intervals:
                # NOTE: balanced accuracy is not a mean of per-image values, so neither
                # Wilson nor the mean bootstrap applies and no interval is computed.
                row["ci_low"] = np.nan
                row["ci_high"] = np.nan
            balanced_rows.append(row)
    tables.append(pd.DataFrame(balanced_rows))

    result = pd.concat(tables, ignore_index=True)
    group_order = {name: position for position, name in enumerate(names + [overall_name])}
    metric_order = {metric: position for position, metric in enumerate(METRICS)}
    result = result.sort_values(
        by=["group", "metric"],
        key=lambda column: column.map(group_order if column.name == "group" else metric_order),
        kind="stable",
    ).reset_index(drop=True)
    result["n"] = result["n"].astype(np.int64)
    return result


def metric_gap(table: pd.DataFrame, metric: str, *, overall_name: str = "all") -> dict:
    """Summarise one metric of an :func:`attribute_fidelity` table across groups.

    Returns
    -------
    dict
        ``gap`` (max - min over groups with a value), ``ratio`` (min / max, NaN when
        the maximum is 0), ``worst_group`` and ``best_group`` by the metric's direction.
        Rows of the pooled group ``overall_name`` are ignored.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}.")
    rows = table[(table["metric"] == metric) & (table["group"] != overall_name)]
    values = rows.set_index("group")["value"].dropna()
    if values.empty:
        return {"gap": np.nan, "ratio": np.nan, "worst_group": None, "best_group": None}

    group_max, group_min = float(values.max()), float(values.min())
    higher_is_better = HIGHER_IS_BETTER[metric]
    return {
        "gap": group_max - group_min,
        "ratio": np.nan if group_max == 0 else group_min / group_max,
        "worst_group": values.idxmin() if higher_is_better else values.idxmax(),
        "best_group": values.idxmax() if higher_is_better else values.idxmin(),
    }


def classifier_bias(table: pd.DataFrame) -> float:
    """Return the gap of ``acc_orig`` across groups: the classifier's own bias."""
    return metric_gap(table, "acc_orig")["gap"]


def compression_bias(table: pd.DataFrame) -> float:
    """Return the gap of ``degradation`` across groups: the bias that compression adds."""
    return metric_gap(table, "degradation")["gap"]
