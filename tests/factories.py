"""Small on-disk data sets generated for tests (never real people)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.fairface import AGE_BINS, GENDERS
from datamodules.groups import FAIRFACE7


def write_image(path: Path, rng: np.random.Generator, size: int = 48) -> None:
    """Write a smooth random colour image as JPEG (a blurred gradient, cheap to code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    corners = rng.integers(0, 256, size=(2, 2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    top = corners[0, 0] * (1 - t) + corners[0, 1] * t
    bottom = corners[1, 0] * (1 - t) + corners[1, 1] * t
    image = top.transpose(1, 0, 2) * (1 - t) + bottom.transpose(1, 0, 2) * t
    Image.fromarray(image.clip(0, 255).astype(np.uint8), mode="RGB").save(path, quality=90)


def write_fairface_layout(
    root: Path,
    train_per_group: dict[str, int] | int = 10,
    val_per_group: dict[str, int] | int = 4,
    seed: int = 0,
    size: int = 48,
    service_test: bool = False,
) -> Path:
    """Write a FairFace-layout folder: train/, val/ and the two label CSVs."""
    rng = np.random.default_rng(seed)
    root = Path(root)

    def counts(spec):
        return spec if isinstance(spec, dict) else {g: spec for g in FAIRFACE7}

    for part, spec in (("train", train_per_group), ("val", val_per_group)):
        lines = ["file,age,gender,race" + (",service_test" if service_test else "")]
        index = 1
        for group, n in counts(spec).items():
            for _ in range(n):
                file = f"{part}/{index}.jpg"
                write_image(root / file, rng, size)
                age = AGE_BINS[int(rng.integers(3, len(AGE_BINS)))]
                gender = GENDERS[int(rng.integers(0, 2))]
                extra = ",True" if service_test else ""
                lines.append(f"{file},{age},{gender},{group}{extra}")
                index += 1
        (root / f"fairface_label_{part}.csv").write_text("\n".join(lines) + "\n")
    return root
