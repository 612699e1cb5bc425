"""UTKFace loader: labels from file names, malformed names, age formats, intersections."""

from __future__ import annotations

import logging

import pytest

from datamodules.fairface import AGE_BINS
from datamodules.groups import UTKFACE5
from datamodules.prepare import prepare_data
from datamodules.table import apply_group_scheme
from datamodules.utkface import DEFAULT_FACE_CROP, age_bin, load_utkface, parse_utkface_name
from tests.dataset_layouts import write_utkface

NAMES = [
    "25_0_0_20170116174525125.jpg.chip.jpg",
    "1_1_1_20161219140623097.jpg.chip.jpg",
    "70_0_2_20170109150557335.jpg",
    "34_1_3_20170104165741123.jpg.chip.jpg",
    "9_0_4_20170103200814791.jpg.chip.jpg",
    "part2/45_1_2_20170117174524992.jpg",
]
MALFORMED = [
    "39_1_20170116174525125.jpg.chip.jpg",  # race missing, as in a few official files
    "abc_0_1_20170116174525125.jpg",
    "30_2_1_20170116174525125.jpg",  # gender out of range
    "30_0_5_20170116174525125.jpg",  # race out of range
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("25_0_0_20170116174525125.jpg.chip.jpg", (25, 0, 0)),
        ("116_1_4_20170120134639935.jpg", (116, 1, 4)),
        ("5_1_2.jpg", (5, 1, 2)),
        ("117_1_4_20170120134639935.jpg", None),
        ("39_1_20170116174525125.jpg.chip.jpg", None),
        ("20_0_1_2_3.jpg", None),
    ],
)
def test_parse_utkface_name(name, expected):
    assert parse_utkface_name(name) == expected


@pytest.mark.parametrize(("age", "label"), [(0, "0-2"), (2, "0-2"), (3, "3-9"), (19, "10-19"),
                                            (69, "60-69"), (70, "more than 70"), (116, "more than 70")])
def test_age_bin_uses_fairface_bins(age, label):
    assert age_bin(age) == label
    assert label in AGE_BINS


def test_utkface_labels_from_names(tmp_path):
    write_utkface(tmp_path, NAMES)
    table = load_utkface(tmp_path)
    samples = table.samples.set_index("file")
    assert len(samples) == len(NAMES)
    first = samples.loc[NAMES[0]]
    assert (first["group"], first["gender"], first["age"], first["age_years"]) == ("White", "Male", "20-29", 25)
    assert samples.loc[NAMES[1], "race"] == "Black"
    assert samples.loc[NAMES[1], "gender"] == "Female"
    assert samples.loc[NAMES[2], "age"] == "more than 70"
    assert samples.loc["part2/45_1_2_20170117174524992.jpg", "race"] == "Asian"
    assert table.group_names == list(UTKFACE5)
    assert table.default_face_crop == DEFAULT_FACE_CROP


def test_utkface_malformed_names_counted(tmp_path, caplog):
    write_utkface(tmp_path, NAMES + MALFORMED)
    with caplog.at_level(logging.WARNING, logger="datamodules.utkface"):
        table = load_utkface(tmp_path)
    assert len(table.samples) == len(NAMES)
    assert table.notes["malformed_names"] == len(MALFORMED)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "4 file names" in message
    assert "39_1_20170116174525125.jpg.chip.jpg" in message


def test_utkface_age_in_years(tmp_path):
    write_utkface(tmp_path, NAMES[:2])
    table = load_utkface(tmp_path, age_format="years")
    assert table.attributes["age"][25] == "25"
    encoded = table.encode_attributes(table.samples.sort_values("age_years"))["age"]
    assert encoded.tolist() == [1, 25]


def test_utkface_rejects_unknown_age_format(tmp_path):
    with pytest.raises(ValueError, match="data.age_format"):
        load_utkface(tmp_path, age_format="decades")


def test_utkface_no_parseable_image(tmp_path):
    write_utkface(tmp_path, MALFORMED[:1])
    with pytest.raises(ValueError, match="no UTKFace image with a parseable name"):
        load_utkface(tmp_path)


def test_utkface_race_by_gender_groups(tmp_path):
    write_utkface(tmp_path, NAMES)
    table = apply_group_scheme(load_utkface(tmp_path), "utkface5*gender")
    assert table.group_names == ["White x Male", "Black x Female", "Asian x Male", "Asian x Female",
                                 "Indian x Female", "Others x Male"]
    assert table.samples.set_index("file").loc[NAMES[3], "group"] == "Indian x Female"


def test_utkface_prepare_carves_val_test(tmp_path):
    names = [f"{20 + k}_{k % 2}_{race}_2017011617452{k}.jpg.chip.jpg" for race in range(5) for k in range(6)]
    write_utkface(tmp_path, names)
    cfg = {"name": "utkface", "root": str(tmp_path), "group_scheme": "utkface5", "image_size": 16,
           "eval_fraction": 0.2, "cache_dir": str(tmp_path / "cache"), "progress": False}
    counts = prepare_data(cfg, {"kind": "balanced"}, seed=1).counts()
    assert counts.loc[list(UTKFACE5), "val"].tolist() == [1] * 5
    assert counts.loc[list(UTKFACE5), "test"].tolist() == [1] * 5
    assert counts.loc[list(UTKFACE5), "training"].tolist() == [4] * 5
