"""ClassifierMeasure, RealismMeasure and image logging inside a real Trainer and FairnessCallback."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from callbacks.fairness_callback import FairnessCallback
from callbacks.image_logging import ReconstructionImageLogger
from callbacks.measures import ClassifierMeasure, RealismMeasure, is_realism_epoch
from datamodules.datamodule import FaceDataModule
from fairness.attribute_metrics import attribute_fidelity
from fairness.realism import frechet_distance, kid
from lightning_modules.classifier import AttributeClassifier
from tests.measure_helpers import FixedFeatures, TransformCodec, blur

DATA = {"name": "synthetic", "n_per_group": 40, "generator_seed": 0, "image_size": 32, "eval_fraction": 0.1,
        "batch_size": 16, "eval_batch_size": 5, "num_workers": 0}
SPLIT = {"kind": "natural"}
ATTRIBUTES = ("skintype", "hairtype")


class CountingClassifier:
    """Wrap a classifier and count the images it is asked to classify."""

    def __init__(self, classifier) -> None:
        self.inner = classifier
        self.attributes = classifier.attributes
        self.images_seen = 0

    def predict(self, images):
        self.images_seen += images.shape[0]
        return self.inner.predict(images)


def random_classifier(datamodule) -> AttributeClassifier:
    torch.manual_seed(0)
    attributes = {name: datamodule.attributes[name] for name in ATTRIBUTES}
    return AttributeClassifier(attributes, datamodule.group_names, backbone="tiny_cnn", pretrained=False).eval()


def make_datamodule(data=None, split=None) -> FaceDataModule:
    datamodule = FaceDataModule(data or DATA, split or SPLIT, seed=0)
    datamodule.setup("validate")
    return datamodule


def validate(run_dir, datamodule, classifier, *, blur_group=None, extractor=None, batch_size=None, fid_min=200,
             n_resamples=200, extra_callbacks=()):
    """Run trainer.validate with both measures; returns the callback and its output frames."""
    if batch_size is not None:
        datamodule.eval_batch_size = batch_size
    measures = [
        ClassifierMeasure(classifier, datamodule.attributes, datamodule.group_names, n_resamples=n_resamples),
        RealismMeasure(extractor if extractor is not None else FixedFeatures(), datamodule.group_names,
                       fid_min_per_group=fid_min, kid_subsets=20),
    ]
    callback = FairnessCallback(run_dir, datamodule.group_names, n_resamples=n_resamples, measures=measures)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback, *extra_callbacks])
    trainer.validate(TransformCodec(blur_group), datamodule=datamodule, verbose=False)
    return {
        "callback": callback,
        "group_metrics": pd.read_csv(run_dir / "group_metrics.csv"),
        "gaps": pd.read_csv(run_dir / "gaps.csv"),
        "per_image": pd.read_csv(run_dir / "per_image.csv"),
        "summary": json.loads((run_dir / "fairness_summary.json").read_text()),
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run the tiny models of this file on one intra-op thread (see test_classifier's fixture)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datamodule():
    return make_datamodule()


@pytest.fixture(scope="module")
def identity_run(datamodule, tmp_path_factory):
    return validate(tmp_path_factory.mktemp("identity"), datamodule, random_classifier(datamodule))


def metric_values(group_metrics, metric, attribute=None):
    rows = group_metrics[group_metrics["metric"] == metric]
    if attribute is not None:
        rows = rows[rows["attribute"] == attribute]
    return rows.set_index("group")["value"]


def test_identity_codec_agreement_and_retention_one(identity_run, datamodule):
    metrics = identity_run["group_metrics"]
    for attribute in ATTRIBUTES:
        agreement = metric_values(metrics, "agreement", attribute)
        retention = metric_values(metrics, "retention", attribute)
        degradation = metric_values(metrics, "degradation", attribute)
        for group in datamodule.group_names:
            assert agreement[group] == 1.0, (attribute, group)
            assert degradation[group] == 0.0, (attribute, group)
            if np.isfinite(retention[group]):  # NaN where no original was classified correctly
                assert retention[group] == 1.0, (attribute, group)
        assert retention.notna().sum() >= 2


def test_identity_codec_realism_zero(identity_run, datamodule):
    metrics = identity_run["group_metrics"]
    feat_distance = metric_values(metrics, "feat_dist")
    fid = metric_values(metrics, "fid")

    kid_values = metric_values(metrics, "kid")

    assert (feat_distance.abs() < 1e-6).all()
    assert (kid_values.abs() < 1e-9).all()
    assert list(fid.index) == ["all"]  # 4 images per group is below fid_min_per_group
    assert abs(fid["all"]) < 1e-6


def test_per_image_columns_and_no_features(identity_run, datamodule):
    per_image = identity_run["per_image"]
    for attribute in ATTRIBUTES:
        for suffix in ("_label", "_pred_orig", "_pred_rec"):
            assert f"{attribute}{suffix}" in per_image.columns
    assert not [c for c in per_image.columns if c.startswith("_")]
    assert len(per_image) == len(datamodule.datasets["val"])
    assert per_image["sample_id"].is_unique


def test_classifier_rows_match_attribute_fidelity(identity_run, datamodule):
    per_image = identity_run["per_image"]
    metrics = identity_run["group_metrics"]
    for attribute in ATTRIBUTES:
        reference = attribute_fidelity(per_image[f"{attribute}_label"], per_image[f"{attribute}_pred_orig"],
                                       per_image[f"{attribute}_pred_rec"], per_image["group"],
                                       datamodule.group_names, intervals=False)
        for _, row in reference.iterrows():
            ours = metrics[(metrics["attribute"] == attribute) & (metrics["metric"] == row["metric"])
                           & (metrics["group"] == row["group"])]
            assert len(ours) == 1, (attribute, row["metric"], row["group"])
            assert ours["n"].iloc[0] == row["n"]
            if np.isnan(row["value"]):
                assert np.isnan(ours["value"].iloc[0])
            else:
                assert ours["value"].iloc[0] == pytest.approx(row["value"], abs=1e-12)


def test_kid_and_fid_match_direct_computation(tmp_path, datamodule):
    run = validate(tmp_path, datamodule, random_classifier(datamodule), blur_group=1)
    extractor = FixedFeatures()
    images = torch.stack([datamodule.datasets["val"][i]["image"] for i in range(len(datamodule.datasets["val"]))])
    groups = np.asarray(datamodule.datasets["val"].groups)
    reconstructions = images.clone()
    reconstructions[groups == 1] = blur(images[groups == 1])
    with torch.no_grad():
        original = extractor(images).double().numpy()
        reconstructed = extractor(reconstructions).double().numpy()
    kid_values = metric_values(run["group_metrics"], "kid")
    fid = metric_values(run["group_metrics"], "fid")

    for index, group in enumerate(datamodule.group_names):
        mask = groups == index
        expected = kid(original[mask], reconstructed[mask], 1000, 20, 0, paired=True).mean
        # Features are float32 and batch composition changes their last bits.
        assert kid_values[group] == pytest.approx(expected, rel=1e-5, abs=1e-9), group
    expected_fid = frechet_distance(original.mean(0), np.cov(original, rowvar=False),
                                    reconstructed.mean(0), np.cov(reconstructed, rowvar=False))
    assert fid["all"] == pytest.approx(expected_fid, rel=1e-5)
    assert kid_values.drop("all").idxmax() == datamodule.group_names[1]


def test_batch_size_does_not_change_results(tmp_path, datamodule):
    classifier = random_classifier(datamodule)
    small = validate(tmp_path / "small", make_datamodule(), classifier, blur_group=2, batch_size=3)
    large = validate(tmp_path / "large", make_datamodule(), classifier, blur_group=2, batch_size=16)
    key = ["group", "attribute", "metric"]
    merged = small["group_metrics"].merge(large["group_metrics"], on=key, suffixes=("_small", "_large"))

    assert len(merged) == len(small["group_metrics"]) == len(large["group_metrics"])
    # Feature vectors are float32, and conv results differ in the last bits by batch size.
    np.testing.assert_allclose(merged["value_small"], merged["value_large"], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(merged["n_small"], merged["n_large"])


def test_originals_classified_once_per_run(tmp_path, datamodule):
    counting = CountingClassifier(random_classifier(datamodule))
    measure = ClassifierMeasure(counting, datamodule.attributes, datamodule.group_names, n_resamples=50)
    callback = FairnessCallback(tmp_path, datamodule.group_names, n_resamples=50, measures=[measure])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], max_epochs=3, num_sanity_val_steps=0,
                        limit_train_batches=1)
    trainer.fit(TransformCodec(), datamodule=datamodule)
    n_val = len(datamodule.datasets["val"])

    # Originals once, reconstructions in each of the 3 epochs.
    assert counting.images_seen == n_val + 3 * n_val


def test_realism_every_n_epochs(tmp_path, datamodule):
    measure = RealismMeasure(FixedFeatures(), datamodule.group_names, every_n_epochs=2, kid_subsets=5)
    callback = FairnessCallback(tmp_path, datamodule.group_names, n_resamples=50, measures=[measure])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], max_epochs=3, num_sanity_val_steps=0,
                        limit_train_batches=1)
    trainer.fit(TransformCodec(blur_group=0), datamodule=datamodule)
    metrics = pd.read_csv(tmp_path / "group_metrics.csv")

    assert sorted(metrics.loc[metrics["metric"] == "kid", "epoch"].unique()) == [1, 2]
    assert sorted(metrics.loc[metrics["metric"] == "feat_dist", "epoch"].unique()) == [1, 2]
    assert sorted(metrics.loc[metrics["metric"] == "psnr", "epoch"].unique()) == [0, 1, 2]


def test_is_realism_epoch_schedule():
    assert [is_realism_epoch(e, 3, False) for e in range(6)] == [False, False, True, False, False, True]
    assert not is_realism_epoch(0, 0, False)
    assert is_realism_epoch(0, 0, True)


def test_fid_per_group_when_groups_large(tmp_path, datamodule):
    run = validate(tmp_path, datamodule, random_classifier(datamodule), blur_group=3, fid_min=4)
    fid = metric_values(run["group_metrics"], "fid")
    gaps = run["gaps"]

    assert set(fid.index) == set(datamodule.group_names) | {"all"}
    assert gaps.loc[gaps["metric"] == "fid", "worst_group"].iloc[0] == datamodule.group_names[3]


def test_summary_flags_underpowered_and_gate(identity_run):
    summary = identity_run["summary"]
    entries = {(e["attribute"], e["metric"]): e for e in summary["metrics"]}

    assert summary["underpowered"] is True
    assert sorted(summary["underpowered_groups"]) == sorted(summary["groups"])
    assert entries[("skintype", "agreement")]["flags"]["underpowered"] is True
    assert "classifier_below_majority" in entries[("skintype", "agreement")]["flags"]
    assert set(summary["classifier_quality"]) == set(ATTRIBUTES)
    assert entries[(None, "fid")]["flags"]["pooled_only"] is True
    assert summary["named_summaries"]["skintype"]["compression_bias"]["gap"] == 0.0
    assert summary["named_summaries"]["skintype"]["compression_bias"]["p_value"] is not None


def test_quality_gate_from_predictions(datamodule):
    classifier = random_classifier(datamodule)
    measure = ClassifierMeasure(classifier, datamodule.attributes, datamodule.group_names, min_margin=0.05,
                                n_resamples=50)
    labels = np.array([0, 0, 0, 1, 2, 3, 4, 5] * 2)
    groups = np.repeat(datamodule.group_names, 4)
    perfect = pd.DataFrame({"group": groups, "skintype_label": labels, "skintype_pred_orig": labels,
                            "skintype_pred_rec": labels})
    constant = perfect.assign(skintype_pred_orig=0, skintype_pred_rec=0)

    measure.epoch_rows(perfect, 0, False)
    assert measure.quality["skintype"]["passes"] is True
    assert measure.quality["skintype"]["majority_rate"] == pytest.approx(6 / 16)
    measure.epoch_rows(constant, 0, False)
    assert measure.quality["skintype"]["passes"] is False
    assert measure.summary_flags()["skintype"]["classifier_below_majority"] is True


def test_missing_weights_reported_unavailable(tmp_path, datamodule):
    measure = RealismMeasure(None, datamodule.group_names)
    callback = FairnessCallback(tmp_path, datamodule.group_names, n_resamples=50, measures=[measure])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback])
    trainer.validate(TransformCodec(), datamodule=datamodule, verbose=False)
    summary = json.loads((tmp_path / "fairness_summary.json").read_text())
    unavailable = {e["metric"]: e for e in summary["metrics"] if e["flags"].get("unavailable")}

    assert {"fid", "kid", "feat_dist", "lpips"} <= set(unavailable)
    assert "Inception" in unavailable["kid"]["flags"]["reason"]
    metrics = pd.read_csv(tmp_path / "group_metrics.csv")
    assert not set(metrics["metric"]) & {"fid", "kid", "feat_dist", "lpips"}


def test_measure_rejects_mismatched_labels(datamodule):
    classifier = random_classifier(datamodule)
    attributes = dict(datamodule.attributes)
    attributes["skintype"] = list(reversed(attributes["skintype"]))
    with pytest.raises(ValueError, match="skintype"):
        ClassifierMeasure(classifier, attributes, datamodule.group_names)


def test_image_logger_fixed_examples_and_grid(tmp_path, datamodule):
    loggers = []
    for batch_size in (3, 16):
        image_logger = ReconstructionImageLogger(tmp_path / str(batch_size), datamodule.group_names,
                                                 images_per_group=2, classifier=random_classifier(datamodule))
        validate(tmp_path / f"run{batch_size}", make_datamodule(), random_classifier(datamodule),
                 batch_size=batch_size, extra_callbacks=[image_logger])
        loggers.append(image_logger)
    val = datamodule.datasets["val"]
    expected = []
    for index, group in enumerate(datamodule.group_names):
        ids = sorted(s for s, g in zip(val.sample_ids, val.groups) if g == index)
        expected += ids[:2]

    for image_logger in loggers:
        assert [e["sample_id"] for e in image_logger.last_examples] == expected
        assert set(image_logger.last_examples[0]["predictions"]) == set(ATTRIBUTES)
    grid = tmp_path / "3" / "reconstructions" / "epoch_000.png"
    from PIL import Image

    with Image.open(grid) as image:
        # 32 px faces are enlarged 3x; two rows (original, reconstruction) per group.
        assert image.size[1] == len(datamodule.group_names) * 2 * (96 + 4)


@pytest.mark.slow
def test_blurring_one_group_makes_it_worst(tmp_path):
    from lightning_modules.classifier_pipeline import predict_partition

    # 2000 faces per group give 200 per group in val; the classifier trains on 60 per group.
    data = {**DATA, "n_per_group": 2000, "batch_size": 32, "eval_batch_size": 100}
    datamodule = make_datamodule(data, {"kind": "balanced", "per_group": 60})
    torch.manual_seed(0)
    attributes = {name: datamodule.attributes[name] for name in ATTRIBUTES}
    classifier = AttributeClassifier(attributes, datamodule.group_names, backbone="tiny_cnn", pretrained=False,
                                     lr=3e-3, image_size=32)
    L.Trainer(accelerator="cpu", max_epochs=8, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(
        classifier, train_dataloaders=datamodule.train_dataloader())
    labels, predictions, _ = predict_partition(classifier, datamodule, "val")
    run = validate(tmp_path, datamodule, classifier, blur_group=2, n_resamples=999)
    blurred = datamodule.group_names[2]
    gaps = run["gaps"].set_index(["attribute", "metric"])

    assert (run["per_image"].groupby("group").size() == 200).all()
    assert np.mean(predictions["skintype"] == labels["skintype"]) > 0.5
    feat_distance = run["gaps"][run["gaps"]["metric"] == "feat_dist"].iloc[0]
    assert feat_distance["worst_group"] == blurred
    assert feat_distance["p_value"] < 0.01
    for attribute in ATTRIBUTES:
        row = gaps.loc[(attribute, "agreement")]
        assert row["worst_group"] == blurred, attribute
        assert row["p_value"] < 0.01, attribute


@pytest.mark.slow
@pytest.mark.ddp
def test_measures_identical_over_process_counts(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    frames = {}
    for devices in (1, 2, 3):
        out = tmp_path / f"devices{devices}"
        result = subprocess.run([sys.executable, str(repo / "tests" / "ddp_scripts" / "validate_measures.py"),
                                 "--devices", str(devices), "--out", str(out)],
                                cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        frames[devices] = {
            "group_metrics": pd.read_csv(out / "group_metrics.csv"),
            "per_image": pd.read_csv(out / "per_image.csv"),
            "examples": json.loads((out / "examples.json").read_text()),
        }
    reference = frames[1]["group_metrics"]

    assert {"kid", "fid", "feat_dist", "agreement"} <= set(reference["metric"])
    assert len(frames[1]["per_image"]) == 13
    for devices in (2, 3):
        other = frames[devices]
        assert other["examples"] == frames[1]["examples"]
        assert other["per_image"]["sample_id"].tolist() == frames[1]["per_image"]["sample_id"].tolist()
        assert other["group_metrics"][["group", "attribute", "metric", "n"]].equals(
            reference[["group", "attribute", "metric", "n"]])
        np.testing.assert_allclose(other["group_metrics"]["value"], reference["value"], rtol=1e-5, atol=1e-7)
