"""Decode every image of a table once when the data is prepared.

Bad files (missing, empty, truncated, not an image, symlink loops) then surface before
training starts, not hours into it. The pass also fills the disk cache, so the first
epoch reads cached arrays. With ``data.on_bad_image=skip`` bad images are left out and
listed instead of failing the run.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from datamodules.image_cache import DiskImageCache
from datamodules.images import ImageLoadError, center_crop_resize
from datamodules.table import FaceTable

log = logging.getLogger(__name__)

ON_BAD_IMAGE = ("error", "skip")
SKIPPED_COLUMNS = ("sample_id", "file", "group", "error")
# Rows per thread task: large enough to amortise scheduling, small enough for a smooth bar.
_CHUNK = 64


@dataclass
class ImageCheckReport:
    """Counts and wall time of the preparation pass over one table's images.

    Attributes
    ----------
    checked:
        Images looked at (rows with a file; generated samples are not checked).
    decoded:
        Images decoded, cropped and resized in this pass.
    cached:
        Images found in the disk cache under the same file mtime, size, crop and image size,
        so they decoded successfully before and were not decoded again.
    skipped:
        Bad images left out (columns ``sample_id, file, group, error``); empty unless
        ``on_bad_image`` is ``skip``.
    seconds:
        Wall time of the pass.
    """

    checked: int = 0
    decoded: int = 0
    cached: int = 0
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SKIPPED_COLUMNS)))
    seconds: float = 0.0


def check_images(
    table: FaceTable,
    image_size: int,
    face_crop: float,
    *,
    cache: DiskImageCache | None = None,
    on_bad_image: str = "error",
    workers: int | None = None,
    progress: bool | None = None,
) -> tuple[FaceTable, ImageCheckReport]:
    """Decode, crop and resize every file-backed image of ``table`` once.

    Parameters
    ----------
    cache:
        Disk cache to read (a hit counts as checked) and fill; ``None`` decodes everything.
    on_bad_image:
        ``error`` raises :class:`ImageLoadError` naming the bad files; ``skip`` drops their
        rows from the returned table and lists them in ``report.skipped``.
    workers:
        Decoding threads (Pillow releases the GIL while decoding); default
        ``min(8, os.cpu_count())``.
    progress:
        Show a tqdm progress bar; ``None`` shows it only on a terminal.

    Returns
    -------
    The table without skipped rows, and the report.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"data.on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
    # Validate crop and size once here, so a bad setting is not reported as a bad image.
    center_crop_resize(_probe_image(), face_crop, image_size)

    started = time.perf_counter()
    samples = table.samples
    has_file = samples["file"].astype(str) != "" if table.root is not None else pd.Series(False, index=samples.index)
    positions = np.flatnonzero(has_file.to_numpy())
    report = ImageCheckReport(checked=len(positions))
    if len(positions) == 0:
        return table, report

    files = samples["file"].astype(str).to_numpy()
    errors: dict[int, str] = {}

    def check_chunk(chunk: np.ndarray) -> tuple[int, int, dict[int, str]]:
        decoded = cached = 0
        failed = {}
        for position in chunk:
            if cache is not None and cache.contains(files[position], image_size, face_crop):
                cached += 1
                continue
            row = samples.iloc[position]
            try:
                image = center_crop_resize(table.load_image(row), face_crop, image_size)
            except (ImageLoadError, OSError) as error:
                failed[int(position)] = str(error)
                continue
            decoded += 1
            if cache is not None:
                cache.put(row, image_size, face_crop, np.asarray(image, dtype=np.uint8))
        return decoded, cached, failed

    chunks = [positions[i : i + _CHUNK] for i in range(0, len(positions), _CHUNK)]
    workers = workers or min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(positions), desc=f"{table.dataset}: checking images", unit="img",
               disable=None if progress is None else not progress)
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for chunk, (decoded, cached, failed) in zip(chunks, pool.map(check_chunk, chunks)):
            report.decoded += decoded
            report.cached += cached
            errors.update(failed)
            bar.update(len(chunk))
    bar.close()
    report.seconds = time.perf_counter() - started

    if errors:
        bad = sorted(errors)
        if on_bad_image == "error":
            first_errors = "\n  ".join(errors[p] for p in bad[:5])
            more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ImageLoadError(
                f"{table.dataset}: {len(bad)} of {len(positions)} images cannot be used:\n  "
                f"{first_errors}{more}\nFix or remove these files (or their label rows), or set "
                "data.on_bad_image=skip to leave them out"
            )
        report.skipped = pd.DataFrame(
            {
                "sample_id": samples["sample_id"].to_numpy()[bad],
                "file": files[bad],
                "group": samples["group"].to_numpy()[bad],
                "error": [errors[p] for p in bad],
            }
        )
        log.warning(
            "%s: skipped %d bad images (data.on_bad_image=skip): %s%s",
            table.dataset, len(bad), ", ".join(files[bad[:5]]), " ..." if len(bad) > 5 else "",
        )
        keep = np.ones(len(samples), dtype=bool)
        keep[bad] = False
        notes = dict(table.notes)
        notes["skipped_images"] = len(bad)
        table = replace(table, samples=samples.loc[keep].reset_index(drop=True), notes=notes)

    log.info(
        "%s: checked %d images in %.2f s: %d decoded, %d from the disk cache, %d skipped",
        table.dataset, report.checked, report.seconds, report.decoded, report.cached, len(report.skipped),
    )
    return table, report


def _probe_image():
    from PIL import Image

    return Image.new("RGB", (16, 16))
