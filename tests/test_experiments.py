from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from datamodules.prepare import prepare_data
from tests.dataset_layouts import write_rfw, write_rfw_phenotypes

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    assert cfg.experiment_name == experiment
    assert cfg.task in ("codec", "classifier")
    if cfg.split.kind == "imbalanced":
        assert sum(cfg.split.proportions.values()) == pytest.approx(1.0)


def test_rfw_imbalanced_counts(tmp_path):
    identities = {f"{group}/m.{group[:2].lower()}{i}": 3
                  for group in ("African", "Asian", "Caucasian", "Indian") for i in range(12)}
    write_rfw(tmp_path, identities)
    rows = [(class_id, "type4", "big", "wide", "normal", "curly", "black") for class_id in identities]
    write_rfw_phenotypes(tmp_path / "RFW_metadata_FDA.csv", rows)

    cfg = compose_cfg(["experiment=rfw_imbalanced", f"data.root={tmp_path}", "split.total=20",
                       "data.disk_cache=false"])
    prepared = prepare_data(cfg.data, cfg.split, int(cfg.seed))
    training = prepared.counts().drop("total")["training"]
    assert training.to_dict() == {"African": 2, "Asian": 2, "Caucasian": 14, "Indian": 2}
    manifest = prepared.manifest
    assert set(manifest.loc[manifest.partition == "val", "skintype"]) == {"type4"}
