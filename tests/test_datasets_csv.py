"""Generic CSV loader: column roles, partitions, schemes and every bad-label-file case."""

from __future__ import annotations

import os

import pytest

from datamodules.prepare import prepare_data
from datamodules.registry import load_table
from datamodules.table import apply_group_scheme
from tests.dataset_layouts import grouped_rows, write_csv, write_csv_dataset, write_image


def csv_cfg(root, **overrides):
    cfg = {"name": "csv", "root": str(root), "csv_path": "labels.csv", "image_size": 16,
           "cache_dir": str(root / "cache"), "progress": False}
    cfg.update(overrides)
    return cfg


def test_csv_columns_by_name(tmp_path):
    rows = [{"path": f"img/{k}.jpg", "ethnicity": "AB"[k % 2], "gender": ["Male", "Female", ""][k % 3],
             "note": "x"} for k in range(6)]
    write_csv_dataset(tmp_path, rows, file_column="path")
    table = load_table(csv_cfg(tmp_path, file_column="path", group_column="ethnicity",
                               attribute_columns=["gender"], dataset_name="faces"))
    assert table.dataset == "faces"
    assert table.group_names == ["A", "B"]
    assert table.attributes == {"gender": ["Female", "Male"]}
    assert table.samples["file"].tolist() == [f"img/{k}.jpg" for k in range(6)]
    assert table.encode_attributes(table.samples)["gender"].tolist() == [1, 0, -1, 1, 0, -1]
    assert "note" not in table.samples.columns


def test_csv_without_group_column_is_one_group(tmp_path):
    write_csv_dataset(tmp_path, grouped_rows({"A": 2, "B": 2}))
    table = load_table(csv_cfg(tmp_path, group_column=None))
    assert table.group_names == ["all"]
    assert set(table.samples["group"]) == {"all"}


def test_csv_group_names_order(tmp_path):
    write_csv_dataset(tmp_path, grouped_rows({"A": 2, "B": 2}))
    assert load_table(csv_cfg(tmp_path, group_names=["B", "A"])).group_names == ["B", "A"]
    with pytest.raises(ValueError, match=r"labels.csv, line 4: group 'B' is not in data.group_names"):
        load_table(csv_cfg(tmp_path, group_names=["A"]))


def test_csv_attribute_labels_order(tmp_path):
    write_csv_dataset(tmp_path, grouped_rows({"A": 3}, extra={"gender": ["Male", "Female", "Other"]}))
    cfg = csv_cfg(tmp_path, attribute_columns=["gender"], attribute_labels={"gender": ["Male", "Female"]})
    with pytest.raises(ValueError, match=r"line 4: unknown gender value 'Other'.*attribute_labels.gender"):
        load_table(cfg)
    cfg["attribute_labels"] = {"gender": ["Male", "Female", "Other"]}
    assert load_table(cfg).attributes["gender"] == ["Male", "Female", "Other"]


def test_csv_partition_column_sets_pools(tmp_path):
    rows = grouped_rows({"A": 4, "B": 4}, extra={"split": ["train", "train", "val", "test"]})
    write_csv_dataset(tmp_path, rows)
    prepared = prepare_data(csv_cfg(tmp_path, partition_column="split"), {"kind": "natural"}, seed=0)
    manifest = prepared.manifest.set_index("file")
    for row in rows:
        assert manifest.loc[row["file"], "partition"] == row["split"]


def test_csv_bad_partition_value_names_line(tmp_path):
    rows = grouped_rows({"A": 3}, extra={"split": ["train", "validation", "test"]})
    write_csv_dataset(tmp_path, rows)
    with pytest.raises(ValueError, match=r"line 3: unknown split value 'validation'"):
        load_table(csv_cfg(tmp_path, partition_column="split"))


def test_csv_race_column_scheme(tmp_path):
    rows = grouped_rows({"White": 2, "Black": 2, "Indian": 2}, extra={"gender": ["Male", "Female"]})
    for row in rows:
        row["race"] = row.pop("group")
    write_csv_dataset(tmp_path, rows)
    table = load_table(csv_cfg(tmp_path, group_column="race", attribute_columns=["gender"]))
    crossed = apply_group_scheme(table, "fairface7*gender")
    assert crossed.group_names[:2] == ["White x Female", "White x Male"]
    assert sorted(set(crossed.samples["group"])) == sorted(
        ["White x Male", "White x Female", "Black x Male", "Black x Female", "Indian x Male", "Indian x Female"]
    )


def test_csv_identity_column_disjoint(tmp_path):
    rows = [{"file": f"i/{g}{p}_{k}.png", "group": g, "person": f"{g}{p}"}
            for g in "AB" for p in range(8) for k in range(2)]
    write_csv_dataset(tmp_path, rows)
    prepared = prepare_data(csv_cfg(tmp_path, identity_column="person", eval_fraction=0.2),
                            {"kind": "natural"}, seed=0)
    person = prepared.manifest["file"].str.extract(r"i/(\w\d)_")[0]
    partitions = prepared.manifest.assign(person=person).groupby("person")["partition"].nunique()
    assert (partitions == 1).all()
    assert prepared.counts().loc["A", "val"] == 4


