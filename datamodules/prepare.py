"""From a data config to partitions, a training split and the split manifest."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from datamodules.groups import resolve_group_key
from datamodules.image_cache import DiskImageCache, make_disk_cache
from datamodules.image_check import SKIPPED_COLUMNS, ImageCheckReport, check_images
from datamodules.partitions import assign_partitions
from datamodules.registry import load_table
from datamodules.splits import draw_training_split, split_counts
from datamodules.table import FaceTable, apply_group_scheme

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("sample_id", "file", "partition", "in_training", "group")
SKIPPED_FILE = "skipped_images.csv"


@dataclass
class PreparedData:
    """A dataset with its partitions and training split decided.

    Attributes
    ----------
    image_cache:
        Disk cache of decoded images to hand to :class:`FaceDataset`, or ``None``.
    image_check:
        What the preparation pass over the images did, or ``None`` if it did not run.
    """

    table: FaceTable
    manifest: pd.DataFrame
    face_crop: float
    image_size: int
    image_cache: DiskImageCache | None = None
    image_check: ImageCheckReport | None = None

    @property
    def skipped(self) -> pd.DataFrame | None:
        """Images left out by ``data.on_bad_image=skip``, or ``None`` in ``error`` mode."""
        return _skipped_from(self.manifest)

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
    """Load the dataset, check its images, assign partitions, draw the training split.

    Every file-backed image is decoded once (or found in the disk cache) before the
    partitions are drawn, so bad images fail here (``data.on_bad_image=error``) or are
    left out of every partition (``skip``). Val and test depend only on
    ``data.eval_seed``; the training draw depends on ``seed``.
    """
    started = time.perf_counter()
    data_cfg = _plain(data_cfg)
    split_cfg = _plain(split_cfg)
    table = load_table(data_cfg)
    table = apply_group_scheme(table, data_cfg.get("group_scheme") or "native")

    face_crop = data_cfg.get("face_crop")
    face_crop = table.default_face_crop if face_crop is None else float(face_crop)
    image_size = int(data_cfg.get("image_size", 64))
    on_bad_image = str(data_cfg.get("on_bad_image", "error"))
    cache = make_disk_cache(data_cfg, table.root)
    report = None
    if data_cfg.get("verify_images", True):
        table, report = check_images(
            table,
            image_size,
            face_crop,
            cache=cache,
            on_bad_image=on_bad_image,
            workers=data_cfg.get("decode_workers"),
            progress=data_cfg.get("progress"),
        )
    else:
        log.info("%s: data.verify_images=false, so bad images surface only when loaded", table.dataset)
    samples = table.samples

    eval_per_group = data_cfg.get("eval_per_group")
    partition = assign_partitions(
        samples,
        table.group_names,
        eval_seed=int(data_cfg.get("eval_seed", 0)),
        eval_fraction=float(data_cfg.get("eval_fraction", 0.1)),
        identity_column=table.identity_column,
        eval_per_group=int(eval_per_group) if eval_per_group is not None else None,
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
    manifest = manifest.reset_index(drop=True)
    if report is not None and on_bad_image == "skip":
        # Carried on the manifest so that write_manifest(prepared.manifest, ...) writes
        # skipped_images.csv beside it; plain records keep pandas' attrs comparisons safe.
        manifest.attrs["skipped_images"] = report.skipped.to_dict("records")

    for key, value in table.notes.items():
        if value:
            log.info("%s: %s = %d", table.dataset, key, value)
    log.info("%s: data prepared in %.2f s", table.dataset, time.perf_counter() - started)
    return PreparedData(table, manifest, face_crop, image_size, image_cache=cache, image_check=report)


def _skipped_from(manifest: pd.DataFrame) -> pd.DataFrame | None:
    records = manifest.attrs.get("skipped_images")
    if records is None:
        return None
    return pd.DataFrame(records, columns=list(SKIPPED_COLUMNS))


def write_manifest(manifest: pd.DataFrame, path: Path, skipped: pd.DataFrame | None = None) -> str:
    """Write ``split_manifest.csv`` and return its sha256 (hex).

    In ``data.on_bad_image=skip`` mode (or when ``skipped`` is given) it also writes
    ``skipped_images.csv`` (``sample_id,file,group,error``) beside the manifest, even
    when no image was skipped, so a run directory shows that the check ran.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(path, index=False, lineterminator="\n")
    if skipped is None:
        skipped = _skipped_from(manifest)
    if skipped is not None:
        skipped.to_csv(path.parent / SKIPPED_FILE, index=False, lineterminator="\n")
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
