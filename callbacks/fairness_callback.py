"""FairnessCallback: per-group rate, distortion and fidelity after every validation epoch.

The codec module logs only overall values; this callback alone computes and logs
per-group metrics (``val/<metric>/<group>``, ``val/fair/<metric>_gap``), so names never
collide. Per-image values are gathered from every rank and deduplicated by ``sample_id``
before anything is summarised, so the numbers do not depend on the number of processes
(a DistributedSampler pads the last batch with repeated images, which are dropped here).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from datamodules.groups import identifier
from fairness.image_metrics import ms_ssim_per_image, ms_ssim_scales, psnr_per_image
from fairness.multiple import underpowered
from fairness.summaries import (
    GAP_COLUMNS,
    GROUP_METRIC_COLUMNS,
    IMAGE_METRICS,
    apply_holm,
    summarize_image_metrics,
)

log = logging.getLogger(__name__)

# Every rank logs the same broadcast values, so Lightning's advice to reduce them with
# sync_dist=True does not apply, and a reduction could change them by a rounding error.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level.*")

PER_IMAGE_COLUMNS = ["epoch", "sample_id", "group", "psnr", "ms_ssim", "bpp", "bpp_est", "lpips", "feat_dist"]
# Gaps with a name of their own: the classifier's own bias and the bias compression adds.
NAMED_GAPS = {"acc_orig": "classifier_bias", "degradation": "compression_bias"}
# Set-level metrics whose pooled value is logged as val/<metric>.
POOLED_LOGGED = ("fid", "kid")


class Measure(Protocol):
    """A per-image measurement the callback runs on every validation batch.

    ``batch_columns`` returns per-image columns (name -> sequence, one entry per image of
    the batch). Columns whose name starts with ``_`` (feature vectors) travel with the
    gathered rows but stay out of per_image.csv. ``epoch_rows`` may add set-level rows
    (FID, KID) once the epoch's per-image table is complete. It runs on rank 0 only,
    after gathering.

    Optional methods, read when fairness_summary.json is written: ``summary_flags()``
    returns attribute -> extra flags for that attribute's entries, ``summary_extra()``
    returns top-level keys, and ``unavailable()`` returns metric -> reason for metrics
    the measure cannot compute (missing weights).
    """

    def batch_columns(self, outputs: dict[str, Any], pl_module: L.LightningModule, epoch: int) -> dict[str, Any]: ...

    def epoch_rows(self, per_image: pd.DataFrame, epoch: int, final: bool) -> tuple[pd.DataFrame, pd.DataFrame]: ...


class FairnessCallback(L.Callback):
    """Compute group-wise codec metrics each validation epoch and write the run files.

    Parameters
    ----------
    run_dir:
        Where group_metrics.csv, gaps.csv, per_image.csv and fairness_summary.json go.
    group_names:
        Groups in report order (the datamodule's ``group_names``).
    per_image_every_n_epochs:
        Also write per_image.csv rows every n epochs; 0 writes only the last epoch.
    min_group_size:
        Groups with fewer images are flagged underpowered in fairness_summary.json.
    measures:
        Further per-image measurements (classifier fidelity, realism features).
    """

    def __init__(
        self,
        run_dir: str | Path,
        group_names: list[str],
        *,
        per_image_every_n_epochs: int = 0,
        min_group_size: int = 100,
        confidence: float = 0.95,
        n_resamples: int = 1000,
        seed: int = 0,
        measures: list[Measure] | None = None,
        partition: str = "val",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.group_names = list(group_names)
        self.per_image_every_n_epochs = int(per_image_every_n_epochs)
        self.min_group_size = int(min_group_size)
        self.confidence = confidence
        self.n_resamples = int(n_resamples)
        self.seed = seed
        self.measures = list(measures or [])
        self.partition = partition
        self._rows: list[dict[str, Any]] = []
        self._ms_ssim_warned = False
        self.last_summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ collection

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or outputs is None:
            return
        self._rows.extend(self.image_rows(outputs, pl_module, trainer.current_epoch))

    def image_rows(self, outputs: dict[str, Any], pl_module: L.LightningModule | None, epoch: int) -> list[dict]:
        """Return one dict per image of a validation batch with its per-image metrics."""
        x = outputs["x"].float()
        x_hat = outputs["x_hat"].float()
        height, width = x.shape[-2:]
        columns: dict[str, Any] = {
            "sample_id": list(outputs["sample_id"]),
            "group": [self.group_names[int(g)] for g in outputs["group"]],
            "psnr": psnr_per_image(x, x_hat).tolist(),
            "bpp_est": outputs["bpp_est"].float().tolist(),
        }
        if min(height, width) >= _min_ms_ssim_side():
            columns["ms_ssim"] = ms_ssim_per_image(x, x_hat).tolist()
        elif not self._ms_ssim_warned:
            log.warning("MS-SSIM skipped: %dx%d images are below its minimum side", height, width)
            self._ms_ssim_warned = True
        if outputs.get("bits") is not None:
            columns["bpp"] = (outputs["bits"].double() / float(height * width)).tolist()
        if outputs.get("x_hat_decoded") is not None:
            columns["psnr_decoded"] = psnr_per_image(x, outputs["x_hat_decoded"].float()).tolist()
        for measure in self.measures:
            columns.update(measure.batch_columns(outputs, pl_module, epoch))

        n = len(columns["sample_id"])
        return [{name: values[i] for name, values in columns.items()} for i in range(n)]

    # ------------------------------------------------------------------ epoch end

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        rows = _gather_rows(self._rows)
        final = is_final_epoch(trainer)
        epoch = int(trainer.current_epoch)

        logged: dict[str, float] = {}
        if trainer.is_global_zero:
            logged = self.summarize_epoch(rows, epoch, final)
        logged = _broadcast(logged)
        for name, value in logged.items():
            pl_module.log(name, value, sync_dist=False, on_epoch=True, on_step=False)

    def summarize_epoch(self, rows: list[dict[str, Any]], epoch: int, final: bool) -> dict[str, float]:
        """Write this epoch's rows of the run files and return the values to log."""
        per_image = _dedupe(pd.DataFrame(rows))
        if per_image.empty:
            log.warning("validation epoch %d produced no images; nothing to summarise", epoch)
            return {}
        per_image.insert(0, "epoch", epoch)

        metric_names = [m for m in IMAGE_METRICS if m in per_image.columns]
        group_metrics, gaps = summarize_image_metrics(
            per_image, self.group_names, metric_names, epoch=epoch, partition=self.partition,
            confidence=self.confidence, n_resamples=self.n_resamples, seed=self.seed, test=final,
        )
        for measure in self.measures:
            extra_groups, extra_gaps = measure.epoch_rows(per_image, epoch, final)
            group_metrics = pd.concat([group_metrics, extra_groups], ignore_index=True)
            gaps = pd.concat([gaps, extra_gaps], ignore_index=True)
        if final:
            gaps = apply_holm(gaps)

        self.run_dir.mkdir(parents=True, exist_ok=True)
        _append_csv(group_metrics[GROUP_METRIC_COLUMNS], self.run_dir / "group_metrics.csv")
        _append_csv(gaps[GAP_COLUMNS], self.run_dir / "gaps.csv")
        every = self.per_image_every_n_epochs
        if final or (every > 0 and (epoch + 1) % every == 0):
            _append_csv(_per_image_columns(per_image), self.run_dir / "per_image.csv")
        if final:
            group_sizes = per_image["group"].value_counts().reindex(self.group_names, fill_value=0)
            self.last_summary = self.write_summary(group_metrics, gaps, epoch, group_sizes=group_sizes)
        return _log_values(group_metrics, gaps, self.partition)

    def write_summary(self, group_metrics: pd.DataFrame, gaps: pd.DataFrame, epoch: int,
                      group_sizes: pd.Series | None = None) -> dict[str, Any]:
        """Write fairness_summary.json: per (attribute, metric) groups, gap, tests and flags.

        ``group_sizes`` (images per group in the epoch) sets the top-level
        ``underpowered`` flag. Metrics that a measure reports unavailable get an entry
        with ``flags.unavailable`` and the reason.
        """
        measure_flags: dict[str, dict[str, Any]] = {}
        unavailable: dict[str, str] = {}
        extra: dict[str, Any] = {}
        for measure in self.measures:
            for attribute, flags in (getattr(measure, "summary_flags", dict)() or {}).items():
                measure_flags.setdefault(attribute, {}).update(flags)
            unavailable.update(getattr(measure, "unavailable", dict)() or {})
            extra.update(getattr(measure, "summary_extra", dict)() or {})

        entries = [self._summary_entry(gap, group_metrics, measure_flags) for _, gap in gaps.iterrows()]
        summarised = {(entry["attribute"], entry["metric"]) for entry in entries}
        sizes = {} if group_sizes is None else {str(g): int(n) for g, n in group_sizes.items()}
        run_underpowered = bool(underpowered(list(sizes.values()), self.min_group_size)) if sizes else None
        entries += self._pooled_only_entries(group_metrics, summarised, run_underpowered)
        for metric, reason in unavailable.items():
            entries.append({"attribute": None, "metric": metric, "by_group": {}, "overall": None, "gap": None,
                            "ratio": None, "worst_group": None, "best_group": None, "p_value": None,
                            "p_holm": None, "mde": None,
                            "flags": {"underpowered": None, "unavailable": True, "reason": reason}})

        summary = {
            "epoch": epoch,
            "partition": self.partition,
            "groups": self.group_names,
            "group_sizes": sizes,
            "min_group_size": self.min_group_size,
            "underpowered": run_underpowered,
            "underpowered_groups": [g for g, n in sizes.items() if n < self.min_group_size],
            "confidence": self.confidence,
            "named_summaries": _named_summaries(gaps),
            "metrics": entries,
            **extra,
        }
        path = self.run_dir / "fairness_summary.json"
        path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        return summary

    def _summary_entry(self, gap: pd.Series, group_metrics: pd.DataFrame,
                       measure_flags: dict[str, dict[str, Any]]) -> dict[str, Any]:
        attribute = gap["attribute"] if isinstance(gap["attribute"], str) else ""
        rows = group_metrics[(group_metrics["metric"] == gap["metric"])
                             & (group_metrics["attribute"].fillna("") == attribute)]
        by_group = {
            r["group"]: {"value": _num(r["value"]), "n": int(r["n"]), "ci_low": _num(r["ci_low"]),
                         "ci_high": _num(r["ci_high"])}
            for _, r in rows.iterrows() if r["group"] != "all"
        }
        counts = [v["n"] for v in by_group.values()]
        flags = {
            "underpowered": bool(underpowered(counts, self.min_group_size)) if counts else True,
            "unavailable": bool(all(v["value"] is None for v in by_group.values())),
        }
        flags.update(measure_flags.get(attribute, {}))
        return {
            "attribute": attribute or None,
            "metric": gap["metric"],
            "by_group": by_group,
            "overall": _overall_of(rows),
            "gap": _num(gap["gap"]),
            "ratio": _num(gap["ratio"]),
            "worst_group": gap["worst_group"],
            "best_group": gap["best_group"],
            "p_value": _num(gap["p_value"]),
            "p_holm": _num(gap["p_holm"]),
            "mde": _num(gap["mde"]),
            "flags": flags,
        }

    def _pooled_only_entries(self, group_metrics: pd.DataFrame, summarised: set,
                             run_underpowered: bool | None) -> list[dict[str, Any]]:
        # Metrics with only an ``all`` row (FID pooled over groups) have no gap row.
        entries = []
        pooled = group_metrics[group_metrics["group"] == "all"]
        for _, row in pooled.iterrows():
            attribute = row["attribute"] if isinstance(row["attribute"], str) and row["attribute"] else None
            key = (attribute, row["metric"])
            if key in summarised:
                continue
            per_group = group_metrics[(group_metrics["metric"] == row["metric"]) & (group_metrics["group"] != "all")
                                      & (group_metrics["attribute"].fillna("") == (attribute or ""))]
            if not per_group.empty:
                continue
            summarised.add(key)
            entries.append({
                "attribute": attribute, "metric": row["metric"], "by_group": {}, "overall": _overall_of(row.to_frame().T),
                "gap": None, "ratio": None, "worst_group": None, "best_group": None, "p_value": None,
                "p_holm": None, "mde": None,
                "flags": {"underpowered": run_underpowered, "unavailable": _num(row["value"]) is None,
                          "pooled_only": True},
            })
        return entries


def _min_ms_ssim_side() -> int:
    # The smallest side at which fairness.image_metrics can score MS-SSIM with >= 2 scales.
    for side in range(8, 257):
        try:
            if ms_ssim_scales(side) >= 2:
                return side
        except ValueError:
            continue
    return 10**9


def is_final_epoch(trainer: L.Trainer) -> bool:
    """Return True during the last epoch of a fit, and always under validate or test."""
    if trainer.state.fn != "fit":
        return True
    max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    if trainer.current_epoch + 1 >= max_epochs:
        return True
    max_steps = trainer.max_steps
    return bool(max_steps and max_steps > 0 and trainer.global_step >= max_steps) or bool(trainer.should_stop)


def _gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    gathered: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rows)
    return [row for part in gathered for row in (part or [])]


