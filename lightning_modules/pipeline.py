"""The training job behind train.py: data module, model, loggers, callbacks, Trainer."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from callbacks.fairness_callback import FairnessCallback
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


def build_callbacks(cfg: DictConfig, prepared: PreparedData, run_dir: Path) -> list[L.Callback]:
    fairness_cfg = cfg.callbacks.fairness
    callbacks: list[L.Callback] = [
        FairnessCallback(
            run_dir,
            prepared.group_names,
            per_image_every_n_epochs=int(fairness_cfg.per_image_every_n_epochs),
            min_group_size=int(fairness_cfg.min_group_size),
            confidence=float(fairness_cfg.confidence),
            n_resamples=int(fairness_cfg.n_resamples),
            seed=int(cfg.seed),
        ),
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="best-{epoch:03d}",
            monitor=cfg.callbacks.checkpoint.monitor,
            mode=cfg.callbacks.checkpoint.mode,
            save_last=bool(cfg.callbacks.checkpoint.save_last),
            save_top_k=1,
        ),
    ]
    if cfg.callbacks.get("progress_bar", "rich") == "rich":
        callbacks.append(RichProgressBar())
    else:
        callbacks.append(TQDMProgressBar())
    return callbacks


def run_task(cfg: DictConfig, prepared: PreparedData, run_dir: Path, manifest_sha: str) -> float | None:
    """Fit the model that ``cfg.task`` names and return the best monitored value."""
    if cfg.task != "codec":
        raise ValueError(f"unknown task {cfg.task!r}; expected 'codec' or 'classifier'")
    L.seed_everything(int(cfg.seed), workers=True)

    datamodule = FaceDataModule(cfg.data, cfg.split, int(cfg.seed), prepared=prepared)
    model = hydra.utils.instantiate(cfg.codec)
    config = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.logger, run_dir, run_name=run_name(cfg), config=config,
                            wandb_config=wandb_run_config(cfg))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=loggers, callbacks=build_callbacks(cfg, prepared, run_dir),
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
