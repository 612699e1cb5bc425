"""Validate a codec that blurs one group, with both fairness measures, over N CPU processes.

Run as a script: Lightning's DDP launcher starts the other ranks by re-running it.
Writes the FairnessCallback's files into --out, and examples.json with the sample ids
the image logger chose.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from callbacks.fairness_callback import FairnessCallback  # noqa: E402
from callbacks.image_logging import ReconstructionImageLogger  # noqa: E402
from callbacks.measures import ClassifierMeasure, RealismMeasure  # noqa: E402
from lightning_modules.classifier import AttributeClassifier  # noqa: E402
from tests.ddp_scripts.validate_fixed import evaluation_set  # noqa: E402
from tests.measure_helpers import FixedFeatures, TransformCodec  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    dataset = evaluation_set(image_size=32)
    torch.manual_seed(0)
    classifier = AttributeClassifier({"skintype": dataset.table.attributes["skintype"]}, backbone="tiny_cnn",
                                     pretrained=False).eval()
    measures = [
        ClassifierMeasure(classifier, dataset.table.attributes, dataset.table.group_names, n_resamples=200),
        RealismMeasure(FixedFeatures(), dataset.table.group_names, fid_min_per_group=1, kid_subsets=10),
    ]
    images = ReconstructionImageLogger(args.out, dataset.table.group_names, images_per_group=2,
                                       classifier=classifier)
    callback = FairnessCallback(args.out, dataset.table.group_names, n_resamples=200, seed=0, measures=measures)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback, images],
    )
    trainer.validate(TransformCodec(blur_group=1), dataloaders=DataLoader(dataset, batch_size=2, shuffle=False))
    if trainer.is_global_zero:
        chosen = [example["sample_id"] for example in images.last_examples]
        (Path(args.out) / "examples.json").write_text(json.dumps(chosen))


if __name__ == "__main__":
    main()
