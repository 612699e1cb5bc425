"""RFW, Racial Faces in the Wild (Wang et al., ICCV 2019), with per-identity phenotypes.

Layout (``data.root`` itself, or its ``data/`` or ``test/data/`` folder as in the RFW
download)::

    African/m.011y5k/m.011y5k_0001.jpg   Asian/...   Caucasian/...   Indian/...

Phenotype labels come from ``RFW_metadata_FDA.csv`` (Yucer et al., "Measuring Hidden
Bias within Face Recognition via Racial Phenotypes", WACV 2022), one row per identity::

    Class_ID,skintype,lips,nose,eye,hairtype,haircolor
    African/m.011y5k,type6,big,wide,normal,curly,black

Every image takes its identity's six phenotypes. The images of identities missing from
the CSV stay in the table with unknown phenotypes (``""``, class -1 in batches). Those
identities are counted in the log and in the table's ``notes``. RFW has no official partition, so val and test are
carved out per group with whole identities, keeping identities disjoint across partitions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from datamodules.csv_labels import check_duplicates, check_labels, read_label_csv, resolve_label_file
from datamodules.groups import RFW4
from datamodules.images import open_image
from datamodules.paths import scan_images
from datamodules.table import FaceTable

log = logging.getLogger(__name__)

PHENOTYPES = {
    "skintype": ["type1", "type2", "type3", "type4", "type5", "type6"],
    "lips": ["big", "small"],
    "nose": ["wide", "narrow"],
    "eye": ["normal", "narrow"],
    "hairtype": ["straight", "wavy", "curly", "bald"],
    "haircolor": ["black", "brown", "gray", "blonde", "red"],
}
PHENOTYPE_FILE = "RFW_metadata_FDA.csv"
# RFW's images are already aligned face crops.
DEFAULT_FACE_CROP = 1.0


def find_rfw_image_folder(root: Path) -> Path:
    """Return the folder whose subfolders are the RFW groups: root, root/data or root/test/data."""
    for folder in (root, root / "data", root / "test" / "data"):
        if any((folder / group).is_dir() for group in RFW4):
            return folder
    raise FileNotFoundError(
        f"no RFW group folder ({', '.join(RFW4)}) found in {root}, {root / 'data'} or "
        f"{root / 'test' / 'data'}; set data.root to the folder that holds them"
    )


def load_rfw(root: str | Path, phenotype_csv: str | Path | None = None) -> FaceTable:
    """Load RFW images and join each identity's phenotypes.

    Parameters
    ----------
    root:
        Data root (see the module docstring for the layout).
    phenotype_csv:
        Path of ``RFW_metadata_FDA.csv``; relative paths are looked up under ``root`` first.
        ``None`` uses ``root/RFW_metadata_FDA.csv`` when it exists, and otherwise loads
        the images without phenotypes (with a warning).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"RFW root {root} does not exist; set data.root to the RFW image folder")
    image_folder = find_rfw_image_folder(root)
    samples = _scan(root, image_folder)

    phenotypes = _read_phenotypes(root, phenotype_csv)
    identities = samples["class_id"].drop_duplicates()
    if phenotypes is None:
        missing = set(identities)
        for name in PHENOTYPES:
            samples[name] = ""
    else:
        missing = set(identities) - set(phenotypes.index)
        joined = phenotypes.reindex(samples["class_id"])
        for name in PHENOTYPES:
            samples[name] = joined[name].fillna("").to_numpy()
        unused = len(set(phenotypes.index) - set(identities))
        if unused:
            log.info("rfw: %d identities of the phenotype file have no image folder", unused)

    notes = {"identities": len(identities)}
    if missing:
        images = int(samples["class_id"].isin(missing).sum())
        example = sorted(missing)[0]
        log.warning(
            "rfw: %d of %d identities (%d images) have no phenotype row, e.g. %s; their "
            "phenotypes are unknown (-1)",
            len(missing), len(identities), images, example,
        )
        notes["identities_without_phenotypes"] = len(missing)
        notes["images_without_phenotypes"] = images

    def load(row: pd.Series):
        return open_image(root / row["file"])

    attributes = {"race": list(RFW4), **{k: list(v) for k, v in PHENOTYPES.items()}}
    return FaceTable(
        dataset="rfw",
        samples=samples,
        group_names=list(RFW4),
        attributes=attributes,
        load_image=load,
        root=root,
        default_face_crop=DEFAULT_FACE_CROP,
        notes=notes,
        identity_column="class_id",
    )


def _scan(root: Path, image_folder: Path) -> pd.DataFrame:
    rows = []
    loose = 0
    for group in RFW4:
        group_folder = image_folder / group
        if not group_folder.is_dir():
            log.warning("rfw: group folder %s is missing; the group has no images", group_folder)
            continue
        for file in scan_images(group_folder, root):
            parts = Path(file).relative_to(image_folder.relative_to(root)).parts
            if len(parts) != 3:
                # Images must sit in <group>/<identity>/; anything else has no identity.
                loose += 1
                continue
            rows.append({"file": file, "group": group, "identity": parts[1]})
    if loose:
        log.warning("rfw: ignored %d images outside <group>/<identity>/ folders under %s", loose, image_folder)
    if not rows:
        raise ValueError(f"no RFW images (*.jpg, *.png) found in {image_folder}/<group>/<identity>/")
    frame = pd.DataFrame(rows)
    return pd.DataFrame(
        {
            "sample_id": frame["file"],
            "file": frame["file"],
            "pool": "all",
            "group": frame["group"],
            "race": frame["group"],
            "identity": frame["identity"],
            "class_id": frame["group"] + "/" + frame["identity"],
        }
    )


def _read_phenotypes(root: Path, phenotype_csv: str | Path | None) -> pd.DataFrame | None:
    """Return the phenotype table indexed by ``Class_ID``, or ``None`` without a file."""
    if phenotype_csv:
        path = resolve_label_file(phenotype_csv, root, "data.phenotype_csv")
    elif (root / PHENOTYPE_FILE).is_file():
        path = root / PHENOTYPE_FILE
    else:
        log.warning(
            "rfw: no phenotype file (data.phenotype_csv unset and %s absent); phenotypes are unknown",
            root / PHENOTYPE_FILE,
        )
        return None
    frame = read_label_csv(path, ("Class_ID", *PHENOTYPES))
    frame["Class_ID"] = frame["Class_ID"].str.strip()
    check_duplicates(frame, "Class_ID", path)
    group = frame["Class_ID"].str.split("/").str[0]
    malformed = (frame["Class_ID"].str.count("/") != 1) | ~group.isin(RFW4)
    if malformed.any():
        row = frame.loc[malformed].iloc[0]
        raise ValueError(
            f"{path}, line {row['_line']}: Class_ID {row['Class_ID']!r} is not "
            f"<group>/<identity> with a group in {list(RFW4)}"
        )
    for name, labels in PHENOTYPES.items():
        check_labels(frame, name, labels, path, fix="Fix the phenotype file.")
    return frame.set_index("Class_ID")[list(PHENOTYPES)]
