"""From a data config to partitions, a training split and the split manifest."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from datamodules.groups import resolve_group_key
from datamodules.partitions import assign_partitions
from datamodules.registry import load_table
from datamodules.splits import draw_training_split, split_counts
from datamodules.table import FaceTable, apply_group_scheme

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("sample_id", "file", "partition", "in_training", "group")


@dataclass
class PreparedData:
    """A dataset with its partitions and training split decided."""

    table: FaceTable
    manifest: pd.DataFrame
    face_crop: float
    image_size: int

    @property
    def group_names(self) -> list[str]:
        return self.table.group_names

    def rows(self, partition: str) -> pd.DataFrame:
        """Return the table rows of ``partition``; ``train`` means the drawn training split."""
        if partition == "train":
            mask = self.manifest["in_training"] == 1
        else:
            mask = self.manifest["partition"] == partition
        return self.table.samples.loc[mask.to_numpy()]

    def counts(self) -> pd.DataFrame:
        """Return per-group image counts: train pool, training split, val, test."""
        m = self.manifest
        frame = pd.DataFrame(
            {
                "train_pool": m[m["partition"] == "train"].groupby("group").size(),
                "training": m[m["in_training"] == 1].groupby("group").size(),
                "val": m[m["partition"] == "val"].groupby("group").size(),
                "test": m[m["partition"] == "test"].groupby("group").size(),
            }
        )
        frame = frame.reindex(self.group_names).fillna(0).astype(int)
        frame.loc["total"] = frame.sum()
        return frame


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers to plain Python containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    return value


def prepare_data(data_cfg: Mapping[str, Any], split_cfg: Mapping[str, Any], seed: int) -> PreparedData:
    """Load the dataset, assign partitions, draw the training split and build the manifest.

    Val and test depend only on ``data.eval_seed``; the training draw depends on ``seed``.
    """
    data_cfg = _plain(data_cfg)
    split_cfg = _plain(split_cfg)
    table = load_table(data_cfg)
    table = apply_group_scheme(table, data_cfg.get("group_scheme") or "native")
    samples = table.samples

    partition = assign_partitions(
        samples,
        table.group_names,
        eval_seed=int(data_cfg.get("eval_seed", 0)),
        eval_fraction=float(data_cfg.get("eval_fraction", 0.1)),
    )
    pool = samples.loc[partition == "train"]
    counts = split_counts(
        pool["group"].value_counts().to_dict(),
        table.group_names,
        str(split_cfg.get("kind", "natural")),
        per_group=split_cfg.get("per_group"),
        proportions=split_cfg.get("proportions"),
        total=split_cfg.get("total"),
    )
    chosen = draw_training_split(pool, counts, table.group_names, seed)

    manifest = pd.DataFrame(
        {
            "sample_id": samples["sample_id"],
            "file": samples["file"],
            "partition": partition,
            "in_training": samples.index.isin(chosen).astype(int),
            "group": samples["group"],
        }
    )
    for attribute in table.attributes:
        manifest[attribute] = samples[attribute].astype(str)

    face_crop = data_cfg.get("face_crop")
    face_crop = table.default_face_crop if face_crop is None else float(face_crop)
    return PreparedData(table, manifest.reset_index(drop=True), face_crop, int(data_cfg.get("image_size", 64)))


def write_manifest(manifest: pd.DataFrame, path: Path) -> str:
    """Write ``split_manifest.csv`` and return its sha256 (hex)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False, lineterminator="\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def format_counts(counts: pd.DataFrame) -> str:
    """Render the per-group count table as markdown."""
    header = "| group | " + " | ".join(counts.columns) + " |"
    rule = "|---|" + "---:|" * len(counts.columns)
    lines = [header, rule]
    for group, row in counts.iterrows():
        lines.append(f"| {group} | " + " | ".join(str(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


__all__ = ["PreparedData", "prepare_data", "write_manifest", "format_counts", "resolve_group_key"]
