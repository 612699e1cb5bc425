import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from datamodules.fairface import load_fairface
from datamodules.prepare import prepare_data, write_manifest
from tests.factories import write_fairface_layout

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"White": 15, "Black": 9, "Latino_Hispanic": 9, "East Asian": 8,
         "Southeast Asian": 9, "Indian": 9, "Middle Eastern": 9}


@pytest.fixture(scope="module")
def fairface_root(tmp_path_factory):
    return write_fairface_layout(tmp_path_factory.mktemp("fairface"), TRAIN, 4, size=32)


def compose_cfg(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def prepared(root, *overrides):
    cfg = compose_cfg([f"data.root={root}", *overrides])
    return prepare_data(cfg.data, cfg.split, int(cfg.seed))


def test_loader_reads_labels_and_pools(fairface_root):
    table = load_fairface(fairface_root)
    counts = table.samples.groupby(["pool", "group"]).size()
    assert counts["train"].to_dict() == TRAIN
    assert set(counts["eval"].tolist()) == {4}
    assert table.attributes["race"][3] == "East Asian"
    assert table.samples["sample_id"].iloc[0] == "train/1.jpg"
    assert table.default_face_crop == 0.5


def test_service_test_column_is_optional(tmp_path):
    root = write_fairface_layout(tmp_path, 2, 2, size=16, service_test=True)
    assert len(load_fairface(root).samples) == 7 * 4


def test_balanced_experiment_counts(fairface_root):
    data = prepared(fairface_root, "experiment=fairface_balanced", "split.per_group=8")
    counts = data.counts()
    assert counts.loc["East Asian", "training"] == 8
    assert (counts.drop("total")["training"] == 8).all()
    assert (counts.drop("total")["val"] == 2).all()
    assert (counts.drop("total")["test"] == 2).all()


def test_imbalanced_experiment_counts(fairface_root):
    data = prepared(fairface_root, "experiment=fairface_imbalanced", "split.total=20")
    training = data.counts().drop("total")["training"]
    assert training["White"] == 14
    assert (training.drop("White") == 1).all()


def test_imbalanced_alias_override(fairface_root):
    data = prepared(
        fairface_root, "experiment=fairface_imbalanced", "split.total=20",
        "split.proportions.White=0.6", "split.proportions.East_Asian=0.15",
    )
    training = data.counts()["training"]
    assert training["White"] == 12
    assert training["East Asian"] == 3


def test_request_above_pool_is_clear(fairface_root):
    with pytest.raises(ValueError) as error:
        prepared(fairface_root, "experiment=fairface_imbalanced", "split.total=30")
    assert "White" in str(error.value)
    assert "21 training images" in str(error.value)
    assert "15 available" in str(error.value)


def test_eval_partitions_ignore_seed_and_kind(fairface_root):
    runs = [
        prepared(fairface_root, "experiment=fairface_balanced", "seed=0").manifest,
        prepared(fairface_root, "experiment=fairface_balanced", "seed=5").manifest,
        prepared(fairface_root, "experiment=fairface_imbalanced", "split.total=20", "seed=1").manifest,
    ]
    for partition in ("val", "test"):
        ids = [set(m.loc[m.partition == partition, "sample_id"]) for m in runs]
        assert ids[0] == ids[1] == ids[2]
        training = set(runs[0].loc[runs[0].partition == "train", "sample_id"])
        assert not ids[0] & training
    drawn = [set(m.loc[m.in_training == 1, "sample_id"]) for m in runs[:2]]
    assert drawn[0] != drawn[1]


def test_missing_column_names_file(fairface_root, tmp_path):
    root = write_fairface_layout(tmp_path, 2, 2, size=16)
    csv = root / "fairface_label_val.csv"
    csv.write_text(csv.read_text().replace("race", "ethnicity"))
    with pytest.raises(ValueError) as error:
        load_fairface(root)
    assert "fairface_label_val.csv" in str(error.value)
    assert "['race']" in str(error.value)


def test_unknown_race_names_row_and_value(tmp_path):
    root = write_fairface_layout(tmp_path, 2, 2, size=16)
    csv = root / "fairface_label_train.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",Martian"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        load_fairface(root)
    message = str(error.value)
    assert "line 4" in message
    assert "'Martian'" in message
    assert "East Asian" in message


def test_dry_run_cli_writes_identical_manifests(fairface_root, tmp_path):
    outputs = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        result = subprocess.run(
            [sys.executable, "train.py", "experiment=fairface_balanced", f"data.root={fairface_root}",
             "split.per_group=6", "dry_run=true", f"hydra.run.dir={run_dir}"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
        assert (run_dir / "provenance.json").is_file()
    first = (tmp_path / "a" / "split_manifest.csv").read_bytes()
    assert first == (tmp_path / "b" / "split_manifest.csv").read_bytes()
    assert "| East Asian | 8 | 6 | 2 | 2 |" in outputs[0]
    manifest = pd.read_csv(tmp_path / "a" / "split_manifest.csv")
    assert list(manifest.columns[:5]) == ["sample_id", "file", "partition", "in_training", "group"]
    assert {"race", "gender", "age"} <= set(manifest.columns)
