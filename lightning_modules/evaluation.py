"""evaluate.py's work: build codecs from the config, score them on one partition, write the report.

Every codec instance (one codec at one rate point, one training seed) codes the same
images. The originals are decoded once (the dataset keeps them in memory as uint8), and
classified and featurized once; only reconstructions are scored per instance. The pure
statistics live in :mod:`fairness.ladder`, the figures in :mod:`fairness.plots` and the
markdown in :mod:`fairness.report`.

Codec sources, in report order: JPEG and WebP through Pillow (``codecs.jpeg``,
``codecs.webp``: quality ladders), CompressAI zoo models (``codecs.zoo``), trained
CodecModule checkpoints (``runs``: run or multirun folders, ``checkpoints``: files) and
external codecs (``codecs.external``: Hydra targets that return a
:class:`~lightning_modules.codec_interface.Codec` or a list of them).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from datamodules.dataset import FaceDataset
from datamodules.prepare import PreparedData, prepare_data, write_manifest
from fairness.image_metrics import ms_ssim_per_image, ms_ssim_scales, psnr_per_image
from fairness.ladder import PER_IMAGE_METRICS
from lightning_modules.codec_interface import Codec
from lightning_modules.codec_specs import (
    CodecSpec,
    as_list,
    build_codec_specs,
    check_no_training_overlap,
    checkpoint_file,
    external_specs,
    find_run_dirs,
    read_run_config,
    trained_spec,
)
from lightning_modules.compressai_codecs import (
    PAD_MULTIPLE,
    CompressAICodec,
    PretrainedWeightsNotFoundError,
    pad_to_multiple,
)
from lightning_modules.measurements import Measurements, fid_from_features, load_measurements

log = logging.getLogger(__name__)

__all__ = [
    "CodecEvaluator",
    "ComparisonOutputs",
    "EvaluationOutputs",
    "EvaluationResult",
    "Measurements",
    "run_comparison",
    "run_evaluation",
    "write_evaluation",
]

PER_IMAGE_PREFIX = ["codec", "rate_point", "quality", "lmbda", "seed", "epoch", "sample_id", "group"]


# ---------------------------------------------------------------------------- evaluator


@dataclass
class EvaluationResult:
    """Output of one pass over all codec instances.

    Attributes
    ----------
    per_image : pandas.DataFrame
        One row per (instance, image), columns :data:`PER_IMAGE_PREFIX`, the metrics and
        ``<a>_label``, ``<a>_pred_orig``, ``<a>_pred_rec`` per attribute.
    set_metrics : pandas.DataFrame
        FID and KID per instance and group (``all`` for pooled).
    grid_ids, grid_groups : list of str
        The images shown in the reconstruction grids, a few per group.
    grid_originals : Tensor
        uint8 ``[k, 3, H, W]`` originals of the grid images.
    grid_reconstructions : dict
        Instance key -> uint8 ``[k, 3, H, W]`` reconstructions.
    specs : list of CodecSpec
        The instances that ran.
    skipped : list of dict
        Instances that could not be built: codec, rate_point, reason.
    """

    per_image: pd.DataFrame
    set_metrics: pd.DataFrame
    grid_ids: list[str]
    grid_groups: list[str]
    grid_originals: Tensor
    grid_reconstructions: dict[tuple[str, str, str], Tensor]
    specs: list[CodecSpec]
    skipped: list[dict[str, str]]


class CodecEvaluator:
    """Run codec instances over one partition and collect per-image rows.

    Parameters
    ----------
    dataset : FaceDataset
        The partition to score; it should cache decoded images in memory.
    group_names : list of str
        Groups in report order.
    attributes : mapping
        The dataset's attribute name -> labels.
    measurements : Measurements
        Optional classifier, feature extractor and LPIPS model.
    batch_size : int
        Images per codec call.
    device : str
        Where the measuring networks run (codecs choose their own device).
    images_per_group : int
        Images per group kept for the reconstruction grids.
    fid_min_per_group : int
        Per-group FID only when every group has at least this many images.
    kid_subset_size, kid_subsets : int
        KID subsets (the size is capped by each group's n).
    progress : bool
        Show tqdm bars over codecs and batches.
    """

    def __init__(
        self,
        dataset: FaceDataset,
        group_names: Sequence[str],
        attributes: Mapping[str, Sequence[str]],
        measurements: Measurements | None = None,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        images_per_group: int = 2,
        fid_min_per_group: int = 200,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.dataset = dataset
        self.group_names = list(group_names)
        self.attributes = {name: list(labels) for name, labels in attributes.items()}
        self.measurements = measurements or Measurements()
        self.batch_size = int(batch_size)
        self.device = device
        self.images_per_group = int(images_per_group)
        self.fid_min_per_group = int(fid_min_per_group)
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self.seed = int(seed)
        self.progress = progress

        classifier = self.measurements.classifier
        predicted = classifier.attributes if classifier is not None else {}
        self.scored_attributes = [name for name in predicted if name in self.attributes]
        # Measurements of the originals, computed on the first pass and reused by every instance.
        self._original_features: dict[str, np.ndarray] = {}
        self._original_predictions: dict[str, dict[str, int]] = {}
        self.grid_ids, self.grid_groups = self._choose_grid_images()
        self._ms_ssim_scales = self._scales_for(dataset)

    def _scales_for(self, dataset: FaceDataset) -> int | None:
        try:
            return ms_ssim_scales(int(dataset.image_size))
        except ValueError as error:
            log.warning("MS-SSIM not reported: %s", error)
            return None

    @property
    def ms_ssim_scales(self) -> int | None:
        """Number of MS-SSIM scales used at this image size, None when MS-SSIM is skipped."""
        return self._ms_ssim_scales

    def _choose_grid_images(self) -> tuple[list[str], list[str]]:
        ids, groups = [], []
        for code, name in enumerate(self.group_names):
            positions = [i for i, group in enumerate(self.dataset.groups) if int(group) == code]
            chosen = sorted(positions, key=lambda i: self.dataset.sample_ids[i])[: self.images_per_group]
            ids += [self.dataset.sample_ids[i] for i in chosen]
            groups += [name] * len(chosen)
        return ids, groups

    def _loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def evaluate(self, specs: Sequence[CodecSpec]) -> EvaluationResult:
        """Score every instance in ``specs`` and return the collected rows."""
        per_image_parts: list[pd.DataFrame] = []
        set_rows: list[dict[str, Any]] = []
        reconstructions: dict[tuple[str, str, str], Tensor] = {}
        originals: dict[str, Tensor] = {}
        ran: list[CodecSpec] = []
        skipped: list[dict[str, str]] = []

        for spec in tqdm(specs, desc="codecs", disable=not self.progress):
            try:
                codec = spec.build()
            except (PretrainedWeightsNotFoundError, FileNotFoundError) as error:
                log.warning("Skipped %s %s: %s", spec.codec, spec.rate_point, error)
                skipped.append({"codec": spec.codec, "rate_point": spec.rate_point, "reason": str(error)})
                continue
            frame, rec_features, grid = self._run_instance(spec, codec, originals)
            per_image_parts.append(frame)
            set_rows += self._set_metrics(spec, frame, rec_features)
            reconstructions[spec.key] = grid
            ran.append(spec)
            del codec

        per_image = pd.concat(per_image_parts, ignore_index=True) if per_image_parts else pd.DataFrame(
            columns=PER_IMAGE_PREFIX)
        per_image = _order_per_image_columns(per_image)
        grid_originals = (torch.stack([originals[i] for i in self.grid_ids]) if originals
                          else torch.empty(0, 3, 0, 0, dtype=torch.uint8))
        return EvaluationResult(
            per_image=per_image, set_metrics=pd.DataFrame(set_rows), grid_ids=self.grid_ids,
            grid_groups=self.grid_groups, grid_originals=grid_originals, grid_reconstructions=reconstructions,
            specs=ran, skipped=skipped,
        )

    def _run_instance(self, spec: CodecSpec, codec: Codec, originals: dict[str, Tensor]):
        columns: dict[str, list] = {name: [] for name in ("sample_id", "group", *PER_IMAGE_METRICS)}
        for attribute in self.scored_attributes:
            for suffix in ("label", "pred_orig", "pred_rec"):
                columns[f"{attribute}_{suffix}"] = []
        rec_features: list[np.ndarray] = []
        grid: dict[str, Tensor] = {}
        wanted = set(self.grid_ids)

        batches = tqdm(self._loader(), desc=f"{spec.codec} {spec.rate_point}", leave=False,
                       disable=not self.progress)
        for batch in batches:
            x = batch["image"]
            ids = list(batch["sample_id"])
            height, width = x.shape[-2:]

            blobs = codec.compress(x)
            x_hat = codec.decompress(blobs).detach().to("cpu", torch.float32).clamp(0.0, 1.0)
            if x_hat.shape != x.shape:
                raise ValueError(
                    f"{spec.codec} {spec.rate_point} decoded {tuple(x_hat.shape)} from a {tuple(x.shape)} batch; "
                    "decompress must return the original size"
                )

            columns["sample_id"] += ids
            columns["group"] += [self.group_names[int(g)] for g in batch["group"]]
            columns["psnr"] += psnr_per_image(x, x_hat).double().tolist()
            columns["bpp"] += [8.0 * len(blob) / float(height * width) for blob in blobs]
            columns["ms_ssim"] += (ms_ssim_per_image(x, x_hat, scales=self._ms_ssim_scales).double().tolist()
                                   if self._ms_ssim_scales else [math.nan] * len(ids))
            columns["bpp_est"] += _estimated_bpp(codec, x)
            columns["lpips"] += self._lpips(x, x_hat)

            features = self._features(ids, x, x_hat)
            if features is not None:
                rec_features.append(features[1])
                columns["feat_dist"] += features[2]
            else:
                columns["feat_dist"] += [math.nan] * len(ids)
            self._attribute_columns(columns, batch, ids, x, x_hat)

            for index, sample_id in enumerate(ids):
                if sample_id in wanted:
                    grid[sample_id] = _to_uint8(x_hat[index])
                    originals.setdefault(sample_id, _to_uint8(x[index]))

        frame = pd.DataFrame(columns)
        for name, value in (("codec", spec.codec), ("rate_point", spec.rate_point), ("quality", spec.quality),
                            ("lmbda", spec.lmbda), ("seed", spec.key[2]), ("epoch", spec.epoch)):
            frame.insert(len(frame.columns), name, value)
        features = np.concatenate(rec_features) if rec_features else None
        grid_tensor = torch.stack([grid[i] for i in self.grid_ids]) if grid else torch.empty(0, dtype=torch.uint8)
        return frame, features, grid_tensor

    def _lpips(self, x: Tensor, x_hat: Tensor) -> list[float]:
        model = self.measurements.lpips_model
        if model is None:
            return [math.nan] * x.shape[0]
        from fairness.realism import lpips_per_image

        return lpips_per_image(model, x.to(self.device), x_hat.to(self.device)).double().cpu().tolist()

    def _features(self, ids: list[str], x: Tensor, x_hat: Tensor):
        extractor = self.measurements.feature_extractor
        if extractor is None:
            return None
        missing = [i for i, sample_id in enumerate(ids) if sample_id not in self._original_features]
        if missing:
            with torch.no_grad():
                computed = extractor(x[missing].to(self.device)).reshape(len(missing), -1).double().cpu().numpy()
            for row, index in enumerate(missing):
                self._original_features[ids[index]] = computed[row]
        original = np.stack([self._original_features[sample_id] for sample_id in ids])
        with torch.no_grad():
            reconstructed = extractor(x_hat.to(self.device)).reshape(len(ids), -1).double().cpu().numpy()

        from fairness.realism import feat_dist

        return original, reconstructed, feat_dist(original, reconstructed).tolist()

    def _attribute_columns(self, columns, batch, ids, x: Tensor, x_hat: Tensor) -> None:
        classifier = self.measurements.classifier
        if classifier is None or not self.scored_attributes:
            return
        missing = [i for i, sample_id in enumerate(ids) if sample_id not in self._original_predictions]
        if missing:
            predicted = classifier.predict(x[missing].to(self.device))
            for row, index in enumerate(missing):
                self._original_predictions[ids[index]] = {
                    name: int(predicted[name][row]) for name in self.scored_attributes}
        reconstructed = classifier.predict(x_hat.to(self.device))
        for attribute in self.scored_attributes:
            columns[f"{attribute}_label"] += [int(v) for v in batch["attributes"][attribute]]
            columns[f"{attribute}_pred_orig"] += [self._original_predictions[i][attribute] for i in ids]
            columns[f"{attribute}_pred_rec"] += [int(v) for v in reconstructed[attribute].cpu()]

    def _set_metrics(self, spec: CodecSpec, frame: pd.DataFrame, rec_features: np.ndarray | None) -> list[dict]:
        if rec_features is None:
            return []
        from fairness.realism import kid

        original = np.stack([self._original_features[i] for i in frame["sample_id"]])
        groups = frame["group"].to_numpy()
        counts = {name: int(np.sum(groups == name)) for name in self.group_names}
        base = {"codec": spec.codec, "rate_point": spec.rate_point, "quality": spec.quality,
                "lmbda": spec.lmbda, "seed": "" if spec.seed is None else str(spec.seed)}

        rows = [{**base, "group": "all", "metric": "fid", "value": fid_from_features(original, rec_features),
                 "n": len(frame)}]
        per_group_fid = min(counts.values()) >= self.fid_min_per_group
        for group in [*self.group_names, "all"]:
            mask = np.ones(len(groups), dtype=bool) if group == "all" else groups == group
            if mask.sum() < 2:
                continue
            # Paired: each original is compared with its own reconstruction, as in the
            # training callback, so an identity codec scores exactly 0.
            result = kid(original[mask], rec_features[mask], subset_size=self.kid_subset_size,
                         n_subsets=1 if mask.sum() <= self.kid_subset_size else self.kid_subsets, seed=self.seed,
                         paired=True)
            rows.append({**base, "group": group, "metric": "kid", "value": result.mean, "n": int(mask.sum())})
            if per_group_fid and group != "all":
                rows.append({**base, "group": group, "metric": "fid",
                             "value": fid_from_features(original[mask], rec_features[mask]), "n": int(mask.sum())})
        return rows


def _estimated_bpp(codec: Codec, x: Tensor) -> list[float]:
    # bpp_est = -sum log2 likelihoods / (H W) of the forward pass; only learned codecs have one.
    if not isinstance(codec, CompressAICodec):
        return [math.nan] * x.shape[0]
    height, width = x.shape[-2:]
    model = codec.model
    device = next(model.parameters()).device
    with torch.no_grad():
        output = model(pad_to_multiple(x.to(device), PAD_MULTIPLE, codec.pad_mode))
    bits = sum((-torch.log2(likelihoods)).flatten(1).sum(dim=1) for likelihoods in output["likelihoods"].values())
    return (bits.double().cpu() / float(height * width)).tolist()


def _to_uint8(image: Tensor) -> Tensor:
    return (image.detach().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _order_per_image_columns(frame: pd.DataFrame) -> pd.DataFrame:
    attribute_columns = [c for c in frame.columns if c.endswith(("_label", "_pred_orig", "_pred_rec"))]
    ordered = [*PER_IMAGE_PREFIX, *PER_IMAGE_METRICS]
    for column in ordered:
        if column not in frame.columns:
            frame[column] = np.nan
    return frame[ordered + attribute_columns]


def safe_name(text: str) -> str:
    """Turn a codec or metric name into a file name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "unnamed"


# ---------------------------------------------------------------------------- data


def resolve_data_config(cfg: Mapping[str, Any], run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Return the data config: ``cfg.data`` when given, else the first training run's.

    Raises
    ------
    ValueError
        When neither exists, naming the option to set.
    """
    data = cfg.get("data")
    if data:
        data = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data)
        for run_dir in run_dirs:
            run_data = read_run_config(run_dir).get("data") or {}
            if run_data.get("name") and run_data.get("name") != data.get("name"):
                log.warning("Run %s was trained on data.name=%s but is evaluated on %s", run_dir,
                            run_data.get("name"), data.get("name"))
        return data
    for run_dir in run_dirs:
        run_data = read_run_config(run_dir).get("data")
        if run_data:
            log.info("Using the data config of run %s (pass data=... to override)", run_dir)
            return OmegaConf.to_container(OmegaConf.create(run_data), resolve=True)
    raise ValueError("No data set to evaluate on: pass data=<name> (for example data=fairface "
                     "data.root=/data/fairface), or runs=[...] whose .hydra/config.yaml names one")


def partition_dataset(prepared: PreparedData, partition: str, data_cfg: Mapping[str, Any]) -> FaceDataset:
    """Return the FaceDataset of one partition (``test`` by default), caching images in memory."""
    if partition not in ("train", "val", "test"):
        raise ValueError(f"partition must be train, val or test, got {partition!r}")
    rows = prepared.rows(partition)
    if rows.empty:
        raise ValueError(f"the {partition} partition of {prepared.table.dataset} is empty")
    return FaceDataset(prepared.table, rows, image_size=prepared.image_size, face_crop=prepared.face_crop,
                       cache=True, image_cache=prepared.image_cache)


def write_evaluated_manifest(prepared: PreparedData, run_dir: Path) -> str:
    """Write the partition table of the evaluated data set and return its sha256."""
    return write_manifest(prepared.manifest, Path(run_dir) / "split_manifest.csv")


def prepare_evaluation_data(data_cfg: Mapping[str, Any]) -> PreparedData:
    """Prepare the data set; the training split is irrelevant here, so it is the natural one."""
    return prepare_data(data_cfg, {"kind": "natural"}, 0)


# ---------------------------------------------------------------------------- run and write


@dataclass
class EvaluationOutputs:
    """Tables and files one evaluation wrote into ``run_dir``."""

    run_dir: Path
    per_image: pd.DataFrame
    summary: pd.DataFrame
    gaps: pd.DataFrame
    bd_rates: pd.DataFrame
    matched: pd.DataFrame
    figures: dict[str, list[Path]]
    report_path: Path
    result: EvaluationResult
    group_names: list[str]


@dataclass
class _EvaluationContext:
    # Facts about the data and the instruments that the output files record.
    dataset: str
    partition: str
    group_names: list[str]
    image_size: int
    ms_ssim_scales: int | None
    measurements: Measurements
    manifest_sha: str
    data_cfg: dict[str, Any]


def plain_config(cfg: Any) -> dict[str, Any]:
    """Return ``cfg`` as plain containers (a DictConfig is resolved)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when available, else ``cpu``."""
    device = str(device or "cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _run_dirs_of(cfg: Mapping[str, Any]) -> list[Path]:
    run_dirs = []
    for run in as_list(cfg.get("runs")):
        run_dirs += find_run_dirs(run)
    for checkpoint in as_list(cfg.get("checkpoints")):
        checkpoint = Path(checkpoint)
        if checkpoint.parent.name == "checkpoints":
            run_dirs.append(checkpoint.parent.parent)
    return run_dirs


def _build_evaluator(cfg: Mapping[str, Any], run_dirs: Sequence[Path], run_dir: Path,
                     measurements: Measurements | None) -> tuple[CodecEvaluator, _EvaluationContext, PreparedData]:
    device = resolve_device(cfg.get("device", "cpu"))
    data_cfg = resolve_data_config(cfg, run_dirs)
    prepared = prepare_evaluation_data(data_cfg)
    partition = str(cfg.get("partition", "test"))
    dataset = partition_dataset(prepared, partition, data_cfg)
    manifest_sha = write_evaluated_manifest(prepared, run_dir)
    if measurements is None:
        measurements = load_measurements(cfg, prepared.table.attributes, device)

    realism_cfg = cfg.get("realism") or {}
    evaluator = CodecEvaluator(
        dataset, prepared.group_names, prepared.table.attributes, measurements,
        batch_size=int(cfg.get("batch_size", 32)), device=device,
        images_per_group=int(cfg.get("images_per_group", 2)),
        fid_min_per_group=int(realism_cfg.get("fid_min_per_group", 200)),
        kid_subset_size=int(realism_cfg.get("kid_subset_size", 1000)),
        kid_subsets=int(realism_cfg.get("kid_subsets", 100)),
        seed=int(cfg.get("seed", 0)), progress=bool(cfg.get("progress", True)),
    )
    context = _EvaluationContext(
        dataset=prepared.table.dataset, partition=partition, group_names=list(prepared.group_names),
        image_size=int(prepared.image_size), ms_ssim_scales=evaluator.ms_ssim_scales, measurements=measurements,
        manifest_sha=manifest_sha, data_cfg=dict(data_cfg),
    )
    return evaluator, context, prepared


def run_evaluation(cfg: Any, run_dir: str | Path, *, measurements: Measurements | None = None,
                   extra_codecs: Sequence[Codec] = ()) -> EvaluationOutputs:
    """Evaluate every codec instance the config names and write the run folder.

    Parameters
    ----------
    cfg : mapping or DictConfig
        The evaluate.yaml config (``data``, ``codecs``, ``runs``, ``checkpoints``, ...).
    run_dir : path
        Output folder.
    measurements : Measurements, optional
        Instruments to use instead of loading them from the config (tests inject small ones).
    extra_codecs : sequence of Codec
        Codec objects evaluated after the configured ones.
    """
    cfg = plain_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluator, context, prepared = _build_evaluator(cfg, _run_dirs_of(cfg), run_dir, measurements)

    specs = build_codec_specs(cfg, device=evaluator.device) + external_specs(list(extra_codecs))
    if not specs:
        raise ValueError("No codec to evaluate: set codecs.jpeg / codecs.webp qualities, codecs.zoo, runs=[...], "
                         "checkpoints=[...] or codecs.external")
    check_no_training_overlap(specs, evaluator.dataset.sample_ids, context.partition)
    result = evaluator.evaluate(specs)
    return write_evaluation(run_dir, result, context, cfg)


def write_evaluation(run_dir: Path, result: EvaluationResult, context: _EvaluationContext,
                     cfg: Mapping[str, Any]) -> EvaluationOutputs:
    """Summarise ``result`` and write the CSVs, figures, report.md and provenance.json."""
    from fairness import ladder, plots
    from fairness.report import ReportInputs, render_report

    if result.per_image.empty:
        raise RuntimeError(
            "No codec instance could be evaluated: "
            + "; ".join(f"{item['codec']} {item['rate_point']}: {item['reason']}" for item in result.skipped)
        )
    group_names = context.group_names
    min_group_size = int(cfg.get("min_group_size", 100))
    stats = {"confidence": float(cfg.get("confidence", 0.95)), "n_resamples": int(cfg.get("n_resamples", 1000)),
             "seed": int(cfg.get("seed", 0))}

    result.per_image.to_csv(run_dir / "per_image.csv", index=False)
    summary, gaps = ladder.summarize_ladder(result.per_image, group_names, set_metrics=result.set_metrics,
                                            partition=context.partition, min_group_size=min_group_size, **stats)
    summary, gaps = ladder.aggregate_seeds(summary, gaps)
    summary.to_csv(run_dir / "summary.csv", index=False)
    gaps.to_csv(run_dir / "gaps.csv", index=False)

    anchor = str(cfg.get("anchor", "jpeg"))
    bd_rates = ladder.group_bd_rates(summary, group_names, anchor)
    matched = ladder.matched_gaps(summary, group_names, [m for m in ("psnr", "ms_ssim", "feat_dist")
                                                         if m in set(summary["metric"])],
                                  n_points=int(cfg.get("n_matched_points", 5)))
    bd_rates.to_csv(run_dir / "bd_rates.csv", index=False)
    matched.to_csv(run_dir / "matched_gaps.csv", index=False)

    figures = _write_figures(run_dir, result, summary, gaps, bd_rates, group_names, cfg)
    instances = ladder.instance_table(result.per_image)
    family = {spec.key: spec for spec in result.specs}
    instances["family"] = [family[(row.codec, row.rate_point, row.seed)].family for row in instances.itertuples()]
    instances["source"] = [family[(row.codec, row.rate_point, row.seed)].source for row in instances.itertuples()]

    inputs = ReportInputs(
        dataset=context.dataset, partition=context.partition, group_names=group_names,
        counts=ladder.group_counts(result.per_image, group_names), image_size=context.image_size,
        ms_ssim_scales=context.ms_ssim_scales, instances=instances, summary=summary, gaps=gaps,
        bd_rates=bd_rates, matched=matched, anchor=anchor,
        figures={key: [path.relative_to(run_dir) for path in paths] for key, paths in figures.items()},
        skipped=result.skipped, unavailable=context.measurements.unavailable, min_group_size=min_group_size,
        fid_min_per_group=int((cfg.get("realism") or {}).get("fid_min_per_group", 200)),
        confidence=stats["confidence"], n_resamples=stats["n_resamples"],
        quality=classifier_quality_table(result.per_image, cfg, context.partition,
                                         [Path(spec.source).parent.parent for spec in result.specs
                                          if spec.family == "trained"]),
    )
    report_path = run_dir / "report.md"
    report_path.write_text(render_report(inputs))

    _write_evaluation_provenance(run_dir, cfg, context, result, instances)
    if (cfg.get("wandb") or {}).get("enabled", False):
        upload_to_wandb(run_dir, cfg, summary=summary, gaps=gaps, figures=figures)
    log.info("Wrote %s", report_path)
    return EvaluationOutputs(run_dir=run_dir, per_image=result.per_image, summary=summary, gaps=gaps,
                             bd_rates=bd_rates, matched=matched, figures=figures, report_path=report_path,
                             result=result, group_names=group_names)


def _write_figures(run_dir: Path, result: EvaluationResult, summary: pd.DataFrame, gaps: pd.DataFrame,
                   bd_rates: pd.DataFrame, group_names: list[str], cfg: Mapping[str, Any]) -> dict[str, list[Path]]:
    from fairness import plots
    from fairness.ladder import ATTRIBUTE_GAP_METRICS

    folder = run_dir / "figures"
    figures: dict[str, list[Path]] = {key: [] for key in
                                      ("bias_vs_bpp", "attribute_bias", "bias_vs_realism", "rd_curves", "bd_rate",
                                       "grids")}

    def keep(section: str, path: Path | None) -> None:
        if path is not None:
            figures[section].append(path)

    image_metrics = [m for m in PER_IMAGE_METRICS if m != "bpp_est"
                     and not gaps[(gaps["metric"] == m) & (gaps["attribute"].fillna("") == "")].empty]
    for metric in image_metrics:
        keep("bias_vs_bpp", plots.bias_vs_bpp(gaps, metric, folder / f"bias_vs_bpp_{metric}.png"))
    attributes = sorted({a for a in gaps["attribute"].fillna("") if a})
    for attribute in attributes:
        for metric in ATTRIBUTE_GAP_METRICS:
            keep("attribute_bias", plots.bias_vs_bpp(gaps, metric, folder / f"bias_vs_bpp_{safe_name(attribute)}_"
                                                     f"{metric}.png", attribute=attribute))
    realism_metric = str((cfg.get("realism") or {}).get("axis", "fid"))
    keep("bias_vs_realism", plots.bias_vs_realism(gaps, summary, [m for m in ("psnr", "ms_ssim", "feat_dist")
                                                                  if m in image_metrics],
                                                  folder / "bias_vs_realism.png", realism_metric=realism_metric))
    keep("rd_curves", plots.group_rd_curves(summary, group_names, folder / "rd_curves_psnr.png"))
    keep("bd_rate", plots.group_bd_rate_bars(bd_rates, group_names, folder / "bd_rate_psnr.png"))

    for codec in dict.fromkeys(spec.codec for spec in result.specs):
        columns = {}
        codec_specs = [spec for spec in result.specs if spec.codec == codec]
        first_seed = min((spec.key[2] for spec in codec_specs), default="")
        bpp = result.per_image.groupby(["codec", "rate_point"])["bpp"].mean()
        for spec in sorted(codec_specs, key=lambda s: bpp.get((s.codec, s.rate_point), math.inf)):
            if spec.key[2] == first_seed and spec.key in result.grid_reconstructions:
                label = f"{spec.rate_point}\n{bpp.get((spec.codec, spec.rate_point), math.nan):.2f} bpp"
                columns[label] = result.grid_reconstructions[spec.key]
        seed_note = f", seed {first_seed}" if first_seed else ""
        keep("grids", plots.reconstruction_grid(result.grid_originals, result.grid_groups, columns,
                                                folder / f"grid_{safe_name(codec)}.png",
                                                title=f"{codec}{seed_note}: originals and reconstructions"))
    return figures


def _write_evaluation_provenance(run_dir: Path, cfg: Mapping[str, Any], context: _EvaluationContext,
                                 result: EvaluationResult, instances: pd.DataFrame) -> None:
    from callbacks.provenance import write_provenance

    weight_files = [Path(spec.source) for spec in result.specs if spec.family in ("trained", "zoo")]
    weight_files += context.measurements.weight_files
    write_provenance(run_dir, dict(cfg), manifest_sha256=context.manifest_sha, weight_files=weight_files, extra={
        "evaluation": {
            "dataset": context.dataset, "partition": context.partition, "group_names": context.group_names,
            "image_size": context.image_size, "ms_ssim_scales": context.ms_ssim_scales,
            "data": context.data_cfg, "instances": instances.to_dict("records"), "skipped": result.skipped,
            "unavailable": context.measurements.unavailable,
        }
    })


def upload_to_wandb(run_dir: Path, cfg: Mapping[str, Any], *, summary: pd.DataFrame, gaps: pd.DataFrame,
                    figures: Mapping[str, Sequence[Path]], job_type: str = "evaluate") -> None:
    """Log tables, figures and every output file to W&B (offline without an API key)."""
    from lightning_modules.loggers import resolve_wandb_mode

    wandb_cfg = cfg.get("wandb") or {}
    mode = resolve_wandb_mode(str(wandb_cfg.get("mode", "auto")))
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(project=str(wandb_cfg.get("project", "fairbits")), dir=str(run_dir), mode=mode,
                     job_type=job_type, name=f"{job_type}-{run_dir.name}", group=wandb_cfg.get("group"),
                     config={"evaluation": dict(cfg)}, settings=wandb.Settings(console="off", silent=True))
    try:
        run.log({"summary": wandb.Table(dataframe=summary.astype(str)),
                 "gaps": wandb.Table(dataframe=gaps.astype(str))})
        run.log({f"figures/{path.stem}": wandb.Image(str(path)) for paths in figures.values() for path in paths})
        artifact = wandb.Artifact(name=safe_name(f"{job_type}-{run_dir.name}"), type=job_type)
        for path in sorted(run_dir.glob("*.csv")) + sorted(run_dir.glob("*.md")) + sorted(run_dir.glob("*.json")):
            artifact.add_file(str(path))
        for paths in figures.values():
            for path in paths:
                artifact.add_file(str(path), name=f"figures/{path.name}")
        run.log_artifact(artifact)
    finally:
        run.finish()
    log.info("W&B %s run written under %s", mode, run_dir / "wandb")


def training_quality(run_dirs: Sequence[Path], *, side: str = "") -> pd.DataFrame:
    """Read the classifier quality gate that the training-time fairness callback recorded.

    Each run folder's fairness_summary.json contains ``classifier_quality``: per attribute the
    pooled accuracy on originals, the majority-class rate, the required margin and whether
    it passed. Run folders without that file or entry add no rows.
    """
    from fairness.comparison import QUALITY_COLUMNS

    rows = []
    for run in dict.fromkeys(Path(run) for run in run_dirs):
        summary_path = run / "fairness_summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        check = f"training callback ({summary.get('partition', '?')} partition, epoch {summary.get('epoch', '?')})"
        if len(run_dirs) > 1:
            check += f", run {run.name}"
        for attribute, gate in (summary.get("classifier_quality") or {}).items():
            rows.append({"side": side, "check": check, "attribute": attribute,
                         "acc_orig": gate.get("acc_orig", math.nan), "majority_rate": gate.get("majority_rate", math.nan),
                         "required_margin": gate.get("required_margin", math.nan),
                         "passes": bool(gate.get("passes", True))})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def classifier_quality_table(per_image: pd.DataFrame, cfg: Mapping[str, Any], partition: str,
                             run_dirs: Sequence[Path], *, side: str = "") -> pd.DataFrame:
    """Return the classifier quality gate of the training runs and of evaluate.py's own images.

    ``classifier_min_margin`` in ``cfg`` (default 0.05, as the training callback) sets the
    margin of evaluate.py's check.
    """
    from fairness.comparison import classifier_quality

    own = classifier_quality(per_image, min_margin=float(cfg.get("classifier_min_margin", 0.05)), side=side,
                             check=f"evaluate.py ({partition} partition)")
    parts = [frame for frame in (training_quality(run_dirs, side=side), own) if not frame.empty]
    return pd.concat(parts, ignore_index=True) if parts else own


def _trained_run_dirs(folder: Path) -> list[Path]:
    # Training runs behind an evaluate.py output folder, from the sources of its trained instances.
    provenance = folder / "provenance.json"
    if not provenance.is_file():
        return []
    instances = json.loads(provenance.read_text()).get("evaluation", {}).get("instances", [])
    return [Path(item["source"]).parent.parent for item in instances
            if item.get("family") == "trained" and item.get("source")]


# ---------------------------------------------------------------------------- comparison mode


@dataclass
class ComparisonOutputs:
    """Files and tables written by comparison mode: comparison.csv, comparison.md and figures."""

    run_dir: Path
    result: Any
    report_path: Path
    figures: dict[str, Path]


def _side_from_folder(path: Path) -> tuple[pd.DataFrame, list[str]] | None:
    # An evaluate.py output folder: its per_image.csv and the group order in provenance.json.
    from fairness.ladder import read_per_image

    per_image_path = path / "per_image.csv"
    if not per_image_path.is_file():
        return None
    # A training run folder has a per_image.csv too (the fairness callback's, per epoch),
    # without the codec and rate_point columns of an evaluation.
    header = pd.read_csv(per_image_path, nrows=0).columns
    if "codec" not in header or "rate_point" not in header:
        return None
    per_image = read_per_image(per_image_path)
    groups = list(dict.fromkeys(per_image["group"]))
    provenance = path / "provenance.json"
    if provenance.is_file():
        recorded = json.loads(provenance.read_text()).get("evaluation", {}).get("group_names")
        groups = recorded or groups
    return per_image, groups


def run_comparison(cfg: Any, run_dir: str | Path, *, measurements: Measurements | None = None) -> ComparisonOutputs:
    """Compare two runs (``compare=[A, B]``) at matched bpp and write comparison.md.

    Each side is an evaluate.py output folder (its per_image.csv is reused) or a training
    run or multirun folder, which is evaluated first into ``side_A/`` or ``side_B/`` on the
    same images (no baseline ladders).
    """
    from fairness.comparison import compare_runs
    from fairness.plots import comparison_figure
    from fairness.report import render_comparison

    cfg = plain_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p).expanduser() for p in as_list(cfg.get("compare"))]
    if len(paths) != 2:
        raise ValueError(f"compare needs exactly two folders, compare=[RUN_A,RUN_B]; got {len(paths)}: {paths}")

    names = _side_names(paths)
    sides: list[pd.DataFrame] = []
    group_names: list[str] | None = None
    evaluator = context = None
    quality: list[pd.DataFrame] = []
    partition = str(cfg.get("partition", "test"))
    for label, path, name in zip(("A", "B"), paths, names):
        loaded = _side_from_folder(path)
        if loaded is not None:
            per_image, groups = loaded
            run_dirs = _trained_run_dirs(path)
        else:
            run_dirs = find_run_dirs(path)
            side_dir = run_dir / f"side_{label}"
            side_dir.mkdir(parents=True, exist_ok=True)
            if evaluator is None:
                evaluator, context, _ = _build_evaluator(cfg, run_dirs, run_dir, measurements)
            which = str(cfg.get("checkpoint", "last"))
            specs = [trained_spec(checkpoint_file(run, which), run, device=evaluator.device) for run in run_dirs]
            check_no_training_overlap(specs, evaluator.dataset.sample_ids, context.partition)
            outputs = write_evaluation(side_dir, evaluator.evaluate(specs), context,
                                       {**cfg, "wandb": {"enabled": False}})
            per_image, groups = outputs.per_image, outputs.group_names
        sides.append(per_image)
        group_names = group_names or groups
        quality.append(classifier_quality_table(per_image, cfg, partition, run_dirs, side=name))

    chosen = as_list(cfg.get("compare_codecs")) or [None, None]
    result = compare_runs(
        sides[0], sides[1], group_names, names=names, codecs=(chosen[0], chosen[1]),
        n_points=int(cfg.get("n_matched_points", 5)), confidence=float(cfg.get("confidence", 0.95)),
        n_resamples=int(cfg.get("n_resamples", 1000)), seed=int(cfg.get("seed", 0)),
        min_group_size=int(cfg.get("min_group_size", 100)),
    )
    result.quality = pd.concat(quality, ignore_index=True)
    result.table.to_csv(run_dir / "comparison.csv", index=False)

    figures: dict[str, Path] = {}
    group_rows = result.table[result.table["kind"] == "group"]
    for (attribute, metric), rows in group_rows.groupby([group_rows["attribute"].fillna(""), "metric"], sort=False):
        key = f"{attribute}/{metric}" if attribute else metric
        curves = result.curves[(result.curves["metric"] == metric) & (result.curves["attribute"] == attribute)]
        path = comparison_figure(curves, rows, group_names, metric,
                                 run_dir / "figures" / f"compare_{safe_name(key)}.png", names=names,
                                 attribute=attribute)
        if path is not None:
            figures[key] = path

    report_path = run_dir / "comparison.md"
    report_path.write_text(render_comparison(
        result, sources=(str(paths[0]), str(paths[1])),
        figures={key: path.relative_to(run_dir) for key, path in figures.items()},
        min_group_size=int(cfg.get("min_group_size", 100)), confidence=float(cfg.get("confidence", 0.95)),
        n_resamples=int(cfg.get("n_resamples", 1000)),
    ))

    from callbacks.provenance import write_provenance

    write_provenance(run_dir, dict(cfg), extra={"comparison": {"sides": [str(p) for p in paths], "names": names,
                                                               "codecs": list(result.codecs),
                                                               "group_names": group_names}})
    if (cfg.get("wandb") or {}).get("enabled", False):
        upload_to_wandb(run_dir, cfg, summary=result.table, gaps=result.table[result.table["kind"] == "did"],
                        figures={"comparison": list(figures.values())}, job_type="compare")
    log.info("Wrote %s", report_path)
    return ComparisonOutputs(run_dir=run_dir, result=result, report_path=report_path, figures=figures)


def _side_names(paths: Sequence[Path]) -> tuple[str, str]:
    names = [path.resolve().name or str(path) for path in paths]
    if names[0] == names[1]:
        names = [f"{names[0]} (A)", f"{names[1]} (B)"]
    return names[0], names[1]
