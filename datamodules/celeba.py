"""CelebA (Liu et al., "Deep Learning Face Attributes in the Wild", ICCV 2015), read directly.

torchvision's ``CelebA`` class checks the MD5 of every list file, which rejects subsets
and generated test data, so this module parses the files itself. Accepted layouts,
under ``data.root`` or ``data.root/celeba`` (torchvision's folder)::

    img_align_celeba/000001.jpg ...                  (or img_align_celeba/img_align_celeba/, Kaggle)
    list_attr_celeba.txt    list_eval_partition.txt  (official text files)
    list_attr_celeba.csv    list_eval_partition.csv  (Kaggle's CSV versions)

The 40 binary attributes keep their CelebA names with labels ``"0"`` (absent, CelebA's
-1) and ``"1"`` (present); ``gender`` (``Male``/``Female``, FairFace's spelling) is derived
from ``Male``. CelebA has no demographic labels: without ``data.group_csv`` every image is
in the single group ``all``; with it, groups come from that CSV (columns ``file,group``;
further columns become attributes) and images it does not list are dropped and counted.
The official partitions 0/1/2 become the pools ``train``/``val``/``test``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.csv_labels import check_duplicates, check_not_empty, order_groups, read_label_csv, resolve_label_file
from datamodules.images import open_image
from datamodules.paths import check_all_inside
from datamodules.table import BASE_COLUMNS, FaceTable

log = logging.getLogger(__name__)

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
BINARY_LABELS = ("0", "1")
GENDERS = ("Male", "Female")
ALL_GROUP = "all"
POOL_OF_PARTITION = {"0": "train", "1": "val", "2": "test"}
# The aligned 178 x 218 images centre the face. Keeping 0.8 of the width (142 px) is close
# to the common 140 px centre crop of CelebA generative-model work and drops most background.
DEFAULT_FACE_CROP = 0.8


def find_celeba_folder(root: str | Path) -> Path:
    """Return the folder that contains CelebA's list files: ``root`` or ``root/celeba``."""
    root = Path(root).expanduser().resolve()
    for folder in (root, root / "celeba"):
        if any((folder / f"list_attr_celeba.{ext}").is_file() for ext in ("txt", "csv")):
            return folder
    raise FileNotFoundError(
        f"CelebA list_attr_celeba.txt (or .csv) not found in {root} or {root / 'celeba'}; set "
        "data.root to the folder that holds img_align_celeba/ and the list files"
    )


def load_celeba(
    root: str | Path,
    *,
    attributes: Sequence[str] | None = None,
    group_csv: str | Path | None = None,
    group_names: Sequence[str] | None = None,
) -> FaceTable:
    """Load CelebA's aligned images with their attributes and official partitions.

    Parameters
    ----------
    root:
        Folder with ``img_align_celeba/`` and the list files, or its parent.
    attributes:
        CelebA attributes to keep (default: all 40). ``gender`` is always added.
    group_csv:
        Optional CSV with columns ``file,group`` (``file`` as in the list files, e.g.
        ``000001.jpg``, or relative to the root); further columns become attributes.
    group_names:
        Optional group order for the report; by default the groups sorted by name.
    """
    root = Path(root).expanduser().resolve()
    folder = find_celeba_folder(root)
    image_dir = _image_folder(folder)
    keep = _check_attribute_subset(attributes)

    labels, attribute_file = _read_attributes(folder)
    partitions = _read_partitions(folder)
    pools = labels["name"].map(partitions)
    if pools.isna().any():
        row = labels.loc[pools.isna()].iloc[0]
        raise ValueError(
            f"{attribute_file}, line {row['_line']}: {row['name']} has no row in the partition list "
            f"({int(pools.isna().sum())} images affected); list_eval_partition must cover "
            "every image of list_attr_celeba"
        )

    relative_dir = image_dir.relative_to(folder).as_posix()
    files = (relative_dir + "/" + labels["name"]).tolist()
    check_all_inside(folder, files, lambda i: f"{attribute_file}, line {labels['_line'].iloc[i]}")
    samples = pd.DataFrame({"sample_id": files, "file": files, "pool": pools.map(POOL_OF_PARTITION)})
    for name in keep:
        samples[name] = labels[name].to_numpy()
    samples["gender"] = np.where(labels["Male"].to_numpy() == "1", "Male", "Female")
    table_attributes = {name: list(BINARY_LABELS) for name in keep}
    table_attributes["gender"] = list(GENDERS)

    notes: dict[str, int] = {}
    if group_csv:
        path = resolve_label_file(group_csv, [root, folder], "data.group_csv")
        samples, names, extra = _join_groups(samples, labels["name"], path, relative_dir, group_names)
        table_attributes.update(extra)
        notes["images_without_group"] = len(labels) - len(samples)
    else:
        if group_names and list(group_names) != [ALL_GROUP]:
            raise ValueError(
                f"data.group_names={list(group_names)} needs data.group_csv; without it every "
                f"CelebA image is in the group {ALL_GROUP!r}"
            )
        samples["group"] = ALL_GROUP
        names = [ALL_GROUP]

    def load(row: pd.Series):
        return open_image(folder / row["file"])

    return FaceTable(
        dataset="celeba",
        samples=samples.reset_index(drop=True),
        group_names=names,
        attributes=table_attributes,
        load_image=load,
        root=folder,
        default_face_crop=DEFAULT_FACE_CROP,
        notes=notes,
    )


