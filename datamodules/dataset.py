"""A torch Dataset that yields the batch contract for rows of a FaceTable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from datamodules.images import center_crop_resize
from datamodules.table import FaceTable


class FaceDataset(Dataset):
    """Faces of one partition as dicts: ``image``, ``group``, ``attributes``, ``sample_id``.

    ``image`` is float32 ``[3, H, W]`` RGB in [0, 1]; ``group`` indexes
    ``table.group_names``; each attribute is an int64 class index, -1 where unknown.
    Decoded, cropped and resized images are kept in memory as uint8 after first use, so
    later epochs do not decode again (``cache=False`` turns that off). ``image_cache``
    (e.g. :class:`datamodules.image_cache.DiskImageCache`) is consulted before decoding
    and filled after, so later runs do not decode again either.
    """

    def __init__(
        self,
        table: FaceTable,
        rows: pd.DataFrame,
        *,
        image_size: int,
        face_crop: float,
        cache: bool = True,
        image_cache=None,
    ) -> None:
        self.table = table
        self.rows = rows.reset_index(drop=True)
        self.image_size = image_size
        self.face_crop = face_crop
        self.groups = table.group_indices(self.rows)
        self.attributes = table.encode_attributes(self.rows)
        self.sample_ids = self.rows["sample_id"].astype(str).tolist()
        self._memory: dict[int, torch.Tensor] | None = {} if cache else None
        # Optional persistent cache with get(row, size, crop) / put(row, size, crop, uint8 array).
        self._image_cache = image_cache

    def __len__(self) -> int:
        return len(self.rows)

    def load_uint8(self, index: int) -> torch.Tensor:
        """Return image ``index`` as uint8 ``[3, H, W]``, from a cache when possible."""
        if self._memory is not None and index in self._memory:
            return self._memory[index]
        row = self.rows.iloc[index]
        array = None
        if self._image_cache is not None:
            array = self._image_cache.get(row, self.image_size, self.face_crop)
        if array is None:
            image = center_crop_resize(self.table.load_image(row), self.face_crop, self.image_size)
            array = np.asarray(image, dtype=np.uint8)
            if self._image_cache is not None:
                self._image_cache.put(row, self.image_size, self.face_crop, array)
        # np.array copies: arrays from Pillow are read-only, which torch.from_numpy warns about.
        tensor = torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        if self._memory is not None:
            self._memory[index] = tensor
        return tensor

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.load_uint8(index).float().div_(255.0),
            "group": torch.tensor(self.groups[index], dtype=torch.int64),
            "attributes": {k: torch.tensor(v[index], dtype=torch.int64) for k, v in self.attributes.items()},
            "sample_id": self.sample_ids[index],
        }
