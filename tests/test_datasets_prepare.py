"""prepare_data: image check pass, on_bad_image, disk cache reuse, partitions, manifest files."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest

from datamodules.fairface import load_fairface
from datamodules.groups import FAIRFACE7
from datamodules.image_cache import DiskImageCache
from datamodules.images import ImageLoadError
from datamodules.partitions import assign_partitions
from datamodules.prepare import SKIPPED_FILE, prepare_data, write_manifest
from tests.dataset_layouts import grouped_rows, write_csv_dataset, write_fairface, write_image


def csv_cfg(root, **overrides):
    cfg = {"name": "csv", "root": str(root), "csv_path": "labels.csv", "image_size": 16,
           "eval_fraction": 0.25, "cache_dir": str(root / "cache"), "progress": False}
    cfg.update(overrides)
    return cfg


@pytest.fixture
def damaged(tmp_path):
    """A CSV dataset of 3 groups x 6 images where three files are bad."""
    root = tmp_path / "data"
    rows = grouped_rows({"A": 6, "B": 6, "C": 6})
    write_csv_dataset(root, rows)
    (root / "images/A_1.png").unlink()
    (root / "images/B_2.png").write_bytes(b"")
    data = (root / "images/C_3.png").read_bytes()
    (root / "images/C_3.png").write_bytes(data[: len(data) // 2])
    return root


def test_prepare_bad_images_named(damaged):
    with pytest.raises(ImageLoadError) as caught:
        prepare_data(csv_cfg(damaged), {"kind": "natural"}, seed=0)
    message = str(caught.value)
    assert "3 of 18 images cannot be used" in message
    assert "not found: " in message
    assert "A_1.png" in message
    assert "B_2.png is empty (0 bytes)" in message
    assert "C_3.png is truncated" in message
    assert "data.on_bad_image=skip" in message


def test_prepare_skip_drops_bad_images(damaged, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datamodules.image_check"):
        prepared = prepare_data(csv_cfg(damaged, on_bad_image="skip"), {"kind": "balanced"}, seed=0)
    bad = {"images/A_1.png", "images/B_2.png", "images/C_3.png"}
    assert not bad & set(prepared.manifest["file"])
    assert len(prepared.manifest) == 15
    assert prepared.table.notes["skipped_images"] == 3
    assert set(prepared.skipped["file"]) == bad
    assert any("skipped 3 bad images" in r.getMessage() and "A_1.png" in r.getMessage() for r in caplog.records)

    run_dir = tmp_path / "run"
    write_manifest(prepared.manifest, run_dir / "split_manifest.csv")
    written = pd.read_csv(run_dir / SKIPPED_FILE)
    assert list(written.columns) == ["sample_id", "file", "group", "error"]
    assert set(written["file"]) == bad
    assert written.set_index("file").loc["images/B_2.png", "error"].endswith("data.on_bad_image=skip to leave it out")


def test_prepare_skip_writes_empty_list(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 4, "B": 4}))
    prepared = prepare_data(csv_cfg(root, on_bad_image="skip"), {"kind": "natural"}, seed=0)
    write_manifest(prepared.manifest, tmp_path / "run" / "split_manifest.csv")
    assert pd.read_csv(tmp_path / "run" / SKIPPED_FILE).empty


def test_prepare_error_mode_no_skip_list(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 4, "B": 4}))
    prepared = prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    write_manifest(prepared.manifest, tmp_path / "run" / "split_manifest.csv")
    assert prepared.skipped is None
    assert not (tmp_path / "run" / SKIPPED_FILE).exists()


def test_prepare_rejects_unknown_on_bad_image(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 4}))
    with pytest.raises(ValueError, match="data.on_bad_image must be one of"):
        prepare_data(csv_cfg(root, on_bad_image="ignore"), {"kind": "natural"}, seed=0)


def test_prepare_second_run_uses_cache(tmp_path, caplog):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 5, "B": 5}))
    first = prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    assert (first.image_check.decoded, first.image_check.cached) == (10, 0)
    with caplog.at_level(logging.INFO, logger="datamodules.image_check"):
        second = prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    assert (second.image_check.decoded, second.image_check.cached) == (0, 10)
    assert any("0 decoded, 10 from the disk cache" in r.getMessage() for r in caplog.records)
    other_size = prepare_data(csv_cfg(root, image_size=24), {"kind": "natural"}, seed=0)
    assert other_size.image_check.decoded == 10
    assert isinstance(second.image_cache, DiskImageCache)


def test_prepare_replaced_image_decoded(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 4}))
    prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    write_image(root / "images/A_0.png", 99, size=(41, 40))
    again = prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    assert (again.image_check.decoded, again.image_check.cached) == (1, 3)


def test_prepare_cached_then_damaged_image(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 4}))
    prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    (root / "images/A_2.png").write_bytes(b"garbage")
    with pytest.raises(ImageLoadError, match="A_2.png"):
        prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)


def test_prepare_without_disk_cache(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 4}))
    for _ in range(2):
        prepared = prepare_data(csv_cfg(root, disk_cache=False), {"kind": "natural"}, seed=0)
        assert prepared.image_check.decoded == 4
        assert prepared.image_cache is None
    assert not (root / "cache").exists()


def test_prepare_verify_off_skips_check(damaged):
    prepared = prepare_data(csv_cfg(damaged, verify_images=False), {"kind": "natural"}, seed=0)
    assert prepared.image_check is None
    assert len(prepared.manifest) == 18


def test_prepare_fairface_layout(tmp_path):
    root = write_fairface(tmp_path / "fairface", train_per_group=3, val_per_group=2)
    cfg = {"name": "fairface", "root": str(root), "group_scheme": "fairface7", "image_size": 16,
           "cache_dir": str(tmp_path / "cache"), "progress": False}
    prepared = prepare_data(cfg, {"kind": "balanced"}, seed=0)
    counts = prepared.counts()
    assert counts.loc[list(FAIRFACE7), "val"].tolist() == [1] * 7
    assert counts.loc[list(FAIRFACE7), "training"].tolist() == [3] * 7
    assert prepared.face_crop == 0.5
    assert len(load_fairface(root).samples) == 35


def test_datamodule_passes_disk_cache(tmp_path):
    from datamodules.datamodule import FaceDataModule

    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 5, "B": 5}))
    cfg = csv_cfg(root)
    module = FaceDataModule(cfg, {"kind": "natural"}, seed=0)
    module.setup("fit")
    cache = module.prepared.image_cache
    hits_before = cache.hits
    batch = next(iter(module.val_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16)
    assert cache.hits == hits_before + 2


# ---------------------------------------------------------------- partitions


def table_frame(pools: dict[str, list[str]]) -> pd.DataFrame:
    rows = []
    for group, values in pools.items():
        rows += [{"sample_id": f"{group}{k}", "group": group, "pool": pool} for k, pool in enumerate(values)]
    return pd.DataFrame(rows)


def test_partitions_official_val_and_test():
    samples = table_frame({"A": ["train"] * 3 + ["val"] * 3 + ["test"] * 2, "B": ["train"] * 2 + ["val"] * 2 + ["test"] * 4})
    partition = assign_partitions(samples, ["A", "B"], eval_seed=0)
    counts = pd.crosstab(samples["group"], partition)
    assert counts.loc["A", "val"] == counts.loc["B", "val"] == 2
    assert counts.loc["A", "test"] == counts.loc["B", "test"] == 2
    assert (samples.loc[partition == "val", "pool"] == "val").all()
    assert (samples.loc[partition == "test", "pool"] == "test").all()
    assert (samples.loc[partition == "train", "pool"] == "train").all()


def test_partitions_follow_eval_seed_only():
    samples = table_frame({"A": ["all"] * 30, "B": ["all"] * 20})
    first = assign_partitions(samples, ["A", "B"], eval_seed=3)
    shuffled = samples.sample(frac=1.0, random_state=1)
    second = assign_partitions(shuffled, ["A", "B"], eval_seed=3)
    assert first.equals(second.loc[first.index])
    assert not first.equals(assign_partitions(samples, ["A", "B"], eval_seed=4))


def test_partitions_eval_per_group_cap():
    samples = table_frame({"A": ["train"] * 2 + ["eval"] * 10, "B": ["train"] * 2 + ["eval"] * 12})
    partition = assign_partitions(samples, ["A", "B"], eval_per_group=2)
    counts = pd.crosstab(samples["group"], partition)
    assert counts["val"].tolist() == [2, 2]
    assert counts["test"].tolist() == [2, 2]
    assert counts["unused"].tolist() == [6, 8]
    carved = assign_partitions(table_frame({"A": ["all"] * 100}), ["A"], eval_per_group=3)
    assert carved.value_counts().to_dict() == {"train": 94, "val": 3, "test": 3}


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        (["train", "all"], "mixes pool 'all'"),
        (["train", "eval", "val", "test"], "mixes pool 'eval'"),
        (["train", "val"], "not both val and test"),
    ],
)
def test_partitions_reject_mixed_pools(pools, message):
    samples = table_frame({"A": pools})
    with pytest.raises(ValueError, match=message):
        assign_partitions(samples, ["A"])


def test_partitions_group_without_test_images():
    samples = table_frame({"A": ["train", "val", "test"], "B": ["train", "val", "train"]})
    with pytest.raises(ValueError, match=r"test partition would have no image of group\(s\) \['B'\]"):
        assign_partitions(samples, ["A", "B"])


def test_cache_folder_is_disposable(tmp_path):
    root = tmp_path / "data"
    write_csv_dataset(root, grouped_rows({"A": 3}))
    prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    shutil.rmtree(root / "cache")
    again = prepare_data(csv_cfg(root), {"kind": "natural"}, seed=0)
    assert again.image_check.decoded == 3


def test_partitions_group_without_any_image():
    samples = table_frame({"A": ["all"] * 20})
    with pytest.raises(ValueError, match=r"group\(s\) \['B'\] have no images at all"):
        assign_partitions(samples, ["A", "B"])


def test_intersection_drops_empty_combinations(tmp_path, caplog):
    root = tmp_path / "data"
    rows = grouped_rows({"A": 8, "B": 4}, extra={"gender": ["Male", "Female"]})
    for row in rows[8:]:
        row["gender"] = "Female"
    write_csv_dataset(root, rows)
    with caplog.at_level(logging.WARNING, logger="datamodules.table"):
        prepared = prepare_data(csv_cfg(root, attribute_columns=["gender"], group_scheme="native*gender"),
                                {"kind": "natural"}, seed=0)
    assert prepared.group_names == ["A x Female", "A x Male", "B x Female"]
    assert any("['B x Male']" in r.getMessage() for r in caplog.records)
