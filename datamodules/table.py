"""The sample table every dataset loader produces.

A :class:`FaceTable` lists the labelled samples of one dataset before partitioning. Its
``samples`` DataFrame has the columns

``sample_id``  stable id: the path relative to the data root, or ``synthetic:<seed>:<index>``
``file``       path relative to the data root (empty for generated samples)
``pool``       ``train`` (official training part), ``eval`` (one official evaluation part,
               split later into val and test), ``val`` and ``test`` (official validation
               and test parts), or ``all`` (the dataset has no official partition)
``group``      group name under the active group scheme
one column per attribute, holding the label string, or ``""`` when unknown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from datamodules.groups import GroupScheme, get_scheme

log = logging.getLogger(__name__)

POOLS = ("train", "eval", "val", "test", "all")
BASE_COLUMNS = ("sample_id", "file", "pool", "group")


@dataclass
class FaceTable:
    """Labelled face samples of one dataset.

    Attributes
    ----------
    dataset:
        Dataset name (``fairface``, ``synthetic``, ...).
    samples:
        One row per sample; columns described in the module docstring.
    group_names:
        Groups in report order.
    attributes:
        Attribute name -> ordered label set. Class index ``k`` in batches means
        ``attributes[name][k]``; ``-1`` means unknown.
    load_image:
        Returns the RGB PIL image of one row of ``samples``.
    root:
        Data root, or ``None`` for generated data.
    default_face_crop:
        Fraction of the image side kept by the center crop when ``data.face_crop`` is unset.
    notes:
        Counts worth reporting, such as rows dropped by the group scheme or identities
        without phenotype labels.
    identity_column:
        Column of ``samples`` naming each sample's identity; when set, partitions keep
        identities disjoint between train, val and test.
    """

    dataset: str
    samples: pd.DataFrame
    group_names: list[str]
    attributes: dict[str, list[str]]
    load_image: Callable[[pd.Series], Image.Image]
    root: Path | None = None
    default_face_crop: float = 1.0
    notes: dict[str, int] = field(default_factory=dict)
    identity_column: str | None = None

    def __post_init__(self) -> None:
        missing = [c for c in BASE_COLUMNS if c not in self.samples.columns]
        if missing:
            raise ValueError(f"{self.dataset}: sample table lacks columns {missing}")
        bad_pool = sorted(set(self.samples["pool"]) - set(POOLS))
        if bad_pool:
            raise ValueError(f"{self.dataset}: unknown pool values {bad_pool}; expected {POOLS}")
        duplicated = self.samples["sample_id"].duplicated()
        if duplicated.any():
            first = self.samples.loc[duplicated, "sample_id"].iloc[0]
            raise ValueError(
                f"{self.dataset}: {int(duplicated.sum())} duplicate sample ids, first {first!r}; "
                "each image must be listed once"
            )
        if self.identity_column is not None and self.identity_column not in self.samples.columns:
            raise ValueError(
                f"{self.dataset}: identity column {self.identity_column!r} is not a column of "
                "the sample table"
            )
        unknown_groups = sorted(set(self.samples["group"]) - set(self.group_names))
        if unknown_groups:
            raise ValueError(
                f"{self.dataset}: groups {unknown_groups} are not in group_names {self.group_names}"
            )

    def encode_attributes(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Return attribute class indices (int64, -1 where unknown) for ``rows``."""
        encoded = {}
        for name, labels in self.attributes.items():
            lookup = {label: k for k, label in enumerate(labels)}
            encoded[name] = np.array(
                [lookup.get(v, -1) for v in rows[name].astype(str)], dtype=np.int64
            )
        return encoded

    def group_indices(self, rows: pd.DataFrame) -> np.ndarray:
        lookup = {g: k for k, g in enumerate(self.group_names)}
        return np.array([lookup[g] for g in rows["group"]], dtype=np.int64)


def apply_group_scheme(table: FaceTable, scheme: str) -> FaceTable:
    """Regroup ``table`` under a named scheme, dropping (and logging) unmapped samples.

    ``scheme`` is ``native`` (keep the loader's groups), a registered scheme name, or an
    intersection ``<scheme>*<attribute>`` such as ``fairface7*gender``, whose groups are
    ``"<group> x <label>"`` in scheme-major order.
    """
    if scheme in ("native", "", None):
        return table

    base_name, _, cross = scheme.partition("*")
    if base_name == "native":
        samples = table.samples.copy()
        group_names = list(table.group_names)
    else:
        base = get_scheme(base_name)
        samples, group_names = _map_groups(table, base)

    if cross:
        if cross not in table.attributes:
            raise ValueError(
                f"cannot intersect groups with {cross!r}: {table.dataset} has attributes "
                f"{sorted(table.attributes)}"
            )
        unknown = samples[cross].astype(str) == ""
        if unknown.any():
            log.warning(
                "%s: dropped %d samples with unknown %s for groups %r",
                table.dataset, int(unknown.sum()), cross, scheme,
            )
            samples = samples.loc[~unknown]
        labels = table.attributes[cross]
        samples = samples.assign(group=samples["group"] + " x " + samples[cross].astype(str))
        group_names = [f"{g} x {label}" for g in group_names for label in labels]
        # Not every combination occurs (CelebA's attributes, a single-gender group), and a
        # group without images could never be evaluated, so empty combinations are dropped.
        present = set(samples["group"])
        empty = [g for g in group_names if g not in present]
        if empty:
            log.warning("%s: group scheme %r has no images for %s; these groups are left out",
                        table.dataset, scheme, empty)
            group_names = [g for g in group_names if g in present]

    notes = dict(table.notes)
    notes["dropped_by_group_scheme"] = len(table.samples) - len(samples)
    return replace(table, samples=samples.reset_index(drop=True), group_names=group_names, notes=notes)


def _map_groups(table: FaceTable, scheme: GroupScheme) -> tuple[pd.DataFrame, list[str]]:
    column = scheme.source_attribute
    if column not in table.samples.columns:
        raise ValueError(
            f"group scheme {scheme.name!r} reads attribute {column!r}, which {table.dataset} "
            f"does not have (attributes: {sorted(table.attributes)})"
        )
    labels = table.samples[column].astype(str)
    unknown = sorted(set(labels) - set(scheme.mapping))
    if unknown:
        raise ValueError(
            f"group scheme {scheme.name!r} has no mapping for {column} labels {unknown}; "
            f"known labels: {sorted(scheme.mapping)}"
        )
    groups = labels.map(scheme.mapping)
    keep = groups.notna()
    dropped = int((~keep).sum())
    if dropped:
        log.warning(
            "%s: group scheme %s dropped %d of %d samples whose %s has no group (%s)",
            table.dataset, scheme.name, dropped, len(groups), column,
            ", ".join(sorted(set(labels[~keep]))),
        )
    samples = table.samples.loc[keep].assign(group=groups[keep])
    return samples, list(scheme.group_names)
