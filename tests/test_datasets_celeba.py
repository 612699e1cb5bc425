"""CelebA loader: official and Kaggle layouts, attributes, partitions and group CSVs."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.celeba import ATTRIBUTE_NAMES, DEFAULT_FACE_CROP, load_celeba
from datamodules.prepare import prepare_data
from tests.dataset_layouts import celeba_attributes, write_celeba, write_csv

# 6 train, 4 val, 4 test images.
PARTITIONS = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root, PARTITIONS)
    return root


def expected_label(index: int, attribute: str) -> str:
    return "1" if celeba_attributes(index)[ATTRIBUTE_NAMES.index(attribute)] == 1 else "0"


def test_celeba_text_layout_attributes(celeba_root):
    table = load_celeba(celeba_root)
    assert len(table.samples) == len(PARTITIONS)
    assert table.samples["file"].iloc[0] == "img_align_celeba/000001.jpg"
    assert set(table.attributes) == set(ATTRIBUTE_NAMES) | {"gender"}
    for index in (0, 5, 13):
        row = table.samples.iloc[index]
        for attribute in ("Smiling", "Young", "Eyeglasses", "Male"):
            assert row[attribute] == expected_label(index, attribute)
    assert table.samples["gender"].tolist()[:2] == ["Male", "Female"]
    assert table.default_face_crop == DEFAULT_FACE_CROP


def test_celeba_official_partitions_become_pools(celeba_root):
    table = load_celeba(celeba_root)
    pools = table.samples["pool"].tolist()
    assert pools == ["train"] * 6 + ["val"] * 4 + ["test"] * 4


def test_celeba_without_group_csv_is_one_group(celeba_root):
    table = load_celeba(celeba_root)
    assert table.group_names == ["all"]
    assert set(table.samples["group"]) == {"all"}


def test_celeba_attribute_subset(celeba_root):
    table = load_celeba(celeba_root, attributes=["Smiling", "Male"])
    assert list(table.attributes) == ["Smiling", "Male", "gender"]
    assert "Young" not in table.samples.columns
    encoded = table.encode_attributes(table.samples)["Smiling"]
    expected = [int(expected_label(i, "Smiling")) for i in range(len(PARTITIONS))]
    assert encoded.tolist() == expected


def test_celeba_unknown_attribute_names_valid_ones(celeba_root):
    with pytest.raises(ValueError, match="Smiley.*valid names"):
        load_celeba(celeba_root, attributes=["Smiley"])


def test_celeba_kaggle_layout(tmp_path, celeba_root):
    write_celeba(tmp_path, PARTITIONS, kaggle=True)
    kaggle = load_celeba(tmp_path)
    official = load_celeba(celeba_root)
    assert kaggle.samples["file"].iloc[0] == "img_align_celeba/img_align_celeba/000001.jpg"
    columns = list(ATTRIBUTE_NAMES) + ["pool", "gender"]
    assert kaggle.samples[columns].equals(official.samples[columns])


def test_celeba_torchvision_parent_folder(tmp_path):
    write_celeba(tmp_path / "celeba", PARTITIONS[:4] + [1, 2])
    table = load_celeba(tmp_path)
    assert table.root == (tmp_path / "celeba").resolve()
    assert len(table.samples) == 6


def test_celeba_group_csv_groups(celeba_root, tmp_path):
    rows = [(f"{i + 1:06d}.jpg", "A" if i % 2 else "B", "x" if i % 3 else "y") for i in range(12)]
    rows[0] = ("img_align_celeba/000001.jpg", "B", "y")  # the root-relative spelling works too
    path = write_csv(tmp_path / "groups.csv", ("file", "group", "skin"), rows)
    table = load_celeba(celeba_root, group_csv=path)
    assert table.group_names == ["A", "B"]
    assert len(table.samples) == 12
    assert table.notes["images_without_group"] == 2
    assert table.samples.loc[table.samples["file"] == "img_align_celeba/000002.jpg", "group"].item() == "A"
    assert table.attributes["skin"] == ["x", "y"]


def test_celeba_group_csv_unknown_file_names_line(celeba_root, tmp_path):
    path = write_csv(tmp_path / "groups.csv", ("file", "group"), [("000001.jpg", "A"), ("999999.jpg", "B")])
    with pytest.raises(ValueError, match=r"groups.csv, line 3: file '999999.jpg' is not in CelebA"):
        load_celeba(celeba_root, group_csv=path)


def test_celeba_group_csv_duplicate_rows(celeba_root, tmp_path):
    rows = [("000001.jpg", "A"), ("000002.jpg", "B"), ("000001.jpg", "A")]
    path = write_csv(tmp_path / "groups.csv", ("file", "group"), rows)
    with pytest.raises(ValueError, match=r"'000001.jpg' is listed on lines \[2, 4\]"):
        load_celeba(celeba_root, group_csv=path)


def test_celeba_group_csv_empty_group_names_line(celeba_root, tmp_path):
    path = write_csv(tmp_path / "groups.csv", ("file", "group"), [("000001.jpg", "A"), ("000002.jpg", "")])
    with pytest.raises(ValueError, match="groups.csv, line 3: empty group"):
        load_celeba(celeba_root, group_csv=path)


def test_celeba_bad_attribute_value_names_line(tmp_path):
    write_celeba(tmp_path, PARTITIONS[:3])
    lines = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    lines[3] = lines[3].replace(" 1", " 2", 1) if " 1" in lines[3] else lines[3].replace("-1", " 2", 1)
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt, line 4: .* is '2'"):
        load_celeba(tmp_path)


def test_celeba_short_row_names_line(tmp_path):
    write_celeba(tmp_path, PARTITIONS[:3])
    lines = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 3)[0]
    (tmp_path / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 5: expected a file name and 40 value"):
        load_celeba(tmp_path)


def test_celeba_missing_partition_row_names_image(tmp_path):
    write_celeba(tmp_path, PARTITIONS[:3])
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n")
    with pytest.raises(ValueError, match="000003.jpg has no row in the partition list"):
        load_celeba(tmp_path)


def test_celeba_missing_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt"):
        load_celeba(tmp_path)


def test_celeba_prepare_uses_official_val_and_test(celeba_root, tmp_path):
    rows = [(f"{i + 1:06d}.jpg", "A" if i % 2 else "B") for i in range(len(PARTITIONS))]
    group_csv = write_csv(tmp_path / "groups.csv", ("file", "group"), rows)
    cfg = {"name": "celeba", "root": str(celeba_root), "group_csv": str(group_csv), "image_size": 16,
           "cache_dir": str(tmp_path / "cache"), "progress": False}
    prepared = prepare_data(cfg, {"kind": "balanced"}, seed=0)
    manifest = prepared.manifest
    number = manifest["file"].str.extract(r"(\d+)\.jpg")[0].astype(int)
    official = np.array(PARTITIONS)[number - 1]
    assert (official[manifest["partition"] == "val"] == 1).all()
    assert (official[manifest["partition"] == "test"] == 2).all()
    assert (official[manifest["in_training"] == 1] == 0).all()
    counts = prepared.counts()
    assert counts.loc["A", "val"] == counts.loc["B", "val"] == 2
    assert counts.loc["A", "training"] == counts.loc["B", "training"] == 3
    assert prepared.image_check.decoded == len(PARTITIONS)


def test_celeba_group_csv_relative_to_data_root(tmp_path):
    write_celeba(tmp_path / "celeba", PARTITIONS[:4] + [1, 2])
    write_csv(tmp_path / "groups.csv", ("file", "group"), [("000001.jpg", "A")])
    table = load_celeba(tmp_path, group_csv="groups.csv")
    assert table.samples["file"].tolist() == ["img_align_celeba/000001.jpg"]
