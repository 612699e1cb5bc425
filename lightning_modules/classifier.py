"""AttributeClassifier: one backbone, one linear head per face attribute or phenotype.

The fairness callback reads phenotypes and attributes from originals and
reconstructions with this classifier. It trains on the batch contract of
:mod:`datamodules` (``image`` in [0, 1], ``attributes`` name -> class index with -1 for
unknown, ``group``) and logs, every validation epoch, accuracy and balanced accuracy per
group on the originals: ``val/<attribute>/acc/<group>`` and
``val/<attribute>/bal_acc/<group>``.

Backbones are any timm model name (``resnet18`` by default, ``resnet10t`` is small) or
``tiny_cnn``, a four-layer CNN for tests and CPU demos. A timm backbone starts from
ImageNet weights only when a file is given or already in the local cache (``HF_HOME``
or ``TORCH_HOME``). Nothing is downloaded here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.groups import identifier
from fairness.intervals import wilson_interval

log = logging.getLogger(__name__)

__all__ = [
    "AttributeClassifier",
    "build_backbone",
    "find_cached_backbone_weights",
    "group_accuracy_table",
    "majority_rate",
]

TINY_CNN = "tiny_cnn"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCHEDULERS = ("cosine", "none")
UNKNOWN_LABEL = -1


# ---------------------------------------------------------------------------- backbones


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks and global average pooling; ``num_features`` outputs."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.num_features = channels[-1]

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def find_cached_backbone_weights(name: str) -> Path | None:
    """Return a cached ImageNet weight file of timm model ``name``, or None.

    Looks in the Hugging Face cache (``HF_HOME``) for the model's hub repository and in
    torch.hub's checkpoint folder (``TORCH_HOME/hub/checkpoints``) for its legacy URL's
    file name, the two places timm 1.0 downloads to.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id = cfg.hf_hub_id.split("@")[0]
        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else []) + ["model.safetensors",
                                                                                   "pytorch_model.bin"]:
            cached = try_to_load_from_cache(repo_id, filename)
            if isinstance(cached, str) and Path(cached).is_file():
                return Path(cached)
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if path.is_file():
            return path
    return None


def build_backbone(name: str, *, pretrained: bool = True, weights: str | Path | None = None) -> nn.Module:
    """Build a feature extractor without a classifier; it has a ``num_features`` attribute.

    Parameters
    ----------
    name : str
        ``tiny_cnn`` or any timm model name.
    pretrained : bool
        Load ImageNet weights when a cached file exists (see
        :func:`find_cached_backbone_weights`). Without one the backbone starts from
        random weights, with a warning.
    weights : path, optional
        A timm or torchvision state dict file for the backbone. It overrides the cache
        lookup and must exist.
    """
    if name == TINY_CNN:
        if weights is not None:
            raise ValueError(f"backbone {TINY_CNN!r} has no pretrained weights; drop backbone_weights={weights!r}")
        return TinyCNN()

    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: use {TINY_CNN!r} or a timm model name such as 'resnet18'")
    file: Path | None = None
    if weights is not None:
        file = Path(weights).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"backbone weights {file} not found; give an existing timm state dict file")
    elif pretrained:
        file = find_cached_backbone_weights(name)
        if file is None:
            log.warning(
                "no cached ImageNet weights for %s (HF_HOME or TORCH_HOME); the backbone starts from random "
                "weights. Pass backbone_weights=/path/to/file to start from a downloaded file.", name,
            )
    if file is None:
        return timm.create_model(name, pretrained=False, num_classes=0)
    log.info("backbone %s starts from %s", name, file)
    return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(file)})


