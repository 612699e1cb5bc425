"""UTKFace (Zhang, Song and Qi, CVPR 2017): labels parsed from the file names.

Every image under ``data.root`` (any depth, so ``UTKFace/``, ``crop_part1/`` and the
in-the-wild ``part1/`` to ``part3/`` folders all work) is named
``<age>_<gender>_<race>_<date&time>.jpg``, in the aligned release with an extra
``.chip.jpg``. Gender is 0 male or 1 female. Race is 0 White, 1 Black, 2 Asian,
3 Indian or 4 Others (Hispanic, Latino, Middle Eastern). Age is 0 to 116 years. Names that do not
parse (a few official files lack the race field) are left out, counted in the log and
in the table's ``notes``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from datamodules.fairface import AGE_BINS
from datamodules.groups import UTKFACE5
from datamodules.images import open_image
from datamodules.paths import scan_images
from datamodules.table import FaceTable

log = logging.getLogger(__name__)

GENDERS = ("Male", "Female")
MAX_AGE = 116
AGE_FORMATS = ("bins", "years")
# The aligned-and-cropped release (200 x 200) has a little margin around the face.
DEFAULT_FACE_CROP = 0.9


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """Return (age, gender, race) from a UTKFace file name, or ``None`` if it does not parse."""
    stem = name.split(".", 1)[0]
    fields = stem.split("_")
    if len(fields) not in (3, 4) or not all(f.isdigit() for f in fields[:3]):
        return None
    age, gender, race = (int(f) for f in fields[:3])
    if age > MAX_AGE or gender not in (0, 1) or not 0 <= race < len(UTKFACE5):
        return None
    return age, gender, race


def age_bin(age: int) -> str:
    """Return FairFace's age bin of ``age`` years, so age labels agree across datasets."""
    edges = (3, 10, 20, 30, 40, 50, 60, 70)
    for edge, label in zip(edges, AGE_BINS):
        if age < edge:
            return label
    return AGE_BINS[-1]


def load_utkface(root: str | Path, age_format: str = "bins") -> FaceTable:
    """Load UTKFace from the images under ``root``.

    Parameters
    ----------
    root:
        Folder with the UTKFace images, at any depth.
    age_format:
        ``bins`` for FairFace's nine age bins (default), ``years`` for the age in years
        (labels ``"0"`` to ``"116"``). The age in years is always in column ``age_years``.
    """
    if age_format not in AGE_FORMATS:
        raise ValueError(f"data.age_format must be one of {AGE_FORMATS}, got {age_format!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"UTKFace root {root} does not exist; set data.root to the image folder")

    rows, malformed = [], []
    for file in scan_images(root, root):
        labels = parse_utkface_name(Path(file).name)
        if labels is None:
            malformed.append(file)
            continue
        age, gender, race = labels
        rows.append(
            {
                "sample_id": file,
                "file": file,
                "pool": "all",
                "group": UTKFACE5[race],
                "race": UTKFACE5[race],
                "gender": GENDERS[gender],
                "age": age_bin(age) if age_format == "bins" else str(age),
                "age_years": age,
            }
        )
    if malformed:
        log.warning(
            "utkface: %d file names are not <age>_<gender>_<race>_<date>.jpg and are left out: %s%s",
            len(malformed), ", ".join(malformed[:5]), " ..." if len(malformed) > 5 else "",
        )
    if not rows:
        raise ValueError(
            f"no UTKFace image with a parseable name under {root} ({len(malformed)} images "
            "with other names); expected names such as 25_0_2_20170116174525125.jpg.chip.jpg"
        )

    age_labels = list(AGE_BINS) if age_format == "bins" else [str(a) for a in range(MAX_AGE + 1)]

    def load(row: pd.Series):
        return open_image(root / row["file"])

    return FaceTable(
        dataset="utkface",
        samples=pd.DataFrame(rows),
        group_names=list(UTKFACE5),
        attributes={"race": list(UTKFACE5), "gender": list(GENDERS), "age": age_labels},
        load_image=load,
        root=root,
        default_face_crop=DEFAULT_FACE_CROP,
        notes={"malformed_names": len(malformed)},
    )
