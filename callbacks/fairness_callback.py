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


class Measure(Protocol):
    """A per-image measurement the callback runs on every validation batch.

    ``batch_columns`` returns per-image columns (name -> sequence, one entry per image of
    the batch). ``epoch_rows`` may add set-level rows (FID, KID) once the epoch's per-image
    table is complete; it runs on rank 0 only after gathering.
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
        final = _is_final_epoch(trainer)
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
            self.last_summary = self.write_summary(group_metrics, gaps, epoch)
        return _log_values(group_metrics, gaps, self.partition)

    def write_summary(self, group_metrics: pd.DataFrame, gaps: pd.DataFrame, epoch: int) -> dict[str, Any]:
        """Write fairness_summary.json: per (attribute, metric) groups, gap and tests."""
        entries = []
        for _, gap in gaps.iterrows():
            rows = group_metrics[(group_metrics["metric"] == gap["metric"])
                                 & (group_metrics["attribute"].fillna("") == (gap["attribute"] or ""))]
            by_group = {
                r["group"]: {"value": _num(r["value"]), "n": int(r["n"]), "ci_low": _num(r["ci_low"]),
                             "ci_high": _num(r["ci_high"])}
                for _, r in rows.iterrows() if r["group"] != "all"
            }
            counts = [v["n"] for v in by_group.values()]
            entries.append({
                "attribute": gap["attribute"] or None,
                "metric": gap["metric"],
                "by_group": by_group,
                "gap": _num(gap["gap"]),
                "ratio": _num(gap["ratio"]),
                "worst_group": gap["worst_group"],
                "best_group": gap["best_group"],
                "p_value": _num(gap["p_value"]),
                "p_holm": _num(gap["p_holm"]),
                "mde": _num(gap["mde"]),
                "flags": {
                    "underpowered": bool(underpowered(counts, self.min_group_size)) if counts else True,
                    "unavailable": bool(all(v["value"] is None for v in by_group.values())),
                },
            })
        summary = {
            "epoch": epoch,
            "partition": self.partition,
            "groups": self.group_names,
            "min_group_size": self.min_group_size,
            "confidence": self.confidence,
            "metrics": entries,
        }
        path = self.run_dir / "fairness_summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _min_ms_ssim_side() -> int:
    # The smallest side at which fairness.image_metrics can score MS-SSIM with >= 2 scales.
    for side in range(8, 257):
        try:
            if ms_ssim_scales(side) >= 2:
                return side
        except ValueError:
            continue
    return 10**9


def _is_final_epoch(trainer: L.Trainer) -> bool:
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
        if row["group"] == "all" or not np.isfinite(row["value"]):
            continue
        attribute = f"{row['attribute']}/" if isinstance(row["attribute"], str) and row["attribute"] else ""
        logged[f"{partition}/{attribute}{row['metric']}/{identifier(row['group'])}"] = float(row["value"])
    for _, row in gaps.iterrows():
        attribute = f"{row['attribute']}/" if isinstance(row["attribute"], str) and row["attribute"] else ""
        for field in ("gap", "ratio"):
            if np.isfinite(row[field]):
                logged[f"{partition}/fair/{attribute}{row['metric']}_{field}"] = float(row[field])
    return logged


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
