"""`make demo`: the whole fairbits loop, offline on CPU, on the synthetic faces.

1. Train the six-phenotype classifier that the fairness callback uses.
2. Retrain a small codec on a balanced and on an imbalanced split; the callback scores
   phenotype fidelity, rate, distortion and realism per group every epoch.
3. Print per-group PSNR and bpp of both runs side by side, then compare the two runs on
   the same test faces with evaluate.py (matched bpp, paired tests, figures, report).

W&B runs are written in offline mode under each run directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ARMS = ("synthetic_balanced", "synthetic_imbalanced")
# The tiny codec trains in seconds per epoch, but each validation epoch runs real
# entropy coding, the classifier and the statistics, so validating every 10th epoch keeps
# the demo short. CompressAI's lowest quality lambda puts it near 0.1 bpp.
ARM_OVERRIDES = ["trainer.check_val_every_n_epoch=10", "data.batch_size=8", "codec.lr=0.002",
                 "codec.lmbda=0.0018"]


def run_step(title: str, script: str, arguments: list[str]) -> None:
    command = [sys.executable, str(REPO / script), *arguments]
    print(f"\n== {title}: python {script} {' '.join(arguments)}", flush=True)
    # Tiny CPU models run faster on one thread than with OpenMP threads waiting on each
    # other on a 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(command, cwd=REPO, check=True, env=env)


def train_arm(experiment: str, out_dir: Path, epochs: int, classifier: Path, extra: list[str]) -> Path:
    run_dir = out_dir / experiment
    run_step(experiment, "train.py", [
        f"experiment={experiment}", f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}",
        f"callbacks.fairness.classifier_ckpt={classifier}", *ARM_OVERRIDES, *extra,
    ])
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
    parser.add_argument("--epochs", type=int, default=40, help="codec training epochs per arm (validated every 10th)")
    parser.add_argument("--classifier-epochs", type=int, default=10, help="classifier training epochs")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both arms")
    args = parser.parse_args()

    start = time.perf_counter()
    classifier_dir = args.out / "classifier_synthetic"
    run_step("classifier", "train.py", [
        "experiment=classifier_synthetic", f"trainer.max_epochs={args.classifier_epochs}",
        f"hydra.run.dir={classifier_dir}",
    ])
    classifier = classifier_dir / "checkpoints" / "last.ckpt"

    runs = {arm: train_arm(arm, args.out, args.epochs, classifier, args.overrides) for arm in ARMS}
    print("\nPer-group results on the validation partition, last epoch:\n")
    print(comparison_markdown(runs))

    comparison_dir = args.out / "comparison"
    run_step("comparison on the test partition", "evaluate.py", [
        f"compare=[{runs[ARMS[0]]},{runs[ARMS[1]]}]", f"classifier_ckpt={classifier}",
        f"hydra.run.dir={comparison_dir}",
    ])

    print("\nRun directories:")
    print(f"  classifier: {classifier_dir}")
    for arm, path in runs.items():
        print(f"  {arm}: {path}")
    print(f"  comparison: {comparison_dir} (comparison.md, figures/)")
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