def _check_attributes(attributes: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if not attributes:
        raise ValueError("attributes is empty; give at least one name -> label list")
    checked = {}
    for name, labels in attributes.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise ValueError(f"attribute name {name!r} must be an identifier (letters, digits, underscore)")
        labels = [str(label) for label in labels]
        if len(labels) < 2:
            raise ValueError(f"attribute {name!r} needs at least 2 labels, got {labels}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"attribute {name!r} has duplicate labels: {labels}")
        checked[str(name)] = labels
    return checked


# ---------------------------------------------------------------------------- module


class AttributeClassifier(L.LightningModule):
    """Multi-attribute face classifier on a shared backbone.

    Parameters
    ----------
    attributes : mapping
        Attribute name -> ordered label list (a FaceTable's ``attributes``). Head ``a``
        predicts an index into ``attributes[a]``.
    group_names : sequence of str, optional
        Groups in report order, for the per-group validation metrics. Without them only
        overall metrics are logged.
    backbone : str
        ``tiny_cnn`` or a timm model name.
    pretrained, backbone_weights
        See :func:`build_backbone`.
    lr, weight_decay : float
        AdamW settings.
    scheduler : {"cosine", "none"}
        ``cosine`` anneals the learning rate to 0 over ``trainer.max_epochs``.
    hflip : bool
        Mirror half of the training images at random (faces are near-symmetric).
    image_size : int, optional
        Side the classifier was trained at. :meth:`predict` resizes other sizes to it.
    """

    def __init__(
        self,
        attributes: Mapping[str, Sequence[str]],
        group_names: Sequence[str] | None = None,
        backbone: str = "resnet18",
        pretrained: bool = True,
        backbone_weights: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        hflip: bool = True,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        self.attributes = _check_attributes(attributes)
        self.group_names = [str(g) for g in group_names] if group_names else []
        self.save_hyperparameters({
            "attributes": self.attributes, "group_names": self.group_names, "backbone": backbone,
            "pretrained": bool(pretrained), "backbone_weights": None if backbone_weights is None else str(backbone_weights),
            "lr": float(lr), "weight_decay": float(weight_decay), "scheduler": scheduler, "hflip": bool(hflip),
            "image_size": None if image_size is None else int(image_size),
        })

        self.backbone = build_backbone(backbone, pretrained=pretrained, weights=backbone_weights)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(self.backbone.num_features, len(labels)) for name, labels in self.attributes.items()}
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._confusion: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ inference

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Return logits per attribute for RGB images in [0, 1], shape ``[B, 3, H, W]``."""
        features = self.backbone((images - self.mean) / self.std)
        return {name: head(features) for name, head in self.heads.items()}

    def predict(self, images: Tensor) -> dict[str, Tensor]:
        """Return the predicted class index per attribute (int64 ``[B]``), in eval mode.

        Images are moved to the module's device and resized to ``image_size`` when that
        is set and differs. The module's train/eval mode is restored afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                images = images.to(device=self.mean.device, dtype=torch.float32)
                size = self.hparams.get("image_size")
                if size and tuple(images.shape[-2:]) != (size, size):
                    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)
                return {name: logits.argmax(dim=1) for name, logits in self(images).items()}
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ training

    def _loss(self, logits: dict[str, Tensor], labels: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        # Mean cross-entropy over labelled images per attribute, summed over attributes.
        # reduction="sum" keeps an all-unknown batch at 0 where "mean" would give NaN.
        per_attribute = {}
        for name, attribute_logits in logits.items():
            target = labels[name].to(attribute_logits.device)
            n_labelled = int((target != UNKNOWN_LABEL).sum())
            summed = F.cross_entropy(attribute_logits, target, ignore_index=UNKNOWN_LABEL, reduction="sum")
            per_attribute[name] = summed / max(n_labelled, 1)
        return torch.stack(list(per_attribute.values())).sum(), per_attribute

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images = batch["image"]
        if self.hparams.hflip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        loss, per_attribute = self._loss(self(images), batch["attributes"])
        batch_size = images.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        for name, value in per_attribute.items():
            self.log(f"train/{name}/loss", value, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def on_validation_epoch_start(self) -> None:
        n_groups = max(len(self.group_names), 1)
        self._confusion = {
            name: torch.zeros(n_groups, len(labels), len(labels), dtype=torch.int64, device=self.device)
            for name, labels in self.attributes.items()
        }

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        logits = self(images)
        loss, _ = self._loss(logits, batch["attributes"])
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=images.shape[0])

        groups = batch["group"].to(self.device) if self.group_names else torch.zeros_like(batch["group"]).to(self.device)
        for name, attribute_logits in logits.items():
            labels = batch["attributes"][name].to(self.device)
            known = labels != UNKNOWN_LABEL
            n_classes = len(self.attributes[name])
            cells = (groups[known] * n_classes + labels[known]) * n_classes + attribute_logits.argmax(1)[known]
            counts = torch.bincount(cells, minlength=self._confusion[name].numel())
            self._confusion[name] += counts.view_as(self._confusion[name])

    def on_validation_epoch_end(self) -> None:
        for name, confusion in self._confusion.items():
            # Sum the confusion counts over ranks; every rank then logs the same values.
            # NOTE: a DistributedSampler repeats a few images to even out the shards, and
            # those count twice here. The codec's fairness callback deduplicates by
            # sample_id, this model-selection metric does not.
            confusion = self.trainer.strategy.reduce(confusion, reduce_op="sum") if self._trainer else confusion
            for group_index, group in enumerate(self.group_names or ["all"]):
                accuracy, balanced = _accuracy_from_confusion(confusion[group_index])
                suffix = f"/{identifier(group)}" if self.group_names else ""
                if np.isfinite(accuracy):
                    self.log(f"val/{name}/acc{suffix}", accuracy, on_epoch=True, sync_dist=False)
                    self.log(f"val/{name}/bal_acc{suffix}", balanced, on_epoch=True, sync_dist=False)
            if self.group_names:
                accuracy, balanced = _accuracy_from_confusion(confusion.sum(dim=0))
                if np.isfinite(accuracy):
                    self.log(f"val/{name}/acc", accuracy, on_epoch=True, sync_dist=False)
                    self.log(f"val/{name}/bal_acc", balanced, on_epoch=True, sync_dist=False)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        if self.hparams.scheduler == "none" or not max_epochs or max_epochs < 1:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _accuracy_from_confusion(confusion: Tensor) -> tuple[float, float]:
    # confusion[true, predicted]. Balanced accuracy is the mean recall over the classes
    # present, as sklearn.metrics.balanced_accuracy_score.
    confusion = confusion.double()
    total = float(confusion.sum())
    if total == 0:
        return float("nan"), float("nan")
    accuracy = float(confusion.diagonal().sum()) / total
    support = confusion.sum(dim=1)
    present = support > 0
    recalls = confusion.diagonal()[present] / support[present]
    return accuracy, float(recalls.mean())


# ---------------------------------------------------------------------------- evaluation


def majority_rate(labels) -> float:
    """Return the frequency of the most common known label (-1 is unknown); NaN if none.

    This is the accuracy of the best constant prediction on these images, the floor an
    informative classifier must beat.
    """
    labels = np.asarray(labels, dtype=np.int64)
    known = labels[labels != UNKNOWN_LABEL]
    if known.size == 0:
        return float("nan")
    return float(np.bincount(known).max() / known.size)


def group_accuracy_table(
    labels: Mapping[str, np.ndarray],
    predictions: Mapping[str, np.ndarray],
    groups: Sequence[str],
    group_names: Sequence[str],
    attributes: Mapping[str, Sequence[str]],
    *,
    partition: str = "val",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Tabulate accuracy per group and attribute next to the majority-class rate.

    Parameters
    ----------
    labels, predictions : mapping
        Attribute name -> class index per image (labels -1 where unknown).
    groups : sequence of str
        Group name per image.
    group_names : sequence of str
        Groups in report order; a pooled ``all`` row follows them.
    attributes : mapping
        Attribute name -> label list, for the majority label's name.

    Returns
    -------
    pandas.DataFrame
        Columns ``partition, attribute, group, n, acc, ci_low, ci_high`` (Wilson),
        ``bal_acc``, ``majority_label``, ``majority_rate`` (share of the group's most
        common label: the accuracy of always predicting it), ``margin`` (acc minus
        majority_rate) and ``beats_majority``.
    """
    groups = np.asarray(groups, dtype=object)
    rows = []
    for name in predictions:
        truth = np.asarray(labels[name], dtype=np.int64)
        predicted = np.asarray(predictions[name], dtype=np.int64)
        for group in list(group_names) + ["all"]:
            mask = (truth != UNKNOWN_LABEL) & (groups == group if group != "all" else True)
            n = int(mask.sum())
            row = {"partition": partition, "attribute": name, "group": group, "n": n}
            if n == 0:
                rows.append({**row, "acc": np.nan, "ci_low": np.nan, "ci_high": np.nan, "bal_acc": np.nan,
                             "majority_label": "", "majority_rate": np.nan, "margin": np.nan,
                             "beats_majority": False})
                continue
            correct = int((predicted[mask] == truth[mask]).sum())
            low, high = wilson_interval(correct, n, confidence)
            n_classes = len(attributes[name])
            confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64)
            confusion.index_put_((torch.from_numpy(truth[mask]), torch.from_numpy(predicted[mask])),
                                 torch.ones(n, dtype=torch.int64), accumulate=True)
            accuracy, balanced = _accuracy_from_confusion(confusion)
            rate = majority_rate(truth[mask])
            rows.append({
                **row, "acc": accuracy, "ci_low": float(low), "ci_high": float(high), "bal_acc": balanced,
                "majority_label": attributes[name][int(np.bincount(truth[mask]).argmax())],
                "majority_rate": rate, "margin": accuracy - rate, "beats_majority": bool(accuracy > rate),
            })
    return pd.DataFrame(rows)
