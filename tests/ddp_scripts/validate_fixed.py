"""Validate one fixed codec checkpoint on 13 faces with uneven groups over N CPU processes.

Run as a script: Lightning's DDP launcher starts the other ranks by re-running it.
Writes the FairnessCallback's files into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
import pandas as pd  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from callbacks.fairness_callback import FairnessCallback  # noqa: E402
from datamodules.dataset import FaceDataset  # noqa: E402
from datamodules.synthetic import load_synthetic  # noqa: E402
from lightning_modules.codec_module import CodecModule  # noqa: E402

# Uneven groups: with 2 or 3 ranks some rank has no image of the last group.
GROUP_COUNTS = (5, 4, 3, 1)


def evaluation_set(image_size: int = 64) -> FaceDataset:
    """Return 13 synthetic faces in groups of 5, 4, 3 and 1."""
    table = load_synthetic(n_per_group=6, seed=0)
    rows = [table.samples[table.samples["group"] == group].head(count)
            for group, count in zip(table.group_names, GROUP_COUNTS)]
    return FaceDataset(table, pd.concat(rows), image_size=image_size, face_crop=1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    dataset = evaluation_set()
    model = CodecModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
    callback = FairnessCallback(args.out, dataset.table.group_names, n_resamples=200, seed=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback],
    )
    trainer.validate(model, dataloaders=DataLoader(dataset, batch_size=2, shuffle=False))


if __name__ == "__main__":
    main()