# ---------------------------------------------------------------- bad label files


def test_csv_path_outside_root_names_line(tmp_path):
    root = tmp_path / "root"
    write_image(tmp_path / "secret.png", 1)
    rows = grouped_rows({"A": 2})
    write_csv_dataset(root, rows)
    write_csv(root / "labels.csv", ("file", "group"), [(r["file"], r["group"]) for r in rows] + [("../secret.png", "A")])
    with pytest.raises(ValueError, match=r"labels.csv, line 4: file path '../secret.png' .*outside the data root"):
        load_table(csv_cfg(root))


def test_csv_absolute_path_names_line(tmp_path):
    write_csv(tmp_path / "labels.csv", ("file", "group"), [("a.png", "A"), (str(tmp_path / "a.png"), "A")])
    with pytest.raises(ValueError, match=r"labels.csv, line 3: file path .* is absolute"):
        load_table(csv_cfg(tmp_path))


def test_csv_symlink_outside_root_names_line(tmp_path):
    root = tmp_path / "root"
    outside = write_image(tmp_path / "elsewhere.png", 1)
    root.mkdir()
    os.symlink(outside, root / "link.png")
    write_csv(root / "labels.csv", ("file", "group"), [("link.png", "A")])
    with pytest.raises(ValueError, match=r"line 2: file path 'link.png' resolves to .*elsewhere.png, outside"):
        load_table(csv_cfg(root))


def test_csv_symlink_loop_names_line(tmp_path):
    os.symlink(tmp_path / "loop_b.png", tmp_path / "loop_a.png")
    os.symlink(tmp_path / "loop_a.png", tmp_path / "loop_b.png")
    write_csv(tmp_path / "labels.csv", ("file", "group"), [("loop_a.png", "A")])
    with pytest.raises(ValueError, match=r"labels.csv, line 2: file path 'loop_a.png' is a symlink loop"):
        load_table(csv_cfg(tmp_path))


def test_csv_empty_file(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"labels.csv is empty"):
        load_table(csv_cfg(tmp_path))


def test_csv_header_only(tmp_path):
    (tmp_path / "labels.csv").write_text("file,group\n")
    with pytest.raises(ValueError, match=r"labels.csv has a header but no rows"):
        load_table(csv_cfg(tmp_path))


def test_csv_wrong_encoding(tmp_path):
    write_csv(tmp_path / "labels.csv", ("file", "group"), [("a.png", "Café")], encoding="latin-1")
    with pytest.raises(ValueError, match=r"labels.csv is not UTF-8 .*iconv"):
        load_table(csv_cfg(tmp_path))


def test_csv_utf16_is_not_utf8(tmp_path):
    write_csv(tmp_path / "labels.csv", ("file", "group"), [("a.png", "A")], encoding="utf-16")
    with pytest.raises(ValueError, match=r"labels.csv is not UTF-8"):
        load_table(csv_cfg(tmp_path))


def test_csv_byte_order_mark_accepted(tmp_path):
    rows = grouped_rows({"A": 2})
    write_csv_dataset(tmp_path, rows, encoding="utf-8-sig")
    assert (tmp_path / "labels.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_table(csv_cfg(tmp_path)).samples["file"].tolist() == [r["file"] for r in rows]


def test_csv_duplicate_rows_name_lines(tmp_path):
    rows = grouped_rows({"A": 3})
    rows.append(dict(rows[1]))
    write_csv_dataset(tmp_path, rows)
    with pytest.raises(ValueError, match=r"'images/A_1.png' is listed on lines \[3, 5\]"):
        load_table(csv_cfg(tmp_path))


def test_csv_same_file_twice(tmp_path):
    write_csv(tmp_path / "labels.csv", ("file", "group"), [("a.png", "A"), ("./a.png", "B")])
    with pytest.raises(ValueError, match=r"'a.png' is listed on lines \[2, 3\]"):
        load_table(csv_cfg(tmp_path))


def test_csv_missing_column_lists_found(tmp_path):
    write_csv(tmp_path / "labels.csv", ("path", "group"), [("a.png", "A")])
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['file'\]; found columns \['path', 'group'\]"):
        load_table(csv_cfg(tmp_path))


def test_csv_empty_group_names_line(tmp_path):
    write_csv(tmp_path / "labels.csv", ("file", "group"), [("a.png", "A"), ("b.png", " ")])
    with pytest.raises(ValueError, match=r"labels.csv, line 3: empty group"):
        load_table(csv_cfg(tmp_path))


def test_csv_missing_csv_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.csv_path=nope.csv not found"):
        load_table(csv_cfg(tmp_path, csv_path="nope.csv"))
    with pytest.raises(ValueError, match="needs data.csv_path"):
        load_table(csv_cfg(tmp_path, csv_path=None))


def test_csv_reserved_attribute_column(tmp_path):
    write_csv_dataset(tmp_path, grouped_rows({"A": 2}, extra={"pool": ["x"]}))
    with pytest.raises(ValueError, match=r"attribute_columns \['pool'\] use reserved"):
        load_table(csv_cfg(tmp_path, attribute_columns=["pool"]))
