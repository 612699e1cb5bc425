"""Fixed example reconstructions per group: a PNG grid in the run directory and a W&B table.

The same images are shown every epoch: per group, the ``images_per_group`` validation
images with the smallest ``sample_id``. Each rank keeps the smallest ids it receives, and
rank 0 takes the smallest over all ranks, so the choice does not depend on the number of
processes or the batch order.

Files: ``reconstructions/epoch_<epoch>.png``, with two rows per group (originals above
reconstructions). With a W&B logger: the table ``images/reconstructions`` (epoch, group,
sample_id, original, reconstruction and, with a classifier, each attribute's label and
predictions on both) and the grid as ``images/reconstruction_grid``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw

from callbacks.fairness_callback import is_final_epoch

log = logging.getLogger(__name__)

__all__ = ["ReconstructionImageLogger", "reconstruction_grid"]

GRID_DIR = "reconstructions"
MIN_TILE = 96  # pixels; smaller images are enlarged (nearest neighbour) to stay readable
LABEL_WIDTH = 180
PADDING = 4


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    # [B, 3, H, W] in [0, 1] -> [B, H, W, 3] uint8
    return (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def reconstruction_grid(examples: Sequence[Mapping[str, Any]], group_names: Sequence[str],
                        images_per_group: int) -> Image.Image:
    """Draw originals above reconstructions, two rows per group, labelled with the group name.

    ``examples`` are dicts with ``group`` (name), ``original`` and ``reconstruction``
    (uint8 ``[H, W, 3]``), in display order.
    """
    if not examples:
        raise ValueError("no examples to draw")
    height, width = examples[0]["original"].shape[:2]
    scale = max(1, int(np.ceil(MIN_TILE / max(height, width))))
    tile_h, tile_w = height * scale, width * scale
    rows = [(group, kind) for group in group_names for kind in ("original", "reconstruction")]
    canvas = Image.new("RGB", (LABEL_WIDTH + images_per_group * (tile_w + PADDING),
                               len(rows) * (tile_h + PADDING)), "white")
    draw = ImageDraw.Draw(canvas)
    for row_index, (group, kind) in enumerate(rows):
        top = row_index * (tile_h + PADDING)
        draw.text((4, top + tile_h // 2 - 6), f"{group}: {kind}", fill="black")
        group_examples = [e for e in examples if e["group"] == group][:images_per_group]
        for column, example in enumerate(group_examples):
            tile = Image.fromarray(example[kind]).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + column * (tile_w + PADDING), top))
    return canvas


class ReconstructionImageLogger(L.Callback):
    """Show the same few originals and reconstructions per group every logged epoch.

    Parameters
    ----------
    run_dir : path
        The PNG grids go to ``run_dir/reconstructions``.
    group_names : sequence of str
    images_per_group : int
        Examples per group (``callbacks.fairness.images_per_group``).
    every_n_epochs : int
        Log every n epochs and at the last epoch; 0 logs the last epoch only.
    classifier : optional
        With ``attributes`` and ``predict(images)``: adds each attribute's label and
        predictions on original and reconstruction to the W&B table.
    """

    def __init__(self, run_dir: str | Path, group_names: Sequence[str], *, images_per_group: int = 4,
                 every_n_epochs: int = 1, classifier: Any = None) -> None:
        if images_per_group < 1:
            raise ValueError(f"images_per_group must be at least 1, got {images_per_group}")
        self.run_dir = Path(run_dir)
        self.group_names = list(group_names)
        self.images_per_group = int(images_per_group)
        self.every_n_epochs = int(every_n_epochs)
        self.classifier = classifier
        self._selected: dict[str, dict[str, Any]] = {}
        self.last_examples: list[dict[str, Any]] = []

    def _active(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch
        every = self.every_n_epochs
        return is_final_epoch(trainer) or (every > 0 and (epoch + 1) % every == 0)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._selected = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None or not self._active(trainer):
            return
        sample_ids = [str(s) for s in outputs["sample_id"]]
        originals = _to_uint8(outputs["x"])
        reconstructions = _to_uint8(outputs["x_hat"])
        labels = outputs.get("attributes") or {}
        for index, sample_id in enumerate(sample_ids):
            group = self.group_names[int(outputs["group"][index])]
            self._keep({
                "sample_id": sample_id, "group": group, "original": originals[index],
                "reconstruction": reconstructions[index],
                "labels": {name: int(values[index]) for name, values in labels.items()},
            })

    def _keep(self, example: dict[str, Any]) -> None:
        # Keep the images_per_group smallest sample ids of each group seen so far.
        in_group = [e for e in self._selected.values() if e["group"] == example["group"]]
        if example["sample_id"] in self._selected:
            return
        if len(in_group) < self.images_per_group:
            self._selected[example["sample_id"]] = example
            return
        largest = max(in_group, key=lambda e: e["sample_id"])
        if example["sample_id"] < largest["sample_id"]:
            del self._selected[largest["sample_id"]]
            self._selected[example["sample_id"]] = example

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        # Every rank joins the gather, also ranks that kept nothing.
        candidates = list(self._selected.values())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[list[dict] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, candidates)
            candidates = [example for part in parts for example in (part or [])]
        if not trainer.is_global_zero:
            return

        self._selected = {}
        for example in candidates:
            self._keep(example)
        examples = sorted(self._selected.values(),
                          key=lambda e: (self.group_names.index(e["group"]), e["sample_id"]))
        if not examples:
            return
        self._add_predictions(examples)
        self.last_examples = examples

        epoch = int(trainer.current_epoch)
        grid = reconstruction_grid(examples, self.group_names, self.images_per_group)
        path = self.run_dir / GRID_DIR / f"epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        self._log_wandb(trainer, examples, path, epoch)

    def _add_predictions(self, examples: list[dict[str, Any]]) -> None:
        if self.classifier is None:
            return
        originals = torch.from_numpy(np.stack([e["original"] for e in examples])).permute(0, 3, 1, 2).float() / 255
        reconstructions = torch.from_numpy(np.stack([e["reconstruction"] for e in examples]))
        reconstructions = reconstructions.permute(0, 3, 1, 2).float() / 255
        on_original = self.classifier.predict(originals)
        on_reconstruction = self.classifier.predict(reconstructions)
        for index, example in enumerate(examples):
            example["predictions"] = {
                name: (int(on_original[name][index]), int(on_reconstruction[name][index]))
                for name in self.classifier.attributes
            }

    def _log_wandb(self, trainer: L.Trainer, examples: list[dict[str, Any]], grid_path: Path, epoch: int) -> None:
        wandb_loggers = [lg for lg in trainer.loggers if type(lg).__name__ == "WandbLogger"]
        if not wandb_loggers:
            return
        import wandb

        attributes = dict(self.classifier.attributes) if self.classifier is not None else {}
        columns = ["epoch", "group", "sample_id", "original", "reconstruction"]
        for name in attributes:
            columns += [f"{name}_label", f"{name}_pred_orig", f"{name}_pred_rec"]
        data = []
        for example in examples:
            row = [epoch, example["group"], example["sample_id"], wandb.Image(example["original"]),
                   wandb.Image(example["reconstruction"])]
            for name, labels in attributes.items():
                label = example["labels"].get(name, -1)
                predicted_orig, predicted_rec = example["predictions"][name]
                row += [labels[label] if label >= 0 else "", labels[predicted_orig], labels[predicted_rec]]
            data.append(row)
        for logger in wandb_loggers:
            logger.experiment.log({"images/reconstructions": wandb.Table(columns=columns, data=data),
                                   "images/reconstruction_grid": wandb.Image(str(grid_path)), "epoch": epoch})
