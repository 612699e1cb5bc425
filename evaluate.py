"""Evaluate codecs over rate ladders on a test partition and write the report (Hydra entry point).

    python evaluate.py data=fairface data.root=/data/fairface eval=quick runs=[multirun/fairface_balanced]
    python evaluate.py runs=[outputs/synthetic_balanced/2025-01-01_00-00-00] eval=none
    python evaluate.py compare=[RUN_A,RUN_B]

Outputs (in the Hydra run folder): per_image.csv, summary.csv, gaps.csv, figures/,
report.md and provenance.json; with compare=[...], comparison.md and comparison.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

log = logging.getLogger("fairbits.evaluate")


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from lightning_modules.evaluation import run_comparison, run_evaluation
    from lightning_modules.loggers import route_lightning_logs_to_root

    route_lightning_logs_to_root()
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    if cfg.get("compare"):
        outputs = run_comparison(cfg, run_dir)
    else:
        outputs = run_evaluation(cfg, run_dir)
    print(f"Report: {outputs.report_path}")


if __name__ == "__main__":
    main()