def _broadcast(values: dict[str, float]) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    box = [values]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame = frame.drop_duplicates("sample_id", keep="first")
    return frame.sort_values("sample_id", kind="stable").reset_index(drop=True)


def _per_image_columns(per_image: pd.DataFrame) -> pd.DataFrame:
    frame = per_image.copy()
    for column in PER_IMAGE_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    attribute_columns = [c for c in frame.columns if c.endswith(("_label", "_pred_orig", "_pred_rec"))]
    extra = [c for c in frame.columns if c not in PER_IMAGE_COLUMNS and c not in attribute_columns
             and not c.startswith("_")]
    return frame[PER_IMAGE_COLUMNS + attribute_columns + extra]


def _append_csv(frame: pd.DataFrame, path: Path) -> None:
    header = not path.exists()
    if not header:
        existing = pd.read_csv(path, nrows=0).columns.tolist()
        if existing != frame.columns.tolist():
            frame = frame.reindex(columns=existing + [c for c in frame.columns if c not in existing])
            if frame.columns.tolist() != existing:
                old = pd.read_csv(path)
                pd.concat([old, frame], ignore_index=True).to_csv(path, index=False)
                return
    frame.to_csv(path, mode="a", header=header, index=False)


def _log_values(group_metrics: pd.DataFrame, gaps: pd.DataFrame, partition: str) -> dict[str, float]:
    logged: dict[str, float] = {}
    for _, row in group_metrics.iterrows():
        if not np.isfinite(row["value"]):
            continue
        if row["group"] == "all":
            # Only set-level realism is logged pooled; the codec module logs the other
            # overall values (val/psnr, val/bpp), so their names must stay free.
            if row["metric"] in POOLED_LOGGED:
                logged[f"{partition}/{row['metric']}"] = float(row["value"])
            continue
        attribute = f"{row['attribute']}/" if isinstance(row["attribute"], str) and row["attribute"] else ""
        logged[f"{partition}/{attribute}{row['metric']}/{identifier(row['group'])}"] = float(row["value"])
    for _, row in gaps.iterrows():
        attribute = f"{row['attribute']}/" if isinstance(row["attribute"], str) and row["attribute"] else ""
        for field in ("gap", "ratio"):
            if np.isfinite(row[field]):
                logged[f"{partition}/fair/{attribute}{row['metric']}_{field}"] = float(row[field])
        if attribute and row["metric"] in NAMED_GAPS and np.isfinite(row["gap"]):
            logged[f"{partition}/fair/{attribute}{NAMED_GAPS[row['metric']]}"] = float(row["gap"])
    return logged


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None



def _named_summaries(gaps: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Return attribute -> {classifier_bias, compression_bias} with their tests, from the gaps rows."""
    named: dict[str, dict[str, Any]] = {}
    for _, row in gaps.iterrows():
        name = NAMED_GAPS.get(row["metric"])
        attribute = row["attribute"] if isinstance(row["attribute"], str) else ""
        if name is None or not attribute:
            continue
        named.setdefault(attribute, {})[name] = {
            "gap": _num(row["gap"]), "worst_group": row["worst_group"], "best_group": row["best_group"],
            "p_value": _num(row["p_value"]), "p_holm": _num(row["p_holm"]), "mde": _num(row["mde"]),
        }
    return named


def _overall_of(rows: pd.DataFrame) -> dict[str, Any] | None:
    pooled = rows[rows["group"] == "all"]
    if pooled.empty:
        return None
    row = pooled.iloc[0]
    return {"value": _num(row["value"]), "n": int(row["n"]), "ci_low": _num(row["ci_low"]),
            "ci_high": _num(row["ci_high"])}


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays from measures' summary_extra.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to fairness_summary.json")
