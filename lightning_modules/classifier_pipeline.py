"""The classifier job behind ``python train.py task=classifier experiment=classifier_fairface``.

It trains an :class:`AttributeClassifier` on the training split only, and test is never
seen in training. The job writes ``checkpoints/last.ckpt`` (the final weights) for the
fairness callback, and ``best-<epoch>.ckpt`` by val loss. It scores the final model per
group on val and test against the majority-class rate:

``classifier_accuracy.csv``  partition, attribute, group, n, acc, ci_low, ci_high, bal_acc,
                             majority_label, majority_rate, margin, beats_majority
``classifier_accuracy.md``   the same table in markdown
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from callbacks.provenance import sha256_file, write_provenance
from datamodules.datamodule import FaceDataModule
from datamodules.prepare import PreparedData
from lightning_modules.classifier import TINY_CNN, AttributeClassifier, find_cached_backbone_weights, group_accuracy_table
from lightning_modules.loggers import build_loggers, finish_wandb
from lightning_modules.pipeline import checkpoint_callbacks

log = logging.getLogger(__name__)

ACCURACY_FILE = "classifier_accuracy.csv"


def classifier_attributes(cfg: DictConfig, prepared: PreparedData) -> dict[str, list[str]]:
    """Return the dataset attributes that ``classifier.attributes`` selects (null: all)."""
    available = prepared.table.attributes
    chosen = cfg.classifier.get("attributes")
    if not chosen:
        return {name: list(labels) for name, labels in available.items()}
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"classifier.attributes {unknown} are not attributes of {prepared.table.dataset}: "
                         f"{sorted(available)}")
    return {name: list(available[name]) for name in chosen}


def build_classifier(cfg: DictConfig, prepared: PreparedData) -> AttributeClassifier:
    """Build the classifier that the ``classifier`` config group describes."""
    classifier_cfg = cfg.classifier
    if classifier_cfg.get("name", "none") == "none":
        raise ValueError("task=classifier needs a classifier config, e.g. classifier=resnet18 or classifier=tiny")
    return AttributeClassifier(
        attributes=classifier_attributes(cfg, prepared),
        group_names=prepared.group_names,
        backbone=str(classifier_cfg.backbone),
        pretrained=bool(classifier_cfg.get("pretrained", True)),
        backbone_weights=classifier_cfg.get("backbone_weights"),
        lr=float(classifier_cfg.get("lr", 1e-3)),
        weight_decay=float(classifier_cfg.get("weight_decay", 1e-4)),
        scheduler=str(classifier_cfg.get("scheduler", "cosine")),
        hflip=bool(classifier_cfg.get("hflip", True)),
        image_size=prepared.image_size,
    )


def classifier_run_name(cfg: DictConfig) -> str:
    return f"{cfg.experiment_name}-{cfg.classifier.backbone}-seed{cfg.seed}"


def classifier_wandb_config(cfg: DictConfig) -> dict:
    """Return the flat keys W&B dashboards group and filter classifier runs by."""
    return {
        "experiment": cfg.experiment_name,
        "task": cfg.task,
        "dataset": cfg.data.name,
        "split_kind": cfg.split.kind,
        "backbone": cfg.classifier.backbone,
        "lr": cfg.classifier.get("lr"),
        "seed": cfg.seed,
        "image_size": cfg.data.image_size,
    }


def predict_partition(model: AttributeClassifier, datamodule: FaceDataModule, partition: str):
    """Return labels, predictions (name -> int64 array) and group names of one partition."""
    loaders = {"val": datamodule.val_dataloader, "test": datamodule.test_dataloader}
    if partition not in loaders:
        raise ValueError(f"partition must be 'val' or 'test', got {partition!r}")
    loader = loaders[partition]()
    labels = {name: [] for name in model.attributes}
    predictions = {name: [] for name in model.attributes}
    groups: list[str] = []
    for batch in loader:
        predicted = model.predict(batch["image"])
        for name in model.attributes:
            labels[name].append(batch["attributes"][name].numpy())
            predictions[name].append(predicted[name].cpu().numpy())
        groups.extend(datamodule.group_names[int(g)] for g in batch["group"])
    stack = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return ({k: stack(v) for k, v in labels.items()}, {k: stack(v) for k, v in predictions.items()}, groups)


def accuracy_report(model: AttributeClassifier, datamodule: FaceDataModule,
                    partitions: tuple[str, ...] = ("val", "test")) -> pd.DataFrame:
    """Score ``model`` per group and attribute on ``partitions`` (see :func:`group_accuracy_table`)."""
    tables = []
    for partition in partitions:
        if len(datamodule.datasets[partition]) == 0:
            continue
        labels, predictions, groups = predict_partition(model, datamodule, partition)
        tables.append(group_accuracy_table(labels, predictions, groups, datamodule.group_names, model.attributes,
                                           partition=partition))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def format_accuracy_markdown(table: pd.DataFrame) -> str:
    """Render the accuracy table as markdown, one block per partition and attribute."""
    lines = []
    for (partition, attribute), rows in table.groupby(["partition", "attribute"], sort=False):
        lines += [f"### {attribute} ({partition})", "",
                  "| group | n | acc | 95% CI | bal_acc | majority | majority_rate | beats majority |",
                  "|---|---:|---:|---|---:|---|---:|---|"]
        for _, r in rows.iterrows():
            lines.append(
                f"| {r['group']} | {r['n']} | {r['acc']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
                f"{r['bal_acc']:.3f} | {r['majority_label']} | {r['majority_rate']:.3f} | "
                f"{'yes' if r['beats_majority'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def run_classifier(cfg: DictConfig, prepared: PreparedData, run_dir: Path) -> float | None:
    """Train the attribute classifier and write its checkpoint and accuracy table; returns the best val/loss."""
    _, trainer = fit_classifier(cfg, prepared, run_dir)
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    return None


def fit_classifier(cfg: DictConfig, prepared: PreparedData, run_dir: Path) -> tuple[AttributeClassifier, L.Trainer]:
    """Fit the classifier and write checkpoints and (on rank 0) the accuracy table; returns model and trainer."""
    run_dir = Path(run_dir)
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = FaceDataModule(cfg.data, cfg.split, int(cfg.seed), prepared=prepared)
    model = build_classifier(cfg, prepared)
    _record_backbone_weights(cfg, run_dir)

    config = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.logger, run_dir, run_name=classifier_run_name(cfg), config=config,
                            wandb_config=classifier_wandb_config(cfg))
    callbacks: list[L.Callback] = list(checkpoint_callbacks(
        run_dir, monitor=str(cfg.classifier.get("monitor", "val/loss")),
        mode=str(cfg.classifier.get("monitor_mode", "min")),
    ))
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar() if cfg.callbacks.get("progress_bar", "rich") == "rich" else TQDMProgressBar())
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers, callbacks=callbacks,
                                                 default_root_dir=str(run_dir))
    try:
        trainer.fit(model, datamodule=datamodule)
        if trainer.is_global_zero:
            table = accuracy_report(model.to(torch.device("cpu")), datamodule)
            _write_accuracy(table, run_dir, loggers)
    finally:
        finish_wandb()
    return model, trainer


def _record_backbone_weights(cfg: DictConfig, run_dir: Path) -> None:
    # Re-write provenance.json with the backbone weight file, when one is used.
    backbone = str(cfg.classifier.backbone)
    weights = cfg.classifier.get("backbone_weights")
    if weights is None and backbone != TINY_CNN and cfg.classifier.get("pretrained", True):
        weights = find_cached_backbone_weights(backbone)
    if weights is None or rank_zero_only.rank != 0:
        return
    manifest = run_dir / "split_manifest.csv"
    write_provenance(run_dir, OmegaConf.to_container(cfg, resolve=True),
                     manifest_sha256=sha256_file(manifest) if manifest.is_file() else None,
                     weight_files=[weights])


def _write_accuracy(table: pd.DataFrame, run_dir: Path, loggers) -> None:
    if table.empty:
        log.warning("no val or test images; classifier accuracy table not written")
        return
    table.to_csv(run_dir / ACCURACY_FILE, index=False)
    markdown = format_accuracy_markdown(table)
    (run_dir / "classifier_accuracy.md").write_text(markdown + "\n")
    log.info("classifier accuracy per group (majority rate = always predicting the group's most common "
             "label):\n%s", markdown)
    # Pooled rows decide: within one group the majority rate is often 1.0 (race inside a
    # race group), which no classifier can exceed.
    below = table[(table["group"] == "all") & (table["n"] > 0) & ~table["beats_majority"]]
    for _, row in below.iterrows():
        log.warning("classifier accuracy on %s %s is %.3f, not above the majority rate %.3f; see %s",
                    row["partition"], row["attribute"], row["acc"], row["majority_rate"], run_dir / ACCURACY_FILE)
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_table(key="classifier_accuracy", dataframe=table)
