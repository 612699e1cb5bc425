"""`make demo`: retrain a small codec on a balanced and an imbalanced split of the
synthetic faces, then print per-group PSNR and bpp of both runs side by side.

Runs offline on CPU; W&B runs are written in offline mode under each run directory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ARMS = ("synthetic_balanced", "synthetic_imbalanced")


def train_arm(experiment: str, out_dir: Path, epochs: int, extra: list[str]) -> Path:
    run_dir = out_dir / experiment
    command = [
        sys.executable, str(REPO / "train.py"), f"experiment={experiment}",
        f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}", *extra,
    ]
    print(f"\n== {experiment}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return run_dir


def last_epoch_table(run_dir: Path, metrics: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "group_metrics.csv")
    frame = frame[(frame["epoch"] == frame["epoch"].max()) & frame["metric"].isin(metrics)
                  & frame["attribute"].isna()]
    return frame.pivot_table(index="group", columns="metric", values="value", sort=False)


def comparison_markdown(runs: dict[str, Path], metrics: tuple[str, ...] = ("psnr", "bpp", "bpp_est")) -> str:
    tables = {arm: last_epoch_table(path, metrics) for arm, path in runs.items()}
    groups = list(next(iter(tables.values())).index)
    header = "| group | " + " | ".join(f"{m} ({arm.split('_')[-1]})" for m in metrics for arm in runs) + " |"
    lines = [header, "|---|" + "---:|" * (len(metrics) * len(runs))]
    for group in groups:
        cells = []
        for metric in metrics:
            for arm in runs:
                table = tables[arm]
                value = table.loc[group, metric] if metric in table.columns and group in table.index else float("nan")
                cells.append(f"{value:.3f}")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_out", help="output folder")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per arm")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both arms")
    args = parser.parse_args()

    start = time.perf_counter()
    runs = {arm: train_arm(arm, args.out, args.epochs, args.overrides) for arm in ARMS}
    print("\nPer-group results on the validation partition, last epoch:\n")
    print(comparison_markdown(runs))
    print("\nRun directories:")
    for arm, path in runs.items():
        print(f"  {arm}: {path}")
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
