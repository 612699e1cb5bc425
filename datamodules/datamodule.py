"""LightningDataModule over a prepared dataset: training split, val and test loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from datamodules.dataset import FaceDataset
from datamodules.prepare import PreparedData, prepare_data

log = logging.getLogger(__name__)


class FaceDataModule(L.LightningDataModule):
    """Serves the batch contract for the training split and the val and test partitions.

    Under DDP, Lightning wraps these loaders in a DistributedSampler: the training sampler
    reshuffles every epoch from ``seed`` and hands each rank a disjoint shard.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        split: Mapping[str, Any],
        seed: int = 0,
        prepared: PreparedData | None = None,
    ) -> None:
        super().__init__()
        self.data_cfg = data
        self.split_cfg = split
        self.seed = seed
        self.batch_size = int(data.get("batch_size", 16))
        self.eval_batch_size = int(data.get("eval_batch_size", self.batch_size))
        self.num_workers = int(data.get("num_workers", 0))
        self.prepared = prepared
        self.datasets: dict[str, FaceDataset] = {}

    @property
    def group_names(self) -> list[str]:
        return self.prepared.group_names

    @property
    def attributes(self) -> dict[str, list[str]]:
        return self.prepared.table.attributes

    def setup(self, stage: str | None = None) -> None:
        if self.prepared is None:
            self.prepared = prepare_data(self.data_cfg, self.split_cfg, self.seed)
        if self.datasets:
            return
        cache = bool(self.data_cfg.get("cache_in_memory", True))
        for partition in ("train", "val", "test"):
            self.datasets[partition] = FaceDataset(
                self.prepared.table,
                self.prepared.rows(partition),
                image_size=self.prepared.image_size,
                face_crop=self.prepared.face_crop,
                cache=cache,
                image_cache=self.prepared.image_cache,
            )

    def _loader(self, partition: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[partition],
            batch_size=self.batch_size if partition == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
