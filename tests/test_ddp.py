"""Real 2- and 3-process DDP runs on CPU (gloo): evaluation must not depend on the
number of processes, and training must keep ranks in sync."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from lightning_modules.codec_module import CodecModule

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "ddp_scripts"
pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def run_script(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A fixed checkpoint whose entropy coder tables are filled, as after real coding."""
    L.seed_everything(3)
    model = CodecModule(arch="bmshj2018-factorized", N=8, M=8, lmbda=0.01, real_coding_every_n_epochs=1)
    model.model.update(force=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, max_epochs=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("ckpt") / "fixed.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def validated(checkpoint, tmp_path_factory):
    outputs = {}
    for devices in (1, 2, 3):
        out = tmp_path_factory.mktemp(f"val{devices}")
        run_script(SCRIPTS / "validate_fixed.py", "--checkpoint", checkpoint, "--devices", devices, "--out", out)
        outputs[devices] = out
    return outputs


def test_group_metrics_identical_over_process_counts(validated):
    frames = {d: pd.read_csv(out / "group_metrics.csv") for d, out in validated.items()}
    reference = frames[1]
    assert set(reference.loc[reference.group != "all", "n"]) == {5, 4, 3, 1}
    assert int(reference.loc[(reference.group == "all") & (reference.metric == "psnr"), "n"].iloc[0]) == 13
    for devices in (2, 3):
        other = frames[devices]
        assert other[["group", "metric", "n"]].equals(reference[["group", "metric", "n"]])
        for column in ("value", "ci_low", "ci_high"):
            pd.testing.assert_series_equal(other[column], reference[column], atol=1e-6, rtol=0)


def test_per_image_rows_identical_over_process_counts(validated):
    frames = {d: pd.read_csv(out / "per_image.csv") for d, out in validated.items()}
    for devices in (2, 3):
        assert frames[devices]["sample_id"].tolist() == frames[1]["sample_id"].tolist()
        assert len(frames[devices]) == 13
        for column in ("psnr", "bpp", "bpp_est"):
            pd.testing.assert_series_equal(frames[devices][column], frames[1][column], atol=1e-6, rtol=0)


def test_gaps_identical_over_process_counts(validated):
    frames = {d: pd.read_csv(out / "gaps.csv") for d, out in validated.items()}
    for devices in (2, 3):
        assert frames[devices]["worst_group"].tolist() == frames[1]["worst_group"].tolist()
        for column in ("gap", "ratio", "p_value"):
            pd.testing.assert_series_equal(frames[devices][column], frames[1][column], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    run_script(SCRIPTS / "train_shards.py", "--out", out)
    return out


def test_quantiles_identical_across_ranks(trained):
    rank0 = torch.load(trained / "quantiles_rank0.pt")
    rank1 = torch.load(trained / "quantiles_rank1.pt")
    assert rank0
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name


def test_training_shards_disjoint_and_reshuffled(trained):
    seen = [json.loads((trained / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    training = set(seen[0]["training"])
    assert len(training) == 16
    for epoch in ("0", "1"):
        shard0, shard1 = set(seen[0]["seen"][epoch]), set(seen[1]["seen"][epoch])
        assert not shard0 & shard1
        assert shard0 | shard1 == training
    assert seen[0]["seen"]["0"] != seen[0]["seen"]["1"]


def test_train_cli_ddp_cpu_writes_one_run(tmp_path):
    run_dir = tmp_path / "run"
    run_script("train.py", "experiment=synthetic_balanced", "trainer=ddp_cpu", "trainer.max_epochs=1",
               "data.n_per_group=20", "split.total=32", "data.image_size=32", f"hydra.run.dir={run_dir}")
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    metrics = pd.read_csv(run_dir / "group_metrics.csv")
    assert not metrics.duplicated(["epoch", "group", "attribute", "metric"]).any()
    # 20 faces per group, 10% carved out for val: 2 per group, 8 in all, none counted twice.
    assert int(metrics.loc[(metrics.group == "all") & (metrics.metric == "psnr"), "n"].iloc[0]) == 8
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(pd.read_csv(run_dir / "split_manifest.csv")) == 80
