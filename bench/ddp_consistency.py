"""Score one checkpoint on its run's val partition with 1 and with N CPU processes and
report the largest difference between their group metrics.

    python -m bench.ddp_consistency RUN_DIR [--devices 2]

RUN_DIR is a train.py run directory (it contains .hydra/config.yaml and
checkpoints/last.ckpt). Each process count writes its run files under
RUN_DIR/ddp_consistency/devices<N>/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def validate(run_dir: Path, devices: int, out: Path) -> None:
    """Run the val partition through the checkpoint with the fairness callback."""
    import lightning as L
    from omegaconf import OmegaConf

    from callbacks.fairness_callback import FairnessCallback
    from datamodules.datamodule import FaceDataModule
    from lightning_modules.codec_module import CodecModule

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = FaceDataModule(cfg.data, cfg.split, int(cfg.seed))
    datamodule.setup("validate")
    model = CodecModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    callback = FairnessCallback(out, datamodule.group_names, n_resamples=int(cfg.callbacks.fairness.n_resamples),
                                seed=int(cfg.seed))
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    trainer.validate(model, datamodule=datamodule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--devices", type=int, default=2, help="process count to compare with 1")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    out_root = run_dir / "ddp_consistency"

    if args.worker:
        validate(run_dir, args.worker, out_root / f"devices{args.worker}")
        return

    frames = {}
    for devices in (1, args.devices):
        out = out_root / f"devices{devices}"
        if out.exists():
            for file in out.iterdir():
                file.unlink()
        # A fresh interpreter per process count, because Lightning's DDP launcher
        # re-runs this script for the other ranks.
        subprocess.run([sys.executable, "-m", "bench.ddp_consistency", str(run_dir), "--worker", str(devices)],
                       cwd=REPO, check=True)
        frames[devices] = pd.read_csv(out / "group_metrics.csv")

    one, many = frames[1], frames[args.devices]
    if not one[["group", "metric", "n"]].equals(many[["group", "metric", "n"]]):
        print("group, metric or n differ between process counts")
        sys.exit(1)
    difference = (one["value"] - many["value"]).abs()
    print(f"{len(one)} group metric rows; largest |1 process - {args.devices} processes| = {difference.max():.3g}")
    table = one[one["metric"].isin(["psnr", "bpp", "bpp_est"])].pivot_table(
        index="group", columns="metric", values="value", sort=False)
    print(table.to_string(float_format=lambda value: f"{value:.4f}"))


if __name__ == "__main__":
    main()
