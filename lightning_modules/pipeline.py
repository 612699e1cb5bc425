"""The training job behind train.py: data module, model, loggers, callbacks, Trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from callbacks.fairness_callback import FairnessCallback
from callbacks.image_logging import ReconstructionImageLogger
from callbacks.measures import ClassifierMeasure, RealismMeasure
from callbacks.provenance import write_provenance
from datamodules.datamodule import FaceDataModule
from datamodules.prepare import PreparedData
from lightning_modules.loggers import build_loggers, finish_wandb

log = logging.getLogger(__name__)


def wandb_run_config(cfg: DictConfig) -> dict:
    """Return the flat keys W&B dashboards group and filter runs by."""
    codec = cfg.get("codec") or {}
    return {
        "experiment": cfg.experiment_name,
        "task": cfg.task,
        "dataset": cfg.data.name,
        "split_kind": cfg.split.kind,
        "split_total": cfg.split.get("total"),
        "codec": codec.get("arch"),
        "lmbda": codec.get("lmbda"),
        "quality": codec.get("quality"),
        "seed": cfg.seed,
        "image_size": cfg.data.image_size,
    }


def run_name(cfg: DictConfig) -> str:
    codec = cfg.get("codec") or {}
    return f"{cfg.experiment_name}-{codec.get('arch', cfg.task)}-lmbda{codec.get('lmbda')}-seed{cfg.seed}"


def checkpoint_callbacks(run_dir: Path, *, monitor: str, mode: str, save_last: bool = True) -> list[ModelCheckpoint]:
    """Return checkpointing of the best epoch (``best-<epoch>.ckpt``) and of the latest (``last.ckpt``).

    The first callback, the one ``trainer.checkpoint_callback`` returns, keeps the best
    epoch by ``monitor``. ``last.ckpt`` comes from a second callback without a monitor,
    rewritten after every epoch. ModelCheckpoint's own ``save_last=True`` (lightning
    2.6.6) rewrites last.ckpt only in epochs that also save a new best checkpoint, so
    it would hold the best epoch's weights, not the last.
    """
    directory = str(Path(run_dir) / "checkpoints")
    callbacks = [ModelCheckpoint(dirpath=directory, filename="best-{epoch:03d}", monitor=monitor, mode=mode,
                                 save_top_k=1, save_last=False)]
    if save_last:
        callbacks.append(ModelCheckpoint(dirpath=directory, filename="last", monitor=None, save_top_k=1,
                                         enable_version_counter=False))
    return callbacks


def build_measures(cfg: DictConfig, prepared: PreparedData) -> tuple[list, object | None, list[Path]]:
    """Build the fairness callback's plug-in measures from ``callbacks.fairness``.

    Returns the measures, the attribute classifier (or None) and the weight files used,
    for provenance.json.
    """
    from fairness.realism import load_inception, load_lpips
    from lightning_modules.classifier_loading import load_classifier

    fairness_cfg = cfg.callbacks.fairness
    seed = int(cfg.seed)
    measures: list = []
    weight_files: list[Path] = []

    classifier = None
    checkpoint = fairness_cfg.get("classifier_ckpt")
    if checkpoint:
        classifier = load_classifier(checkpoint, prepared.table.attributes,
                                     kind=fairness_cfg.get("classifier_kind", "auto"))
        weight_files.append(Path(checkpoint))
        measures.append(ClassifierMeasure(
            classifier, prepared.table.attributes, prepared.group_names,
            min_margin=float(fairness_cfg.get("classifier_min_margin", 0.05)),
            confidence=float(fairness_cfg.confidence), n_resamples=int(fairness_cfg.n_resamples), seed=seed,
        ))
    else:
        log.info("callbacks.fairness.classifier_ckpt is not set: attribute fidelity is not measured")

    if fairness_cfg.get("realism", True):
        extractor = load_inception(fairness_cfg.get("inception_weights"))
        lpips_model = None
        if fairness_cfg.get("lpips_net"):
            lpips_model = load_lpips(str(fairness_cfg.lpips_net), fairness_cfg.get("lpips_weights"))
        for model in (extractor, lpips_model):
            if model is not None and getattr(model, "weights_path", None) is not None:
                weight_files.append(Path(model.weights_path))
        measures.append(RealismMeasure(
            extractor, prepared.group_names,
            every_n_epochs=int(fairness_cfg.realism_every_n_epochs),
            fid_min_per_group=int(fairness_cfg.fid_min_per_group),
            kid_subset_size=int(fairness_cfg.get("kid_subset_size", 1000)),
            kid_subsets=int(fairness_cfg.get("kid_subsets", 100)),
            seed=seed, lpips_model=lpips_model,
        ))
    return measures, classifier, weight_files


def build_callbacks(cfg: DictConfig, prepared: PreparedData, run_dir: Path,
                    measures: list | None = None, classifier=None) -> list[L.Callback]:
    """Return the fairness callback, image logging, checkpointing and a progress bar.

    ``measures`` and ``classifier`` default to what :func:`build_measures` builds from
    ``callbacks.fairness``.
    """
    fairness_cfg = cfg.callbacks.fairness
    if measures is None:
        measures, classifier, _ = build_measures(cfg, prepared)
    callbacks: list[L.Callback] = [
        FairnessCallback(
            run_dir,
            prepared.group_names,
            per_image_every_n_epochs=int(fairness_cfg.per_image_every_n_epochs),
            min_group_size=int(fairness_cfg.min_group_size),
            confidence=float(fairness_cfg.confidence),
            n_resamples=int(fairness_cfg.n_resamples),
            seed=int(cfg.seed),
            measures=measures,
        ),
    ]
    callbacks += checkpoint_callbacks(run_dir, monitor=str(cfg.callbacks.checkpoint.monitor),
                                      mode=str(cfg.callbacks.checkpoint.mode),
                                      save_last=bool(cfg.callbacks.checkpoint.save_last))
    if int(fairness_cfg.get("images_per_group", 0)) > 0:
        callbacks.append(ReconstructionImageLogger(
            run_dir, prepared.group_names, images_per_group=int(fairness_cfg.images_per_group),
            every_n_epochs=int(fairness_cfg.get("images_every_n_epochs", 1)), classifier=classifier,
        ))
    if not cfg.trainer.get("enable_progress_bar", True):
        return callbacks
    if cfg.callbacks.get("progress_bar", "rich") == "rich":
        callbacks.append(RichProgressBar())
    else:
        callbacks.append(TQDMProgressBar())
    return callbacks


def run_task(cfg: DictConfig, prepared: PreparedData, run_dir: Path, manifest_sha: str) -> float | None:
    """Fit the model that ``cfg.task`` names and return the best monitored value."""
    if cfg.task == "classifier":
        from lightning_modules.classifier_pipeline import run_classifier

        return run_classifier(cfg, prepared, run_dir)
    if cfg.task != "codec":
        raise ValueError(f"unknown task {cfg.task!r}; expected 'codec' or 'classifier'")
    L.seed_everything(int(cfg.seed), workers=True)

    datamodule = FaceDataModule(cfg.data, cfg.split, int(cfg.seed), prepared=prepared)
    model = hydra.utils.instantiate(cfg.codec)
    measures, classifier, weight_files = build_measures(cfg, prepared)
    config = OmegaConf.to_container(cfg, resolve=True)
    codec_weights = (cfg.get("codec") or {}).get("weights_path")
    if codec_weights:
        weight_files.append(Path(codec_weights))
    if weight_files and rank_zero_only.rank == 0:
        write_provenance(run_dir, config, manifest_sha256=manifest_sha, weight_files=weight_files)
    loggers = build_loggers(cfg.logger, run_dir, run_name=run_name(cfg), config=config,
                            wandb_config=wandb_run_config(cfg))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers, callbacks=build_callbacks(cfg, prepared, run_dir, measures, classifier),
        default_root_dir=str(run_dir),
    )
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        finish_wandb()

    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    return None
