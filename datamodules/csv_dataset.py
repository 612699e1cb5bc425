"""Any face folder described by a CSV: file, group, attribute and partition columns by name.

    data.root=/data/faces data.csv_path=labels.csv data.file_column=path
    data.group_column=ethnicity data.attribute_columns=[gender,age]

File paths are relative to ``data.root`` and must stay inside it. Groups are the distinct
values of ``data.group_column`` (sorted, or in the order of ``data.group_names``); with
``data.group_column=null`` every image is in the group ``all``. Attribute labels are the
sorted distinct non-empty values of each column, or ``data.attribute_labels.<column>``;
an empty cell means unknown. ``data.partition_column`` (values ``train``, ``val``,
``test``, ``eval``) sets official partitions; without it val and test are carved out.
``data.identity_column`` keeps identities disjoint across partitions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from datamodules.csv_labels import (
    check_duplicates,
    check_labels,
    check_not_empty,
    order_groups,
    read_label_csv,
    resolve_label_file,
)
from datamodules.images import open_image
from datamodules.paths import check_all_inside
from datamodules.table import BASE_COLUMNS, FaceTable

log = logging.getLogger(__name__)

PARTITION_VALUES = ("train", "val", "test", "eval")
ALL_GROUP = "all"


def load_csv_dataset(
    root: str | Path,
    csv_path: str | Path,
    *,
    file_column: str = "file",
    group_column: str | None = "group",
    attribute_columns: Sequence[str] = (),
    partition_column: str | None = None,
    identity_column: str | None = None,
    group_names: Sequence[str] | None = None,
    attribute_labels: Mapping[str, Sequence[str]] | None = None,
    face_crop: float = 1.0,
    name: str = "csv",
) -> FaceTable:
    """Load the images a label CSV lists, with their group, attributes and partition.

    Parameters
    ----------
    root:
        Data root; every ``file_column`` path is relative to it.
    csv_path:
        Label CSV (UTF-8). A relative path is looked up under ``root`` first.
    face_crop:
        Default centre crop of this dataset (``data.face_crop`` overrides it per run).
    name:
        Dataset name shown in logs and reports.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist; set data.root to the image folder")
    path = resolve_label_file(csv_path, root, "data.csv_path")
    attribute_columns = list(attribute_columns or [])
    attribute_labels = dict(attribute_labels or {})
    _check_column_names(path, file_column, group_column, attribute_columns, partition_column, identity_column)

    required = [file_column, *attribute_columns]
    for column in (group_column, partition_column, identity_column):
        if column:
            required.append(column)
    frame = read_label_csv(path, tuple(dict.fromkeys(required)))

    check_not_empty(frame, file_column, path)
    files = [Path(os.path.normpath(f.strip())).as_posix() for f in frame[file_column]]
    frame["_file"] = files
    check_duplicates(frame, "_file", path)
    lines = frame["_line"].tolist()
    check_all_inside(root, files, lambda i: f"{path}, line {lines[i]}")

    if group_column:
        check_not_empty(frame, group_column, path)
        groups = frame[group_column].str.strip()
        names = order_groups(frame.assign(_group=groups), "_group", path, group_names)
    else:
        groups = pd.Series(ALL_GROUP, index=frame.index)
        names = [ALL_GROUP]

    if partition_column:
        check_labels(frame, partition_column, PARTITION_VALUES, path, fix="Fix the partition column.")
        pools = frame[partition_column]
    else:
        pools = pd.Series("all", index=frame.index)

    samples = pd.DataFrame({"sample_id": files, "file": files, "pool": pools.to_numpy(), "group": groups.to_numpy()})
    if group_column and group_column not in BASE_COLUMNS:
        # Keep the raw column so a registered group scheme (e.g. fairface7 reading "race") can map it.
        samples[group_column] = groups.to_numpy()
    if identity_column:
        samples[identity_column] = frame[identity_column].str.strip().to_numpy()

    attributes: dict[str, list[str]] = {}
    for column in attribute_columns:
        values = frame[column].str.strip()
        if column in attribute_labels:
            labels = [str(v) for v in attribute_labels[column]]
            check_labels(
                frame.assign(**{column: values}).loc[values != ""], column, labels, path,
                fix=f"Fix the label file or add the value to data.attribute_labels.{column}.",
            )
        else:
            labels = sorted(v for v in values.unique() if v != "")
        attributes[column] = labels
        samples[column] = values.to_numpy()
    unused_labels = sorted(set(attribute_labels) - set(attribute_columns))
    if unused_labels:
        raise ValueError(
            f"data.attribute_labels names column(s) {unused_labels} that are not in "
            f"data.attribute_columns {attribute_columns}"
        )

    def load(row: pd.Series):
        return open_image(root / row["file"])

    return FaceTable(
        dataset=name,
        samples=samples,
        group_names=names,
        attributes=attributes,
        load_image=load,
        root=root,
        default_face_crop=float(face_crop),
        identity_column=identity_column or None,
    )


def _check_column_names(
    path: Path,
    file_column: str,
    group_column: str | None,
    attribute_columns: list[str],
    partition_column: str | None,
    identity_column: str | None,
) -> None:
    reserved = [c for c in attribute_columns if c in BASE_COLUMNS]
    if reserved:
        raise ValueError(
            f"data.attribute_columns {reserved} use reserved table column names {list(BASE_COLUMNS)}; "
            f"rename those columns in {path}"
        )
    roles = {"data.file_column": file_column, "data.partition_column": partition_column,
             "data.identity_column": identity_column}
    for key, column in roles.items():
        if column and column in attribute_columns:
            raise ValueError(f"{key}={column} is also listed in data.attribute_columns; a column has one role")
    if group_column and group_column == file_column:
        raise ValueError(f"data.group_column and data.file_column are both {file_column!r}")


