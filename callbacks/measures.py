"""Plug-in measurements of the FairnessCallback: attribute fidelity and realism.

Both follow :class:`callbacks.fairness_callback.Measure`. ``batch_columns`` runs on every
rank for every validation batch and returns per-image columns. The callback gathers
those rows from all ranks and deduplicates them by ``sample_id``, then calls
``epoch_rows`` on rank 0 to turn the epoch's per-image table into group_metrics and
gaps rows. Feature vectors travel in the per-image rows (columns starting with ``_``,
which per_image.csv leaves out), so set-level metrics such as KID see every rank's images
exactly once.

:class:`ClassifierMeasure`
    Attribute predictions on originals (computed once per run, cached by
    ``sample_id``) and on reconstructions (every epoch). It scores ``acc_orig``,
    ``acc_rec``, ``agreement``, ``retention``, ``degradation`` and the balanced variants
    per group and attribute, and ``majority_rate``. It also applies a quality gate: when
    the classifier does not beat the majority-class rate on originals by a margin, its
    fidelity results are flagged.
:class:`RealismMeasure`
    Inception features of originals (cached by ``sample_id``) and of reconstructions,
    on every ``every_n_epochs``-th epoch and the last one. It scores ``feat_dist`` and
    ``lpips`` per image, ``kid`` per group and ``fid`` pooled (per group only when every
    group has ``fid_min_per_group`` images).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from fairness.attribute_metrics import (
    HIGHER_IS_BETTER,
    UNKNOWN_LABEL,
    attribute_fidelity,
    per_image_outcomes,
)
from fairness.realism import feat_dist, frechet_distance_of_features, kid, lpips_per_image
from fairness.summaries import GAP_COLUMNS, GROUP_METRIC_COLUMNS, MetricSpec, summarize_metric

log = logging.getLogger(__name__)

__all__ = ["ClassifierMeasure", "RealismMeasure", "is_realism_epoch"]

# Per-image outcome column of attribute_metrics.per_image_outcomes behind each metric.
OUTCOME_COLUMNS = {
    "acc_orig": "correct_orig",
    "acc_rec": "correct_rec",
    "agreement": "agreement",
    "retention": "retained",
    "degradation": "degradation",
}
BALANCED_METRICS = ("bal_acc_orig", "bal_acc_rec")
FEATURE_ORIG = "_feat_orig"
FEATURE_REC = "_feat_rec"


def _empty_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(columns=GROUP_METRIC_COLUMNS), pd.DataFrame(columns=GAP_COLUMNS)


def _frames(group_rows: list[dict], gap_rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.DataFrame(group_rows, columns=GROUP_METRIC_COLUMNS),
            pd.DataFrame(gap_rows, columns=GAP_COLUMNS))


def _module_device(pl_module) -> torch.device:
    return pl_module.device if pl_module is not None else torch.device("cpu")


def _set_level_rows(values: dict[str, float], counts: dict[str, int], group_names: Sequence[str], *,
                    metric: str, epoch: int, partition: str, attribute: str = "",
                    higher_is_better: bool = False) -> tuple[list[dict], dict | None]:
    """Build group_metrics rows (no intervals) and, with two or more groups valued, a gaps row."""
    rows = [
        {"epoch": epoch, "partition": partition, "group": group, "attribute": attribute, "metric": metric,
         "value": float(values.get(group, np.nan)), "n": int(counts.get(group, 0)),
         "ci_low": np.nan, "ci_high": np.nan}
        for group in list(group_names) + ["all"]
        if group in values or group in counts
    ]
    valued = pd.Series({g: values[g] for g in group_names if g in values and np.isfinite(values[g])}, dtype=float)
    if len(valued) < 2:
        return rows, None
    best, worst = (valued.idxmax(), valued.idxmin()) if higher_is_better else (valued.idxmin(), valued.idxmax())
    high = float(valued.max())
    gap = {"epoch": epoch, "partition": partition, "attribute": attribute, "metric": metric,
           "gap": high - float(valued.min()), "ratio": np.nan if high == 0 else float(valued.min()) / high,
           "worst_group": worst, "best_group": best, "p_value": np.nan, "p_holm": np.nan, "mde": np.nan}
    return rows, gap


# ---------------------------------------------------------------------------- classifier


class ClassifierMeasure:
    """Attribute fidelity of reconstructions, read by a fixed attribute classifier.

    Parameters
    ----------
    classifier
        An object with ``attributes`` (name -> label list) and ``predict(images) ->
        dict[name, LongTensor]``: an :class:`~lightning_modules.classifier.AttributeClassifier`
        or an :class:`~lightning_modules.classifier_loading.ExternalClassifier`.
    attributes : mapping
        The dataset's attribute name -> label list. Attributes both sides share are
        scored; their labels must be in the same order.
    group_names : sequence of str
        Groups in report order.
    min_margin : float
        Quality gate. An attribute's results are flagged ``classifier_below_majority``
        unless the classifier's pooled accuracy on originals exceeds the majority-class
        rate by more than this.
    confidence, n_resamples, seed, partition
        As in the FairnessCallback.
    """

    def __init__(
        self,
        classifier: Any,
        attributes: Mapping[str, Sequence[str]],
        group_names: Sequence[str],
        *,
        min_margin: float = 0.05,
        confidence: float = 0.95,
        n_resamples: int = 1000,
        seed: int = 0,
        partition: str = "val",
    ) -> None:
        shared = [name for name in attributes if name in classifier.attributes]
        if not shared:
            raise ValueError(f"the classifier predicts {sorted(classifier.attributes)}, none of the dataset's "
                             f"attributes {sorted(attributes)}")
        for name in shared:
            if list(classifier.attributes[name]) != [str(label) for label in attributes[name]]:
                raise ValueError(f"classifier labels of {name} {classifier.attributes[name]} differ from the "
                                 f"dataset's {list(attributes[name])}")
        self.classifier = classifier
        self.attributes = {name: [str(label) for label in attributes[name]] for name in shared}
        self.group_names = list(group_names)
        self.min_margin = float(min_margin)
        self.confidence = confidence
        self.n_resamples = int(n_resamples)
        self.seed = seed
        self.partition = partition
        self._original_predictions: dict[str, dict[str, int]] = {}
        self.quality: dict[str, dict[str, Any]] = {}
        self._warned: set[str] = set()

    def _predict(self, images: Tensor, device: torch.device) -> dict[str, np.ndarray]:
        if isinstance(self.classifier, nn.Module):
            self.classifier.to(device)
        predictions = self.classifier.predict(images)
        return {name: predictions[name].detach().cpu().numpy().astype(np.int64) for name in self.attributes}

    def batch_columns(self, outputs: dict[str, Any], pl_module, epoch: int) -> dict[str, Any]:
        """Return ``<a>_label``, ``<a>_pred_orig`` and ``<a>_pred_rec`` for every shared attribute."""
        device = _module_device(pl_module)
        sample_ids = [str(s) for s in outputs["sample_id"]]
        uncached = [i for i, sample_id in enumerate(sample_ids) if sample_id not in self._original_predictions]
        if uncached:
            predicted = self._predict(outputs["x"][uncached], device)
            for position, index in enumerate(uncached):
                self._original_predictions[sample_ids[index]] = {
                    name: int(predicted[name][position]) for name in self.attributes
                }
        reconstructed = self._predict(outputs["x_hat"], device)

        labels = outputs.get("attributes") or {}
        columns: dict[str, Any] = {}
        for name in self.attributes:
            if name in labels:
                columns[f"{name}_label"] = [int(v) for v in labels[name]]
            else:
                columns[f"{name}_label"] = [UNKNOWN_LABEL] * len(sample_ids)
            columns[f"{name}_pred_orig"] = [self._original_predictions[s][name] for s in sample_ids]
            columns[f"{name}_pred_rec"] = reconstructed[name].tolist()
        return columns

    def epoch_rows(self, per_image: pd.DataFrame, epoch: int, final: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Score every shared attribute per group; the gap tests run when ``final``."""
        group_rows: list[dict] = []
        gap_rows: list[dict] = []
        groups = per_image["group"].to_numpy()
        for name in self.attributes:
            if f"{name}_pred_rec" not in per_image.columns:
                continue
            labels = per_image[f"{name}_label"].to_numpy(dtype=np.int64)
            pred_orig = per_image[f"{name}_pred_orig"].to_numpy(dtype=np.int64)
            pred_rec = per_image[f"{name}_pred_rec"].to_numpy(dtype=np.int64)
            rows, gaps = self._attribute_rows(name, labels, pred_orig, pred_rec, groups, epoch, final)
            group_rows += rows
            gap_rows += gaps
        return _frames(group_rows, gap_rows)

    def _attribute_rows(self, name, labels, pred_orig, pred_rec, groups, epoch, final):
        group_rows: list[dict] = []
        gap_rows: list[dict] = []
        outcomes = per_image_outcomes(labels, pred_orig, pred_rec)
        common = {"epoch": epoch, "partition": self.partition, "attribute": name,
                  "confidence": self.confidence, "n_resamples": self.n_resamples, "seed": self.seed}

        for metric, column in OUTCOME_COLUMNS.items():
            values = outcomes[column].to_numpy(dtype=np.float64)
            defined = ~np.isnan(values)
            if not defined.any():
                continue
            spec = MetricSpec(metric, HIGHER_IS_BETTER[metric], kind="mean" if metric == "degradation" else "proportion")
            # degradation is correct_orig - correct_rec per image, so its gap test is the
            # paired difference-in-differences test behind compression_bias.
            rows, gap = summarize_metric(values[defined], groups[defined], self.group_names, spec, test=final,
                                         **common)
            group_rows += rows
            gap_rows.append(gap)

        balanced = attribute_fidelity(labels, pred_orig, pred_rec, groups, self.group_names, intervals=False,
                                      include_overall=True)
        for metric in BALANCED_METRICS:
            table = balanced[balanced["metric"] == metric].set_index("group")
            values = table["value"].to_dict()
            counts = table["n"].to_dict()
            rows, gap = _set_level_rows(values, counts, self.group_names, metric=metric, epoch=epoch,
                                        partition=self.partition, attribute=name, higher_is_better=True)
            group_rows += rows
            if gap is not None:
                gap_rows.append(gap)

        group_rows += self._majority_rows(name, labels, groups, epoch)
        self.quality[name] = self._quality_gate(name, outcomes, labels, groups)
        return group_rows, gap_rows

    def _majority_rows(self, name: str, labels: np.ndarray, groups: np.ndarray, epoch: int) -> list[dict]:
        from lightning_modules.classifier import majority_rate

        rows = []
        for group in self.group_names + ["all"]:
            mask = labels != UNKNOWN_LABEL
            if group != "all":
                mask &= groups == group
            rows.append({"epoch": epoch, "partition": self.partition, "group": group, "attribute": name,
                         "metric": "majority_rate", "value": majority_rate(labels[mask]), "n": int(mask.sum()),
                         "ci_low": np.nan, "ci_high": np.nan})
        return rows

    def _quality_gate(self, name: str, outcomes: pd.DataFrame, labels: np.ndarray, groups: np.ndarray) -> dict:
        from lightning_modules.classifier import majority_rate

        labelled = labels != UNKNOWN_LABEL
        accuracy = float(outcomes["correct_orig"][labelled].mean()) if labelled.any() else float("nan")
        floor = majority_rate(labels)
        passes = bool(np.isfinite(accuracy) and accuracy > floor + self.min_margin)
        below = []
        for group in self.group_names:
            in_group = labelled & (groups == group)
            if in_group.any() and outcomes["correct_orig"][in_group].mean() <= majority_rate(labels[in_group]):
                below.append(group)
        if not passes and name not in self._warned:
            self._warned.add(name)
            log.warning(
                "classifier accuracy on originals for %s is %.3f, not above the majority rate %.3f by %.3f; "
                "its fidelity results are flagged classifier_below_majority", name, accuracy, floor, self.min_margin,
            )
        return {"acc_orig": accuracy, "majority_rate": floor, "required_margin": self.min_margin,
                "passes": passes, "groups_below_majority": below}

    def summary_flags(self) -> dict[str, dict[str, Any]]:
        """Return per-attribute flags for fairness_summary.json entries."""
        return {name: {"classifier_below_majority": not quality["passes"]} for name, quality in self.quality.items()}

    def summary_extra(self) -> dict[str, Any]:
        """Return the quality gate's numbers for fairness_summary.json."""
        return {"classifier_quality": self.quality}

    def unavailable(self) -> dict[str, str]:
        return {}


