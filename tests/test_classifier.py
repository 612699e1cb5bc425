"""AttributeClassifier: training on synthetic faces, per-group metrics, loading, configs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from sklearn.metrics import balanced_accuracy_score

from datamodules.fairface import ATTRIBUTES as FAIRFACE_ATTRIBUTES
from datamodules.groups import identifier
from datamodules.prepare import prepare_data
from lightning_modules.classifier import (
    AttributeClassifier,
    build_backbone,
    group_accuracy_table,
    majority_rate,
)
from lightning_modules.classifier_loading import EXTERNAL_CLASSIFIERS, ExternalClassifier, load_classifier
from lightning_modules.classifier_pipeline import ACCURACY_FILE, fit_classifier, predict_partition

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
ATTRIBUTES = ["skintype", "hairtype"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny classifier trained by the real pipeline on 60 synthetic faces per group."""
    cfg = compose_config([
        "experiment=classifier_synthetic", "data.n_per_group=60", "data.image_size=32", "data.batch_size=32",
        "data.eval_batch_size=64", "trainer.max_epochs=8", "logger=csv", "+trainer.enable_progress_bar=false",
        f"classifier.attributes=[{','.join(ATTRIBUTES)}]",
    ])
    prepared = prepare_data(cfg.data, cfg.split, int(cfg.seed))
    run_dir = tmp_path_factory.mktemp("classifier_run")
    # One intra-op thread: a model this small gains nothing from more, and on a busy
    # 2-core machine OpenMP threads waiting on each other made training 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, trainer = fit_classifier(cfg, prepared, run_dir)
    finally:
        torch.set_num_threads(threads)
    return {"cfg": cfg, "prepared": prepared, "run_dir": run_dir, "model": model, "trainer": trainer}


def held_out(trained):
    """Labels, predictions and groups of val and test together."""
    datamodule = trained["trainer"].datamodule
    parts = [predict_partition(trained["model"], datamodule, p) for p in ("val", "test")]
    labels = {a: np.concatenate([p[0][a] for p in parts]) for a in ATTRIBUTES}
    predictions = {a: np.concatenate([p[1][a] for p in parts]) for a in ATTRIBUTES}
    groups = parts[0][2] + parts[1][2]
    return labels, predictions, groups


def test_classifier_beats_majority_on_skintype(trained):
    labels, predictions, _ = held_out(trained)
    accuracy = float(np.mean(predictions["skintype"] == labels["skintype"]))
    floor = majority_rate(labels["skintype"])

    assert labels["skintype"].size == 48
    assert accuracy > floor + 0.15, f"accuracy {accuracy:.3f} vs majority rate {floor:.3f}"


def test_classifier_trains_on_training_split_only(trained):
    prepared = trained["prepared"]
    manifest = prepared.manifest
    trained_ids = set(trained["trainer"].datamodule.datasets["train"].sample_ids)
    held_out_ids = set(manifest.loc[manifest["partition"] != "train", "sample_id"])

    assert trained_ids == set(manifest.loc[manifest["in_training"] == 1, "sample_id"])
    assert not trained_ids & held_out_ids


def test_classifier_logged_group_accuracy_matches_predictions(trained):
    model, trainer = trained["model"], trained["trainer"]
    labels, predictions, groups = predict_partition(model, trainer.datamodule, "val")
    groups = np.asarray(groups)
    logged = trainer.callback_metrics

    for group in trained["prepared"].group_names:
        in_group = groups == group
        truth, predicted = labels["skintype"][in_group], predictions["skintype"][in_group]
        key = f"val/skintype/acc/{identifier(group)}"
        assert float(logged[key]) == pytest.approx(np.mean(truth == predicted), abs=1e-6), key
        balanced = balanced_accuracy_score(truth, predicted)
        assert float(logged[f"val/skintype/bal_acc/{identifier(group)}"]) == pytest.approx(balanced, abs=1e-6)
    assert float(logged["val/skintype/acc"]) == pytest.approx(np.mean(labels["skintype"] == predictions["skintype"]))


