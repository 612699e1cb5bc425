import json

import lightning as L
import numpy as np
import pandas as pd
import pytest

from callbacks.fairness_callback import FairnessCallback
from datamodules.datamodule import FaceDataModule
from fairness.summaries import IMAGE_METRICS
from lightning_modules.codec_module import CodecModule

DATA = {"name": "synthetic", "n_per_group": 30, "generator_seed": 0, "image_size": 64,
        "eval_fraction": 0.1, "batch_size": 8, "eval_batch_size": 5, "num_workers": 0}
SPLIT = {"kind": "balanced", "per_group": 4}


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    L.seed_everything(0)
    datamodule = FaceDataModule(DATA, SPLIT, seed=0)
    datamodule.setup("fit")
    model = CodecModule(arch="bmshj2018-factorized", N=8, M=8, lmbda=0.01, real_coding_every_n_epochs=1)
    callback = FairnessCallback(run_dir, datamodule.group_names, n_resamples=200, min_group_size=100)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[callback],
                        enable_progress_bar=False, num_sanity_val_steps=0, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    return run_dir, datamodule.group_names, trainer


def test_group_metrics_every_epoch(fitted_run):
    run_dir, groups, _ = fitted_run
    metrics = pd.read_csv(run_dir / "group_metrics.csv")
    assert sorted(metrics["epoch"].unique()) == [0, 1]
    last = metrics[metrics["epoch"] == 1]
    assert {"psnr", "bpp_est", "bpp", "ms_ssim"} <= set(last["metric"])
    assert set(last["group"]) == set(groups) | {"all"}
    # 30 faces per group, 10% carved out for val: 3 per group.
    assert (last.loc[last["group"] != "all", "n"] == 3).all()


def test_group_values_equal_per_image_means(fitted_run):
    run_dir, groups, _ = fitted_run
    per_image = pd.read_csv(run_dir / "per_image.csv")
    assert set(per_image["epoch"]) == {1}
    assert len(per_image) == 3 * len(groups)
    assert per_image["sample_id"].is_unique
    metrics = pd.read_csv(run_dir / "group_metrics.csv")
    last = metrics[metrics["epoch"] == 1].set_index(["group", "metric"])["value"]
    for metric in ("psnr", "bpp", "bpp_est"):
        means = per_image.groupby("group")[metric].mean()
        for group in groups:
            assert last[(group, metric)] == pytest.approx(means[group], rel=1e-9)
        assert last[("all", metric)] == pytest.approx(per_image[metric].mean(), rel=1e-9)


def test_real_bpp_close_to_estimate(fitted_run):
    run_dir, _, _ = fitted_run
    per_image = pd.read_csv(run_dir / "per_image.csv")
    # The real bitstream carries a header and range-coder overhead, so it is a little
    # above the likelihood estimate, never below it by more than rounding.
    assert (per_image["bpp"] > per_image["bpp_est"] - 0.01).all()
    assert (per_image["bpp"] < per_image["bpp_est"] + 1.0).all()


def test_gaps_match_group_values(fitted_run):
    run_dir, _, _ = fitted_run
    gaps = pd.read_csv(run_dir / "gaps.csv")
    metrics = pd.read_csv(run_dir / "group_metrics.csv")
    for _, gap in gaps[gaps["epoch"] == 1].iterrows():
        rows = metrics[(metrics["epoch"] == 1) & (metrics["metric"] == gap["metric"]) & (metrics["group"] != "all")]
        values = rows.set_index("group")["value"]
        assert gap["gap"] == pytest.approx(values.max() - values.min())
        higher_is_better = IMAGE_METRICS[gap["metric"]].higher_is_better
        assert gap["worst_group"] == (values.idxmin() if higher_is_better else values.idxmax())
    # Tests run at the last epoch only, and Holm never lowers a p-value.
    assert gaps.loc[gaps["epoch"] == 0, "p_value"].isna().all()
    final = gaps[gaps["epoch"] == 1]
    assert final["p_value"].between(0, 1).all()
    assert (final["p_holm"] >= final["p_value"] - 1e-12).all()


def test_summary_flags_underpowered(fitted_run):
    run_dir, groups, _ = fitted_run
    summary = json.loads((run_dir / "fairness_summary.json").read_text())
    psnr = next(m for m in summary["metrics"] if m["metric"] == "psnr")
    assert psnr["flags"]["underpowered"] is True
    assert set(psnr["by_group"]) == set(groups)
    assert all(entry["n"] == 3 for entry in psnr["by_group"].values())


def test_logged_names_per_group(fitted_run):
    _, groups, trainer = fitted_run
    logged = trainer.callback_metrics
    for group in groups:
        assert f"val/psnr/{group}" in logged
    assert "val/fair/psnr_gap" in logged
    assert "val/psnr" in logged
    values = [float(logged[f"val/psnr/{g}"]) for g in groups]
    assert float(logged["val/fair/psnr_gap"]) == pytest.approx(max(values) - min(values), rel=1e-6)


def test_duplicate_sample_ids_counted_once(tmp_path):
    callback = FairnessCallback(tmp_path, ["A", "B"], n_resamples=100)
    rows = [
        {"sample_id": "a1", "group": "A", "psnr": 30.0, "bpp_est": 0.5},
        {"sample_id": "a2", "group": "A", "psnr": 32.0, "bpp_est": 0.4},
        {"sample_id": "b1", "group": "B", "psnr": 20.0, "bpp_est": 0.7},
        # A DistributedSampler pads the last batch by repeating images.
        {"sample_id": "a1", "group": "A", "psnr": 30.0, "bpp_est": 0.5},
    ]
    logged = callback.summarize_epoch(rows, epoch=0, final=False)
    assert logged["val/psnr/A"] == pytest.approx(31.0)
    assert logged["val/fair/psnr_gap"] == pytest.approx(11.0)
    metrics = pd.read_csv(tmp_path / "group_metrics.csv")
    assert int(metrics.loc[(metrics.group == "A") & (metrics.metric == "psnr"), "n"].iloc[0]) == 2
    assert np.isnan(metrics.loc[(metrics.group == "B") & (metrics.metric == "psnr"), "ci_low"].iloc[0])