# ---------------------------------------------------------------------------- realism


def is_realism_epoch(epoch: int, every_n_epochs: int, final: bool) -> bool:
    """Return True when realism runs: on every ``every_n_epochs``-th epoch (0: never) and the last."""
    return final or (every_n_epochs > 0 and (epoch + 1) % every_n_epochs == 0)


class RealismMeasure:
    """Feature distance, KID, FID and LPIPS of reconstructions, per group.

    Parameters
    ----------
    extractor : nn.Module or None
        Maps ``[B, 3, H, W]`` images in [0, 1] to ``[B, d]`` features
        (:func:`fairness.realism.load_inception`, or a small fixed module in tests).
        None makes ``feat_dist``, ``kid`` and ``fid`` unavailable.
    group_names : sequence of str
    every_n_epochs : int
        Realism runs every n epochs and at the last epoch; 0 runs it at the last only.
    fid_min_per_group : int
        FID per group only when every group has at least this many images; pooled FID
        always.
    kid_subset_size, kid_subsets : int
        KID subsets (the size is capped by each group's n).
    lpips_model : nn.Module or None
        From :func:`fairness.realism.load_lpips`; None makes ``lpips`` unavailable.
    unavailable_reasons : mapping, optional
        Metric -> why it is unavailable, for fairness_summary.json.
    """

    def __init__(
        self,
        extractor: nn.Module | None,
        group_names: Sequence[str],
        *,
        every_n_epochs: int = 1,
        fid_min_per_group: int = 200,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        seed: int = 0,
        lpips_model: nn.Module | None = None,
        partition: str = "val",
        unavailable_reasons: Mapping[str, str] | None = None,
    ) -> None:
        if every_n_epochs < 0:
            raise ValueError(f"realism_every_n_epochs must be >= 0, got {every_n_epochs}")
        self.extractor = extractor.eval() if extractor is not None else None
        self.group_names = list(group_names)
        self.every_n_epochs = int(every_n_epochs)
        self.fid_min_per_group = int(fid_min_per_group)
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self.seed = seed
        self.lpips_model = lpips_model.eval() if lpips_model is not None else None
        self.partition = partition
        self._original_features: dict[str, np.ndarray] = {}
        self._unavailable = dict(unavailable_reasons or {})
        if self.extractor is None:
            for metric in ("feat_dist", "kid", "fid"):
                self._unavailable.setdefault(metric, "no InceptionV3 weights")
        if self.lpips_model is None:
            self._unavailable.setdefault("lpips", "no LPIPS backbone weights")

    def _features(self, images: Tensor, device: torch.device) -> np.ndarray:
        self.extractor.to(device)
        with torch.no_grad():
            features = self.extractor(images.to(device=device, dtype=torch.float32))
        return features.reshape(features.shape[0], -1).detach().cpu().float().numpy()

    def batch_columns(self, outputs: dict[str, Any], pl_module, epoch: int) -> dict[str, Any]:
        """Return ``feat_dist``, ``lpips`` and the feature columns on realism epochs, else nothing."""
        final = True
        if pl_module is not None and getattr(pl_module, "_trainer", None) is not None:
            from callbacks.fairness_callback import is_final_epoch

            final = is_final_epoch(pl_module.trainer)
        if not is_realism_epoch(epoch, self.every_n_epochs, final):
            return {}

        device = _module_device(pl_module)
        columns: dict[str, Any] = {}
        if self.extractor is not None:
            sample_ids = [str(s) for s in outputs["sample_id"]]
            uncached = [i for i, sample_id in enumerate(sample_ids) if sample_id not in self._original_features]
            if uncached:
                computed = self._features(outputs["x"][uncached], device)
                for position, index in enumerate(uncached):
                    self._original_features[sample_ids[index]] = computed[position]
            original = np.stack([self._original_features[s] for s in sample_ids])
            reconstructed = self._features(outputs["x_hat"], device)
            columns["feat_dist"] = feat_dist(original, reconstructed).tolist()
            columns[FEATURE_ORIG] = list(original)
            columns[FEATURE_REC] = list(reconstructed)
        if self.lpips_model is not None:
            self.lpips_model.to(device)
            columns["lpips"] = lpips_per_image(self.lpips_model, outputs["x"].to(device),
                                               outputs["x_hat"].to(device)).cpu().tolist()
        return columns

    def epoch_rows(self, per_image: pd.DataFrame, epoch: int, final: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Compute ``kid`` per group and pooled, and ``fid`` pooled (per group when every group is large)."""
        if FEATURE_REC not in per_image.columns:
            return _empty_frames()
        present = per_image[FEATURE_REC].map(lambda v: isinstance(v, np.ndarray)).to_numpy()
        if not present.any():
            return _empty_frames()
        frame = per_image.loc[present]
        original = np.stack(frame[FEATURE_ORIG].to_list()).astype(np.float64)
        reconstructed = np.stack(frame[FEATURE_REC].to_list()).astype(np.float64)
        groups = frame["group"].to_numpy()

        group_rows: list[dict] = []
        gap_rows: list[dict] = []
        kid_values, counts = {}, {}
        for group in self.group_names:
            mask = groups == group
            counts[group] = int(mask.sum())
            if counts[group] == 0:
                continue
            kid_values[group] = kid(original[mask], reconstructed[mask], self.kid_subset_size, self.kid_subsets,
                                    self.seed, paired=True).mean
        counts["all"] = int(len(groups))
        kid_values["all"] = kid(original, reconstructed, self.kid_subset_size, self.kid_subsets, self.seed,
                                paired=True).mean
        rows, gap = _set_level_rows(kid_values, counts, self.group_names, metric="kid", epoch=epoch,
                                    partition=self.partition)
        group_rows += rows
        if gap is not None:
            gap_rows.append(gap)

        group_rows += self._fid_rows(original, reconstructed, groups, counts, epoch, gap_rows)
        return _frames(group_rows, gap_rows)

    def _fid_rows(self, original, reconstructed, groups, counts, epoch, gap_rows) -> list[dict]:
        fid_values = {"all": frechet_distance_of_features(original, reconstructed)}
        group_counts = [counts.get(group, 0) for group in self.group_names]
        if min(group_counts) >= self.fid_min_per_group:
            for group in self.group_names:
                mask = groups == group
                fid_values[group] = frechet_distance_of_features(original[mask], reconstructed[mask])
        rows, gap = _set_level_rows(fid_values, {"all": counts["all"]} if len(fid_values) == 1 else counts,
                                    self.group_names, metric="fid", epoch=epoch, partition=self.partition)
        if gap is not None:
            gap_rows.append(gap)
        return rows

    def summary_flags(self) -> dict[str, dict[str, Any]]:
        return {}

    def summary_extra(self) -> dict[str, Any]:
        return {"realism": {"fid_min_per_group": self.fid_min_per_group, "kid_subset_size": self.kid_subset_size,
                            "kid_subsets": self.kid_subsets, "every_n_epochs": self.every_n_epochs}}

    def unavailable(self) -> dict[str, str]:
        """Return metric -> reason for the metrics this measure cannot compute."""
        return dict(self._unavailable)

