"""Fit a codec or an attribute classifier on a face dataset (Hydra entry point).

    python train.py experiment=fairface_balanced data.root=/data/fairface
    python train.py experiment=fairface_imbalanced data.root=/data/fairface dry_run=true
    python train.py -m experiment=fairface_balanced codec.lmbda=0.0018,0.0067 seed=0,1
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from callbacks.provenance import write_provenance
from datamodules.prepare import format_counts, prepare_data, write_manifest
from lightning_modules.loggers import route_lightning_logs_to_root

log = logging.getLogger("fairbits.train")


def launch_rank() -> int:
    """Return this process's global rank from the launcher's environment (0 if none).

    Lightning's DDP launcher, torchrun and SLURM start one process per device, and each
    runs this script; only rank 0 writes the run files.
    """
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def prepare_run(cfg: DictConfig, run_dir: Path, rank: int = 0):
    """Build data and split; on rank 0, write split_manifest.csv and provenance.json."""
    prepared = prepare_data(cfg.data, cfg.split, int(cfg.seed))
    manifest_sha = hashlib.sha256(prepared.manifest.to_csv(index=False, lineterminator="\n").encode()).hexdigest()
    if rank == 0:
        manifest_sha = write_manifest(prepared.manifest, run_dir / "split_manifest.csv")
        write_provenance(run_dir, OmegaConf.to_container(cfg, resolve=True), manifest_sha256=manifest_sha)
    return prepared, manifest_sha


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    rank = launch_rank()
    route_lightning_logs_to_root()

    prepared, manifest_sha = prepare_run(cfg, run_dir, rank)
    if rank == 0:
        print(f"Run directory: {run_dir}")
        print(f"Per-group image counts ({prepared.table.dataset}, split.kind={cfg.split.kind}, seed={cfg.seed}):")
        print(format_counts(prepared.counts()))
    if cfg.dry_run:
        if rank == 0:
            print(f"dry_run=true: wrote split_manifest.csv and provenance.json to {run_dir}; not training.")
        return None

    from lightning_modules.pipeline import run_task

    return run_task(cfg, prepared, run_dir, manifest_sha)


if __name__ == "__main__":
    main()
