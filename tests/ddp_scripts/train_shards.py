"""Train a tiny codec for a few steps on 2 CPU ranks; record each rank's quantiles and
the sample ids it saw per epoch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from datamodules.datamodule import FaceDataModule  # noqa: E402
from lightning_modules.codec_module import CodecModule  # noqa: E402


class RecordSamples(L.Callback):
    def __init__(self) -> None:
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["sample_id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)

    L.seed_everything(args.seed)
    data = {"name": "synthetic", "n_per_group": 20, "image_size": 32, "batch_size": 4,
            "eval_batch_size": 4, "eval_fraction": 0.1}
    datamodule = FaceDataModule(data, {"kind": "balanced", "per_group": 4}, seed=args.seed)
    model = CodecModule(arch="bmshj2018-factorized", N=8, M=8, lmbda=0.01, real_coding_every_n_epochs=0)
    recorder = RecordSamples()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[recorder],
    )
    trainer.fit(model, datamodule=datamodule)

    rank = trainer.global_rank
    quantiles = {name: p.detach().clone() for name, p in model.named_parameters() if name.endswith(".quantiles")}
    torch.save(quantiles, out / f"quantiles_rank{rank}.pt")
    training_ids = sorted(datamodule.datasets["train"].sample_ids)
    (out / f"seen_rank{rank}.json").write_text(json.dumps({"seen": recorder.seen, "training": training_ids}))


if __name__ == "__main__":
    main()