def _image_folder(folder: Path) -> Path:
    image_dir = folder / "img_align_celeba"
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"CelebA image folder {image_dir} not found; unpack img_align_celeba.zip into {folder}"
        )
    nested = image_dir / "img_align_celeba"
    # Kaggle's archive unpacks into img_align_celeba/img_align_celeba/.
    if nested.is_dir():
        return nested
    return image_dir


def _check_attribute_subset(attributes: Sequence[str] | None) -> list[str]:
    if attributes is None:
        return list(ATTRIBUTE_NAMES)
    unknown = [a for a in attributes if a not in ATTRIBUTE_NAMES]
    if unknown:
        raise ValueError(f"unknown CelebA attribute(s) {unknown} in data.attributes; valid names: {list(ATTRIBUTE_NAMES)}")
    return list(dict.fromkeys(attributes))


def _read_attributes(folder: Path) -> tuple[pd.DataFrame, Path]:
    """Return the columns ``name``, ``_line`` and one ``"0"``/``"1"`` column per attribute, and the file read."""
    text_file = folder / "list_attr_celeba.txt"
    if text_file.is_file():
        names, header, rows, lines = _read_whitespace_table(text_file, header_line=2)
        if header != list(ATTRIBUTE_NAMES):
            raise ValueError(
                f"{text_file}, line 2: expected the 40 CelebA attribute names in the official "
                f"order; found {header[:5]}... ({len(header)} names)"
            )
        values = np.array(rows, dtype=object)
        source = text_file
    else:
        csv_file = folder / "list_attr_celeba.csv"
        frame = read_label_csv(csv_file, ("image_id", *ATTRIBUTE_NAMES))
        names = frame["image_id"].tolist()
        values = frame[list(ATTRIBUTE_NAMES)].to_numpy(dtype=object)
        lines = frame["_line"].tolist()
        source = csv_file

    if not names:
        raise ValueError(f"{source} lists no images")
    valid = np.isin(values, ("1", "-1"))
    if not valid.all():
        row, column = np.argwhere(~valid)[0]
        raise ValueError(
            f"{source}, line {lines[row]}: {ATTRIBUTE_NAMES[column]} is {values[row, column]!r}; "
            "CelebA attributes must be 1 or -1"
        )
    frame = pd.DataFrame(np.where(values == "1", "1", "0"), columns=list(ATTRIBUTE_NAMES))
    frame.insert(0, "name", names)
    frame.insert(1, "_line", lines)
    check_duplicates(frame, "name", source)
    return frame, source