def test_pipeline_writes_checkpoint_and_table(trained):
    run_dir = trained["run_dir"]
    table = pd.read_csv(run_dir / ACCURACY_FILE)
    expected_groups = set(trained["prepared"].group_names) | {"all"}

    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == trained["cfg"].trainer.max_epochs - 1
    assert (run_dir / "classifier_accuracy.md").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    for partition in ("val", "test"):
        for attribute in ATTRIBUTES:
            rows = table[(table["partition"] == partition) & (table["attribute"] == attribute)]
            assert set(rows["group"]) == expected_groups, (partition, attribute)
    np.testing.assert_allclose(table["margin"], table["acc"] - table["majority_rate"], atol=1e-12)


def test_checkpoint_reload_reproduces_predictions(trained):
    model = trained["model"].cpu()
    reloaded = load_classifier(trained["run_dir"] / "checkpoints" / "last.ckpt",
                               trained["prepared"].table.attributes)
    datamodule = trained["trainer"].datamodule
    batch = next(iter(datamodule.val_dataloader()))

    assert reloaded.attributes == model.attributes
    assert not reloaded.training
    expected = model.predict(batch["image"])
    got = reloaded.predict(batch["image"])
    for name in ATTRIBUTES:
        assert torch.equal(got[name], expected[name]), name
        torch.testing.assert_close(reloaded(batch["image"])[name], model.eval()(batch["image"])[name])


def test_reload_rejects_reordered_labels(trained):
    attributes = dict(trained["prepared"].table.attributes)
    attributes["skintype"] = list(reversed(attributes["skintype"]))
    with pytest.raises(ValueError, match="skintype labels"):
        load_classifier(trained["run_dir"] / "checkpoints" / "last.ckpt", attributes)


def test_predict_resizes_to_training_size(trained):
    model = trained["model"].cpu()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    larger = F.interpolate(images, size=(64, 64), mode="nearest")
    resized = F.interpolate(larger, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)

    assert torch.equal(model.predict(larger)["skintype"], model.predict(resized)["skintype"])


def test_loss_ignores_unknown_labels():
    torch.manual_seed(0)
    model = AttributeClassifier({"eye": ["narrow", "normal"], "nose": ["narrow", "wide"]},
                                backbone="tiny_cnn", pretrained=False)
    images = torch.rand(4, 3, 32, 32)
    logits = model(images)
    labels = {"eye": torch.tensor([0, -1, 1, -1]), "nose": torch.full((4,), -1)}
    loss, per_attribute = model._loss(logits, labels)
    expected_eye = F.cross_entropy(logits["eye"][[0, 2]], torch.tensor([0, 1]))

    torch.testing.assert_close(per_attribute["eye"], expected_eye)
    assert float(per_attribute["nose"]) == 0.0
    torch.testing.assert_close(loss, expected_eye)
    loss.backward()
    assert model.heads["eye"].weight.grad.abs().sum() > 0


def test_attribute_names_are_checked():
    with pytest.raises(ValueError, match="needs at least 2 labels"):
        AttributeClassifier({"eye": ["normal"]}, backbone="tiny_cnn", pretrained=False)
    with pytest.raises(ValueError, match="must be an identifier"):
        AttributeClassifier({"skin type": ["a", "b"]}, backbone="tiny_cnn", pretrained=False)


def test_timm_backbone_builds_offline():
    backbone = build_backbone("resnet10t", pretrained=False)
    features = backbone(torch.rand(2, 3, 32, 32))

    assert features.shape == (2, backbone.num_features)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("no_such_net", pretrained=False)


def test_timm_backbone_loads_cached_weights(tmp_path, monkeypatch):
    import timm
    from timm.models import get_pretrained_cfg

    # A random state dict at the file name timm would cache the ImageNet weights under.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    torch.manual_seed(3)
    source = timm.create_model("resnet10t", pretrained=False)
    url = get_pretrained_cfg("resnet10t").url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)

    loaded = build_backbone("resnet10t", pretrained=True)
    explicit = build_backbone("resnet10t", pretrained=False, weights=cached)
    for module in (loaded, explicit):
        torch.testing.assert_close(module.conv1[0].weight, source.conv1[0].weight)


def test_backbone_missing_weights_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_backbone("resnet10t", weights=tmp_path / "absent.pth")


