"""FairFace (Karkkainen and Joo, WACV 2021) in its official layout or through HF datasets.

Official layout::

    root/train/*.jpg  root/val/*.jpg
    root/fairface_label_train.csv  root/fairface_label_val.csv   (file,age,gender,race[,service_test])

The official val file becomes the evaluation pool (split later into val and test); the
train file is the pool that training splits draw from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from datamodules.csv_labels import check_duplicates, check_labels, read_label_csv
from datamodules.groups import FAIRFACE7
from datamodules.paths import check_all_inside
from datamodules.images import open_image
from datamodules.table import FaceTable

log = logging.getLogger(__name__)

GENDERS = ("Male", "Female")
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
ATTRIBUTES = {"race": list(FAIRFACE7), "gender": list(GENDERS), "age": list(AGE_BINS)}
# The padding-1.25 release pads faces widely; keeping the central half of the side frames
# the face as tightly as the padding-0.25 release does.
DEFAULT_FACE_CROP = 0.5
HF_NAME = "HuggingFaceM4/FairFace"


def load_fairface(root: str | Path) -> FaceTable:
    """Load FairFace from the official folder layout under ``root``."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"FairFace root {root} does not exist; set data.root to the folder that contains "
            "train/, val/ and fairface_label_{train,val}.csv"
        )

    parts = []
    for pool, csv_name in (("train", "fairface_label_train.csv"), ("eval", "fairface_label_val.csv")):
        path = root / csv_name
        frame = read_label_csv(path, ("file", "age", "gender", "race"))
        for column, allowed in ATTRIBUTES.items():
            check_labels(frame, column, allowed, path)
        check_duplicates(frame, "file", path)
        files, lines = frame["file"].tolist(), frame["_line"].tolist()
        check_all_inside(root, files, lambda i: f"{path}, line {lines[i]}")
        frame = frame.assign(pool=pool)
        parts.append(frame)

    labels = pd.concat(parts, ignore_index=True)
    samples = pd.DataFrame(
        {
            "sample_id": labels["file"],
            "file": labels["file"],
            "pool": labels["pool"],
            "group": labels["race"],
            "race": labels["race"],
            "gender": labels["gender"],
            "age": labels["age"],
        }
    )

    def load(row: pd.Series):
        return open_image(root / row["file"])

    return FaceTable(
        dataset="fairface",
        samples=samples,
        group_names=list(FAIRFACE7),
        attributes={k: list(v) for k, v in ATTRIBUTES.items()},
        load_image=load,
        root=root,
        default_face_crop=DEFAULT_FACE_CROP,
    )


def load_fairface_hf(config: str = "1.25", name: str = HF_NAME, cache_dir: str | None = None) -> FaceTable:
    """Load FairFace through Hugging Face ``datasets`` (configs ``"0.25"`` and ``"1.25"``).

    Uses the local HF cache when present and downloads otherwise; offline with an empty
    cache this raises with the command to run on a connected machine.
    """
    import datasets

    try:
        splits = datasets.load_dataset(name, config, cache_dir=cache_dir)
    except Exception as error:  # datasets raises several types for a missing cache offline
        raise RuntimeError(
            f"could not load {name} (config {config!r}) through Hugging Face datasets: {error}. "
            f"On a connected machine run `python -c \"import datasets; datasets.load_dataset('{name}', '{config}')\"` "
            "to fill the cache (HF_HOME), or use the official folder layout with data.source=folder"
        ) from error

    rows = []
    for split_name, pool in (("train", "train"), ("validation", "eval")):
        split = splits[split_name]
        features = split.features
        for column in ("race", "gender", "age"):
            if column not in features:
                raise ValueError(f"{name}/{split_name} lacks column {column!r}; found {list(features)}")
        table = split.select_columns(["race", "gender", "age"]).to_pandas()
        for column in ("race", "gender", "age"):
            if hasattr(features[column], "int2str"):
                table[column] = [features[column].int2str(int(v)) for v in table[column]]
        prefix = "val" if pool == "eval" else "train"
        table.insert(0, "sample_id", [f"{prefix}/{i}" for i in range(len(table))])
        table["pool"] = pool
        table["split"] = split_name
        table["index"] = range(len(table))
        rows.append(table)

    labels = pd.concat(rows, ignore_index=True)
    # Hugging Face spells two classes with a space or hyphen; map to the official CSV names.
    labels["race"] = labels["race"].replace({"Latino Hispanic": "Latino_Hispanic"})
    for column, allowed in ATTRIBUTES.items():
        bad = sorted(set(labels[column]) - set(allowed))
        if bad:
            raise ValueError(f"{name}: unknown {column} labels {bad}; allowed: {allowed}")

    samples = labels.assign(file="", group=labels["race"])[
        ["sample_id", "file", "pool", "group", "race", "gender", "age", "split", "index"]
    ]

    def load(row: pd.Series):
        from datamodules.images import to_rgb

        return to_rgb(splits[row["split"]][int(row["index"])]["image"])

    default_crop = DEFAULT_FACE_CROP if config == "1.25" else 1.0
    return FaceTable(
        dataset="fairface",
        samples=samples,
        group_names=list(FAIRFACE7),
        attributes={k: list(v) for k, v in ATTRIBUTES.items()},
        load_image=load,
        root=None,
        default_face_crop=default_crop,
    )
