"""evaluate.py on trained CodecModule run folders: seeds, lambda ladders, leaks, comparison, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from fairness.ladder import SEED_MEAN
from lightning_modules.codec_module import CodecModule
from lightning_modules.codec_specs import find_run_dirs
from lightning_modules.evaluation import run_comparison, run_evaluation
from lightning_modules.measurements import Measurements
from tests.evaluate_data import evaluation_config, write_colour_faces

REPO = Path(__file__).resolve().parents[1]
ARCH = "bmshj2018-factorized"


def _training_batches(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(16, 3, 32, 32, generator=generator)
    samples = [{"image": image} for image in images]
    return DataLoader(samples, batch_size=8)


def make_run(folder: Path, data: dict, *, experiment: str, seed: int, lmbda: float, trained_ids: list[str]) -> Path:
    """Write a train.py-like run folder: a briefly trained tiny codec, its config and manifest."""
    L.seed_everything(seed)
    model = CodecModule(arch=ARCH, quality=None, N=8, M=8, lmbda=lmbda, lr=1e-3, lr_scheduler="none")
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=_training_batches(seed))
    trainer.save_checkpoint(folder / "checkpoints" / "last.ckpt")

    # Hydra saves interpolations unresolved; the evaluator must resolve them.
    config = {"experiment_name": "${experiment}", "experiment": experiment, "seed": seed, "codec": {"name": ARCH, "arch": ARCH, "lmbda": lmbda},
              "split": {"kind": "balanced"}, "data": data}
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    manifest = pd.DataFrame({"sample_id": trained_ids, "file": trained_ids, "partition": "train",
                             "in_training": 1, "group": "Blue"})
    manifest.to_csv(folder / "split_manifest.csv", index=False)
    # The fairness callback's per-image file of the last validation epoch, as train.py writes it.
    callback_rows = pd.DataFrame({"epoch": 0, "sample_id": trained_ids, "group": "Blue", "psnr": 20.0, "bpp": 1.0})
    callback_rows.to_csv(folder / "per_image.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = write_colour_faces(root / "data", test_per_group=4, val_per_group=2)
    val_ids = [f"images/blue_{i:02d}.png" for i in (4, 5)]
    sweep = root / "multirun" / "tiny_balanced"
    jobs = [(0, 0.01), (1, 0.01), (0, 0.05)]
    for number, (seed, lmbda) in enumerate(jobs):
        make_run(sweep / f"{number}_seed={seed},codec.lmbda={lmbda}", data, experiment="tiny_balanced", seed=seed,
                 lmbda=lmbda, trained_ids=val_ids)
    return root, data, sweep


@pytest.fixture(scope="module")
def evaluated_runs(multirun):
    root, data, sweep = multirun
    # No data config: it comes from the runs' .hydra/config.yaml.
    config = evaluation_config(None, runs=[str(sweep)], anchor="none")
    config.pop("data")
    return run_evaluation(config, root / "eval", measurements=Measurements())


def test_multirun_folders_found(multirun):
    _, _, sweep = multirun
    runs = find_run_dirs(sweep)
    assert len(runs) == 3
    assert all((run / "checkpoints" / "last.ckpt").is_file() for run in runs)


def test_run_instances_named_by_experiment(evaluated_runs):
    per_image = evaluated_runs.per_image
    assert set(per_image["codec"]) == {f"{ARCH}@tiny_balanced"}
    keys = set(zip(per_image["rate_point"], per_image["seed"]))
    assert keys == {("lmbda0.01", "0"), ("lmbda0.01", "1"), ("lmbda0.05", "0")}
    assert per_image["epoch"].notna().all()
    # The bitstream adds a header and coder overhead to the likelihood estimate.
    assert (per_image["bpp"] > per_image["bpp_est"] - 0.05).all()
    assert (per_image["bpp"] < per_image["bpp_est"] + 1.0).all()


def test_seeds_aggregated_not_merged(evaluated_runs):
    summary, gaps = evaluated_runs.summary, evaluated_runs.gaps
    psnr = summary[(summary["metric"] == "psnr") & (summary["rate_point"] == "lmbda0.01")]
    per_seed = psnr[psnr["seed"].isin(["0", "1"])].pivot_table(index="group", columns="seed", values="value")
    averaged = psnr[psnr["seed"] == SEED_MEAN].set_index("group")
    assert len(per_seed) == len(averaged) == 4
    for group, row in averaged.iterrows():
        assert row["value"] == pytest.approx(per_seed.loc[group].mean())
        assert row["seed_sd"] == pytest.approx(np.std(per_seed.loc[group].to_numpy(), ddof=1))
        assert row["n_seeds"] == 2
    # A configuration with a single seed gets no across-seed row.
    assert not ((summary["rate_point"] == "lmbda0.05") & (summary["seed"] == SEED_MEAN)).any()

    gap_rows = gaps[(gaps["metric"] == "psnr") & (gaps["rate_point"] == "lmbda0.01")]
    per_seed_gaps = gap_rows[gap_rows["seed"].isin(["0", "1"])]["gap"]
    mean_row = gap_rows[gap_rows["seed"] == SEED_MEAN].iloc[0]
    assert mean_row["gap"] == pytest.approx(per_seed_gaps.mean())
    assert mean_row["gap_sd"] == pytest.approx(per_seed_gaps.std(ddof=1))
    assert np.isnan(mean_row["p_value"])
    assert "## Training seeds" in evaluated_runs.report_path.read_text()


def test_training_on_test_images_rejected(multirun, tmp_path):
    _, data, sweep = multirun
    leaked = tmp_path / "leaky"
    shutil.copytree(sweep / "0_seed=0,codec.lmbda=0.01", leaked)
    manifest = pd.read_csv(leaked / "split_manifest.csv")
    manifest.loc[0, "sample_id"] = "images/red_00.png"
    manifest.to_csv(leaked / "split_manifest.csv", index=False)
    config = evaluation_config(data, runs=[str(leaked)])
    with pytest.raises(ValueError, match="trained on 1 images of the evaluated test partition"):
        run_evaluation(config, tmp_path / "eval", measurements=Measurements())


@pytest.mark.slow
def test_compare_training_runs(multirun):
    root, data, sweep = multirun
    # Two lambdas of one training: one rate point per side, so the comparison is direct.
    config = evaluation_config(data, compare=[str(sweep / "0_seed=0,codec.lmbda=0.01"),
                                              str(sweep / "2_seed=0,codec.lmbda=0.05")])
    outputs = run_comparison(config, root / "cmp")
    assert (root / "cmp" / "side_A" / "per_image.csv").is_file()
    assert (root / "cmp" / "side_B" / "report.md").is_file()
    table = outputs.result.table
    assert (table["mode"] == "direct").all()
    assert outputs.result.codecs == (f"{ARCH}@tiny_balanced", f"{ARCH}@tiny_balanced")
    assert outputs.result.rate_points == (["lmbda0.01"], ["lmbda0.05"])
    psnr_all = table[(table["metric"] == "psnr") & (table["group"] == "all")].iloc[0]
    side_a = pd.read_csv(root / "cmp" / "side_A" / "per_image.csv")
    side_b = pd.read_csv(root / "cmp" / "side_B" / "per_image.csv")
    assert psnr_all["difference"] == pytest.approx(side_a["psnr"].mean() - side_b["psnr"].mean())
    assert "compared directly" in outputs.report_path.read_text()


def test_config_composes_ladders():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        default = compose(config_name="evaluate")
        quick = compose(config_name="evaluate", overrides=["eval=quick", "data=synthetic"])
    assert "data" not in default
    assert list(default.codecs.jpeg)[:3] == [5, 10, 15]
    assert list(quick.codecs.jpeg) == [10, 30, 50, 70, 90]
    assert list(quick.codecs.webp) == [10, 30, 50, 70, 90]
    assert quick.data.name == "synthetic"
    assert quick.partition == "test"


@pytest.mark.slow
def test_cli_evaluates_run_folder(multirun, tmp_path):
    _, _, sweep = multirun
    command = [sys.executable, str(REPO / "evaluate.py"), f"runs=['{sweep / '0_seed=0,codec.lmbda=0.01'}']",
               "eval=quick", "n_resamples=99", "realism.enabled=false", "lpips.enabled=false", "progress=false",
               "wandb.enabled=true", "wandb.mode=offline", f"hydra.run.dir={tmp_path / 'cli'}"]
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = tmp_path / "cli"
    per_image = pd.read_csv(run_dir / "per_image.csv")
    assert set(per_image["codec"]) == {"jpeg", "webp", f"{ARCH}@tiny_balanced"}
    assert (run_dir / "report.md").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*"))
