"""RFW loader: folder layout, phenotype join, missing identities, identity-disjoint partitions."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from datamodules.groups import RFW4
from datamodules.prepare import prepare_data
from datamodules.rfw import PHENOTYPES, load_rfw
from datamodules.table import apply_group_scheme
from tests.dataset_layouts import write_rfw, write_rfw_phenotypes

REAL_PHENOTYPES = Path(
    os.environ.get(
        "FAIRBITS_RFW_PHENOTYPES",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "rfw_phenotypes" / "RFW_metadata_FDA.csv",
    )
)

PHENOTYPE_ROWS = [
    ("African/m.a1", "type6", "big", "wide", "normal", "curly", "black"),
    ("African/m.a2", "type5", "small", "wide", "normal", "bald", "black"),
    ("Asian/m.b1", "type3", "small", "narrow", "narrow", "straight", "black"),
    ("Caucasian/m.c1", "type2", "small", "narrow", "normal", "wavy", "blonde"),
    ("Indian/m.d1", "type4", "big", "wide", "normal", "straight", "gray"),
]


@pytest.fixture
def small_rfw(tmp_path):
    counts = {"African/m.a1": 2, "African/m.a2": 3, "Asian/m.b1": 2, "Asian/m.b2": 1,
              "Caucasian/m.c1": 2, "Indian/m.d1": 2}
    write_rfw(tmp_path, counts)
    write_rfw_phenotypes(tmp_path / "RFW_metadata_FDA.csv", PHENOTYPE_ROWS)
    return tmp_path


def test_rfw_images_take_identity_phenotypes(small_rfw):
    table = load_rfw(small_rfw)
    samples = table.samples.set_index("file")
    assert len(samples) == 12
    row = samples.loc["African/m.a2/m.a2_0003.jpg"]
    assert (row["group"], row["race"], row["identity"]) == ("African", "African", "m.a2")
    assert [row[p] for p in PHENOTYPES] == list(PHENOTYPE_ROWS[1][1:])
    assert samples.loc["Caucasian/m.c1/m.c1_0001.jpg", "haircolor"] == "blonde"
    assert table.attributes["hairtype"] == ["straight", "wavy", "curly", "bald"]
    assert table.identity_column == "class_id"
    assert table.default_face_crop == 1.0


def test_rfw_missing_identity_counted(small_rfw, caplog):
    with caplog.at_level(logging.WARNING, logger="datamodules.rfw"):
        table = load_rfw(small_rfw)
    assert table.notes["identities_without_phenotypes"] == 1
    assert table.notes["images_without_phenotypes"] == 1
    assert any("Asian/m.b2" in r.getMessage() for r in caplog.records)
    missing = table.samples.loc[table.samples["identity"] == "m.b2"]
    encoded = table.encode_attributes(missing)
    assert all(encoded[p].tolist() == [-1] for p in PHENOTYPES)
    assert encoded["race"].tolist() == [RFW4.index("Asian")]


def test_rfw_data_subfolder_and_explicit_csv(tmp_path):
    write_rfw(tmp_path, {"Indian/m.d1": 2}, folder="test/data")
    csv = write_rfw_phenotypes(tmp_path / "labels" / "phenotypes.csv", PHENOTYPE_ROWS)
    table = load_rfw(tmp_path, phenotype_csv="labels/phenotypes.csv")
    assert table.samples["file"].tolist() == ["test/data/Indian/m.d1/m.d1_0001.jpg", "test/data/Indian/m.d1/m.d1_0002.jpg"]
    assert table.samples["skintype"].tolist() == ["type4", "type4"]
    assert csv.is_file()


def test_rfw_without_phenotype_file_warns(tmp_path, caplog):
    write_rfw(tmp_path, {"Asian/m.b1": 2})
    with caplog.at_level(logging.WARNING, logger="datamodules.rfw"):
        table = load_rfw(tmp_path)
    assert table.notes["identities_without_phenotypes"] == 1
    assert set(table.samples["skintype"]) == {""}
    assert any("no phenotype file" in r.getMessage() for r in caplog.records)


def test_rfw_bad_phenotype_label_names_line(small_rfw):
    rows = PHENOTYPE_ROWS[:2] + [("Asian/m.b1", "type7", "small", "narrow", "narrow", "straight", "black")]
    write_rfw_phenotypes(small_rfw / "RFW_metadata_FDA.csv", rows)
    with pytest.raises(ValueError, match=r"RFW_metadata_FDA.csv, line 4: unknown skintype value 'type7'"):
        load_rfw(small_rfw)


def test_rfw_duplicate_class_id_names_lines(small_rfw):
    write_rfw_phenotypes(small_rfw / "RFW_metadata_FDA.csv", PHENOTYPE_ROWS + [PHENOTYPE_ROWS[0]])
    with pytest.raises(ValueError, match=r"'African/m.a1' is listed on lines \[2, 7\]"):
        load_rfw(small_rfw)


def test_rfw_malformed_class_id_names_line(small_rfw):
    rows = PHENOTYPE_ROWS[:1] + [("Latino/m.x", "type3", "small", "wide", "normal", "curly", "black")]
    write_rfw_phenotypes(small_rfw / "RFW_metadata_FDA.csv", rows)
    with pytest.raises(ValueError, match=r"line 3: Class_ID 'Latino/m.x'"):
        load_rfw(small_rfw)


def test_rfw_symlink_outside_root_rejected(small_rfw, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x.jpg"
    outside.write_bytes((small_rfw / "Asian/m.b1/m.b1_0001.jpg").read_bytes())
    os.symlink(outside, small_rfw / "Asian/m.b1/m.b1_0009.jpg")
    with pytest.raises(ValueError, match="m.b1_0009.jpg.*outside the data root"):
        load_rfw(small_rfw)


def test_rfw_no_group_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RFW group folder"):
        load_rfw(tmp_path)


def test_rfw_prepare_identities_disjoint(tmp_path):
    counts = {f"{group}/m.{group[:2].lower()}{k}": 1 + k % 3 for group in RFW4 for k in range(10)}
    write_rfw(tmp_path, counts)
    cfg = {"name": "rfw", "root": str(tmp_path), "group_scheme": "rfw4", "image_size": 16,
           "eval_fraction": 0.15, "cache_dir": str(tmp_path / "cache"), "progress": False}
    prepared = prepare_data(cfg, {"kind": "natural"}, seed=0)
    manifest = prepared.manifest.assign(identity=prepared.manifest["file"].str.split("/").str[1])
    used = manifest.loc[manifest["partition"] != "unused"]
    partitions_per_identity = used.groupby("identity")["partition"].nunique()
    assert (partitions_per_identity == 1).all()
    counts_per_group = prepared.counts()
    assert counts_per_group.loc[list(RFW4), "val"].nunique() == 1
    assert counts_per_group.loc["African", "val"] >= 3
    # Identities split between val and unused never reach train.
    unused_identities = set(manifest.loc[manifest["partition"] == "unused", "identity"])
    assert not unused_identities & set(manifest.loc[manifest["partition"] == "train", "identity"])


def test_rfw_intersection_with_phenotype(small_rfw):
    table = apply_group_scheme(load_rfw(small_rfw), "rfw4*eye")
    # Combinations without images (e.g. African x narrow here) are left out.
    assert table.group_names == ["African x normal", "Asian x narrow", "Caucasian x normal", "Indian x normal"]
    assert table.notes["dropped_by_group_scheme"] == 1  # m.b2 has no eye label
    assert table.samples.groupby("group").size()["African x normal"] == 5


@pytest.mark.skipif(not REAL_PHENOTYPES.is_file(), reason="real RFW phenotype file not available")
def test_rfw_real_phenotype_rows(tmp_path):
    real = pd.read_csv(REAL_PHENOTYPES, dtype=str, keep_default_na=False)
    chosen = real.groupby(real["Class_ID"].str.split("/").str[0]).head(2)
    write_rfw(tmp_path, {class_id: 1 for class_id in chosen["Class_ID"]} | {"Indian/m.not_in_csv": 1})
    table = load_rfw(tmp_path, phenotype_csv=REAL_PHENOTYPES)
    assert table.notes["identities_without_phenotypes"] == 1
    labelled = table.samples.set_index("class_id").loc[chosen["Class_ID"]]
    for column in PHENOTYPES:
        assert labelled[column].tolist() == chosen[column].tolist()
    for column, labels in PHENOTYPES.items():
        assert set(real[column]) <= set(labels)
