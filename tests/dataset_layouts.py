"""Tiny on-disk dataset layouts for tests: FairFace, CelebA, RFW, UTKFace and generic CSV.

Every image is a small deterministic picture (a colour gradient plus noise drawn from its
seed), so tests can compare pixels between runs and caches.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.celeba import ATTRIBUTE_NAMES
from datamodules.groups import FAIRFACE7

RFW_PHENOTYPE_COLUMNS = ("skintype", "lips", "nose", "eye", "hairtype", "haircolor")


def face_array(seed: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """Return a uint8 ``[height, width, 3]`` test picture fixed by ``seed``; ``size`` is (width, height)."""
    width, height = size
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=3)
    ramp = np.linspace(0, 50, width)[None, :, None] + np.linspace(0, 30, height)[:, None, None]
    noise = rng.integers(0, 25, size=(height, width, 3))
    return np.clip(base[None, None, :] + ramp + noise, 0, 255).astype(np.uint8)


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    """Write the picture of ``seed`` to ``path`` (format from the suffix: .jpg or .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(face_array(seed, size))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_fairface(root: Path, train_per_group: int = 4, val_per_group: int = 2) -> Path:
    """Write FairFace's official layout with ``train_per_group``/``val_per_group`` images per race."""
    seed = 0
    for part, per_group in (("train", train_per_group), ("val", val_per_group)):
        rows = []
        for race in FAIRFACE7:
            for k in range(per_group):
                seed += 1
                file = f"{part}/{seed}.jpg"
                write_image(root / file, seed, size=(48, 48))
                rows.append((file, "20-29", ("Male", "Female")[k % 2], race))
        write_csv(root / f"fairface_label_{part}.csv", ("file", "age", "gender", "race"), rows)
    return root


def celeba_attributes(index: int) -> list[int]:
    """Return CelebA's 40 attribute values (1 or -1) of image ``index``; ``Male`` alternates."""
    rng = np.random.default_rng(1000 + index)
    values = rng.choice([-1, 1], size=len(ATTRIBUTE_NAMES)).tolist()
    values[ATTRIBUTE_NAMES.index("Male")] = 1 if index % 2 == 0 else -1
    return values


def write_celeba(root: Path, partitions: Sequence[int], *, kaggle: bool = False) -> list[str]:
    """Write CelebA's layout with one image per entry of ``partitions`` (0, 1 or 2).

    ``kaggle=True`` writes Kaggle's variant: CSV list files and a nested
    ``img_align_celeba/img_align_celeba/`` folder. Returns the image names.
    """
    image_dir = root / "img_align_celeba"
    if kaggle:
        image_dir = image_dir / "img_align_celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    for index, name in enumerate(names):
        # The aligned images are 178 x 218; a smaller picture with the same aspect keeps tests fast.
        write_image(image_dir / name, index, size=(36, 44))

    if kaggle:
        write_csv(root / "list_attr_celeba.csv", ("image_id", *ATTRIBUTE_NAMES),
                  [(name, *celeba_attributes(i)) for i, name in enumerate(names)])
        write_csv(root / "list_eval_partition.csv", ("image_id", "partition"), zip(names, partitions))
    else:
        lines = [str(len(names)), " ".join(ATTRIBUTE_NAMES)]
        for index, name in enumerate(names):
            values = "".join(f" {v:2d}" for v in celeba_attributes(index))
            lines.append(f"{name}{values}")
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{name} {p}\n" for name, p in zip(names, partitions))
        )
    return names


def write_rfw(root: Path, images_per_identity: Mapping[str, int], folder: str = "") -> list[str]:
    """Write ``<group>/<identity>/<identity>_NNNN.jpg`` for each ``Class_ID`` key.

    ``folder`` puts the group folders below ``root/folder`` (e.g. ``data``, as in the RFW
    download). Returns the written paths relative to ``root``.
    """
    written = []
    seed = 0
    for class_id, count in images_per_identity.items():
        group, identity = class_id.split("/")
        for k in range(count):
            seed += 1
            relative = Path(folder, group, identity, f"{identity}_{k + 1:04d}.jpg")
            write_image(root / relative, seed, size=(40, 40))
            written.append(relative.as_posix())
    return written


def write_rfw_phenotypes(path: Path, rows: Iterable[Sequence[str]]) -> Path:
    """Write an RFW phenotype CSV; each row is (Class_ID, skintype, lips, nose, eye, hairtype, haircolor)."""
    return write_csv(path, ("Class_ID", *RFW_PHENOTYPE_COLUMNS), rows)


def write_utkface(root: Path, names: Sequence[str]) -> list[str]:
    """Write one image per UTKFace file name (``age_gender_race_date.jpg.chip.jpg``)."""
    for index, name in enumerate(names):
        write_image(root / name, index, size=(40, 40))
    return list(names)


def write_csv_dataset(
    root: Path,
    rows: Sequence[Mapping[str, str]],
    csv_name: str = "labels.csv",
    *,
    file_column: str = "file",
    write_images: bool = True,
    encoding: str = "utf-8",
) -> Path:
    """Write the images named by ``rows[i][file_column]`` and a CSV with all row keys as columns."""
    header = list(rows[0].keys())
    if write_images:
        for index, row in enumerate(rows):
            write_image(root / row[file_column], index, size=(40, 40))
    return write_csv(root / csv_name, header, ([row[c] for c in header] for row in rows), encoding=encoding)


def grouped_rows(groups: Mapping[str, int], *, extra: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
    """Return generic-CSV rows ``file,group[,extra columns]`` with ``groups[g]`` images per group.

    Values of each ``extra`` column cycle through its list.
    """
    rows = []
    for group, count in groups.items():
        for k in range(count):
            row = {"file": f"images/{group}_{k}.png", "group": group}
            for column, values in (extra or {}).items():
                row[column] = values[len(rows) % len(values)]
            rows.append(row)
    return rows