def test_group_accuracy_table_values():
    labels = {"eye": np.array([0, 0, 1, 1, 1, -1, 0, 0])}
    predictions = {"eye": np.array([0, 1, 1, 1, 0, 0, 0, 0])}
    groups = ["a", "a", "a", "a", "a", "a", "b", "b"]
    table = group_accuracy_table(labels, predictions, groups, ["a", "b", "c"], {"eye": ["narrow", "normal"]})
    row_a = table[table["group"] == "a"].iloc[0]
    row_c = table[table["group"] == "c"].iloc[0]

    assert row_a["n"] == 5
    assert row_a["acc"] == pytest.approx(3 / 5)
    assert row_a["bal_acc"] == pytest.approx(balanced_accuracy_score([0, 0, 1, 1, 1], [0, 1, 1, 1, 0]))
    assert row_a["majority_label"] == "normal"
    assert row_a["majority_rate"] == pytest.approx(3 / 5)
    assert not row_a["beats_majority"]
    assert row_c["n"] == 0
    assert np.isnan(row_c["acc"])
    assert table[table["group"] == "all"].iloc[0]["n"] == 7


def test_majority_rate_ignores_unknown():
    assert majority_rate([2, 2, 1, -1, -1]) == pytest.approx(2 / 3)
    assert np.isnan(majority_rate([-1, -1]))


def fairface_network(seed: int = 0):
    import torchvision

    torch.manual_seed(seed)
    network = torchvision.models.resnet34(weights=None)
    network.fc = torch.nn.Linear(network.fc.in_features, 18)
    return network.eval()


def test_external_fairface_label_map(tmp_path):
    network = fairface_network()
    path = tmp_path / EXTERNAL_CLASSIFIERS["fairface_res34_7"].filename
    torch.save(network.state_dict(), path)
    # Gender in the opposite order tests that predictions follow label names, not positions.
    attributes = {"race": FAIRFACE_ATTRIBUTES["race"], "gender": ["Female", "Male"], "age": FAIRFACE_ATTRIBUTES["age"]}
    classifier = load_classifier(path, attributes)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    resized = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = network((resized - mean) / std)
    predicted = classifier.predict(images)

    assert isinstance(classifier, ExternalClassifier)
    assert torch.equal(predicted["race"], logits[:, :7].argmax(1))
    assert torch.equal(predicted["gender"], 1 - logits[:, 7:9].argmax(1))
    assert torch.equal(predicted["age"], logits[:, 9:18].argmax(1))
    assert FAIRFACE_ATTRIBUTES["age"][-1] == "more than 70"  # matched to the model's "70+"


def test_external_missing_file_names_source(tmp_path):
    spec = EXTERNAL_CLASSIFIERS["fairface_res34_7"]
    with pytest.raises(FileNotFoundError, match="github.com/joojs/fairface"):
        load_classifier(tmp_path / spec.filename, FAIRFACE_ATTRIBUTES)
    with pytest.raises(FileNotFoundError, match="task=classifier"):
        load_classifier(tmp_path / "last.ckpt", FAIRFACE_ATTRIBUTES)


def test_classifier_configs_compose():
    fairface = compose_config(["experiment=classifier_fairface", "data.root=/data/fairface"])
    synthetic = compose_config(["experiment=classifier_synthetic"])

    assert fairface.task == "classifier"
    assert fairface.classifier.backbone == "resnet18"
    assert fairface.data.name == "fairface"
    assert fairface.split.kind == "natural"
    assert synthetic.classifier.backbone == "tiny_cnn"
    assert synthetic.data.name == "synthetic"


class WorseEveryEpoch(L.LightningModule):
    """A model whose val/loss is best in epoch 0 and rises afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_checkpoint_holds_final_epoch(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_modules.pipeline import checkpoint_callbacks

    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=checkpoint_callbacks(tmp_path, monitor="val/loss", mode="min"))
    trainer.fit(WorseEveryEpoch(), loader, loader)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    assert last["epoch"] == 2
    assert Path(trainer.checkpoint_callback.best_model_path).name == "best-epoch=000.ckpt"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best-epoch=000.ckpt", "last.ckpt"]
