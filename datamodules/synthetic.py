"""The built-in synthetic face set as a FaceTable (no files, rendered on demand)."""

from __future__ import annotations

import pandas as pd
from PIL import Image

from datamodules.synthetic_faces import PHENOTYPES, SyntheticFaces
from datamodules.table import FaceTable

# Faces are rendered at this side and resized by the common crop-and-resize step, so the
# same sample gives the same pixels whatever data.image_size a run uses.
RENDER_SIZE = 128


def load_synthetic(n_per_group: int = 100, seed: int = 0, render_size: int = RENDER_SIZE) -> FaceTable:
    """Return ``n_per_group`` generated faces per population; ids are ``synthetic:<seed>:<i>``."""
    if n_per_group < 1:
        raise ValueError(f"data.n_per_group must be at least 1, got {n_per_group}")
    faces = SyntheticFaces(seed=seed)
    rows = []
    for index in range(n_per_group * len(faces.group_names)):
        group, phenotypes = faces.labels(index)
        rows.append({"sample_id": f"synthetic:{seed}:{index}", "file": "", "pool": "all", "group": group,
                     "index": index, **phenotypes})
    samples = pd.DataFrame(rows)

    def load(row: pd.Series) -> Image.Image:
        return Image.fromarray(faces.render(int(row["index"]), size=render_size), mode="RGB")

    return FaceTable(
        dataset="synthetic",
        samples=samples,
        group_names=list(faces.group_names),
        attributes={name: list(labels) for name, labels in PHENOTYPES.items()},
        load_image=load,
        root=None,
        default_face_crop=1.0,
    )
