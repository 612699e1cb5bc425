"""Write a grid of synthetic faces, one row per population, to docs/synthetic_faces.png.

Usage: ``python -m bench.make_synthetic_grid [--seed 0] [--per-row 8] [--size 96] [--timing]``.
With ``--timing`` it also prints the CPU time per rendered face at 64 and 128 px.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datamodules.synthetic_faces import SyntheticFaces

REPO = Path(__file__).resolve().parents[1]
GAP = 2
LABEL_WIDTH = 120


def make_grid(faces: SyntheticFaces, per_row: int, size: int) -> Image.Image:
    """Return the first ``per_row`` faces of every group, one group per row, names on the left."""
    groups = faces.group_names
    width = LABEL_WIDTH + per_row * (size + GAP)
    height = len(groups) * (size + GAP)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=14)

    for row, group in enumerate(groups):
        top = row * (size + GAP)
        draw.text((6, top + size // 2), group, fill=(0, 0, 0), font=font, anchor="lm")
        for column in range(per_row):
            index = row + column * len(groups)
            face = Image.fromarray(faces.render(index, size=size))
            grid.paste(face, (LABEL_WIDTH + column * (size + GAP), top))
    return grid


def cpu_ms_per_face(faces: SyntheticFaces, size: int, count: int) -> float:
    """Return the mean CPU time of one render in milliseconds (single thread, after a warm-up)."""
    faces.render(0, size=size)
    start = time.process_time()
    for index in range(count):
        faces.render(index, size=size)
    return (time.process_time() - start) / count * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic face set")
    parser.add_argument("--per-row", type=int, default=8, help="faces per group (row)")
    parser.add_argument("--size", type=int, default=96, help="side of each face in pixels")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "synthetic_faces.png", help="PNG file to write")
    parser.add_argument("--timing", action="store_true", help="also print CPU milliseconds per face at 64 and 128 px")
    args = parser.parse_args()

    faces = SyntheticFaces(seed=args.seed)
    grid = make_grid(faces, args.per_row, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out} ({grid.width}x{grid.height} px)")

    if args.timing:
        for size, count in ((64, 400), (128, 100)):
            print(f"{size} px: {cpu_ms_per_face(faces, size, count):.2f} ms CPU per face")


if __name__ == "__main__":
    main()