def _read_partitions(folder: Path) -> dict[str, str]:
    """Return image name -> official partition (``"0"``, ``"1"`` or ``"2"``)."""
    text_file = folder / "list_eval_partition.txt"
    if text_file.is_file():
        names, _, rows, lines = _read_whitespace_table(text_file, header_line=None)
        values = [row[0] for row in rows]
        source = text_file
    else:
        csv_file = folder / "list_eval_partition.csv"
        if not csv_file.is_file():
            raise FileNotFoundError(f"CelebA list_eval_partition.txt (or .csv) not found in {folder}")
        frame = read_label_csv(csv_file, ("image_id", "partition"))
        names, values, lines = frame["image_id"].tolist(), frame["partition"].tolist(), frame["_line"].tolist()
        source = csv_file
    for name, value, line in zip(names, values, lines):
        if value not in POOL_OF_PARTITION:
            raise ValueError(
                f"{source}, line {line}: partition {value!r} for {name}; expected 0 (train), "
                "1 (val) or 2 (test)"
            )
    return dict(zip(names, values))


def _read_whitespace_table(path: Path, header_line: int | None):
    """Parse CelebA's whitespace-separated list files.

    With ``header_line=2`` the file starts with the image count and a line of column
    names (list_attr_celeba.txt); with ``None`` every line is a row. Returns the image
    names, the header, the value rows and the 1-based line number of each row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not ASCII/UTF-8 text ({error.reason} at byte {error.start})") from None
    all_lines = text.splitlines()
    header: list[str] = []
    first = 0
    if header_line is not None:
        if len(all_lines) < 2:
            raise ValueError(f"{path} is empty or truncated; expected an image count, a header and rows")
        declared = all_lines[0].strip()
        if not declared.isdigit():
            raise ValueError(f"{path}, line 1: expected the image count, found {declared[:40]!r}")
        header = all_lines[1].split()
        first = 2

    names, rows, lines = [], [], []
    width = len(header) if header_line is not None else 1
    for number, line in enumerate(all_lines[first:], start=first + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width + 1:
            raise ValueError(
                f"{path}, line {number}: expected a file name and {width} value(s), found "
                f"{len(fields)} fields"
            )
        names.append(fields[0])
        rows.append(fields[1:])
        lines.append(number)
    if header_line is not None and int(all_lines[0].strip()) != len(names):
        log.warning("%s declares %s images on line 1 but lists %d", path, all_lines[0].strip(), len(names))
    if not names:
        raise ValueError(f"{path} lists no images")
    return names, header, rows, lines


def _join_groups(
    samples: pd.DataFrame,
    image_names: pd.Series,
    path: Path,
    relative_dir: str,
    group_names: Sequence[str] | None,
) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    """Attach the group (and any extra label columns) of ``path`` to ``samples``."""
    frame = read_label_csv(path, ("file", "group"))
    check_not_empty(frame, "file", path)
    check_not_empty(frame, "group", path)
    prefix = relative_dir + "/"
    frame["file"] = frame["file"].str.strip()
    frame["name"] = [f[len(prefix):] if f.startswith(prefix) else f for f in frame["file"]]
    check_duplicates(frame, "name", path)

    known = set(image_names)
    unknown = ~frame["name"].isin(known)
    if unknown.any():
        row = frame.loc[unknown].iloc[0]
        raise ValueError(
            f"{path}, line {row['_line']}: file {row['file']!r} is not in CelebA's attribute "
            f"list ({int(unknown.sum())} rows affected); use names such as 000001.jpg"
        )

    names = order_groups(frame, "group", path, group_names)
    extra_columns = [c for c in frame.columns if c not in ("file", "group", "name", "_line")]
    clashes = [c for c in extra_columns if c in samples.columns or c in BASE_COLUMNS]
    if clashes:
        raise ValueError(
            f"{path}: column(s) {clashes} clash with CelebA attributes or table columns; rename them"
        )
    extra = {c: sorted(v for v in frame[c].unique() if v != "") for c in extra_columns}

    by_name = frame.set_index("name")
    listed = image_names.isin(by_name.index).to_numpy()
    dropped = int((~listed).sum())
    if dropped:
        log.warning("celeba: %d of %d images have no row in %s and are left out", dropped, len(listed), path)
    joined = samples.loc[listed].copy()
    matched = by_name.loc[image_names[listed].to_numpy()]
    joined["group"] = matched["group"].to_numpy()
    for column in extra_columns:
        joined[column] = matched[column].to_numpy()
    return joined, names, extra


