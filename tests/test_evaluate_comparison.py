"""Comparison mode: matched-bpp differences, the paired difference-in-differences test, the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairness.comparison import compare_runs, interpolation_weights, select_codec
from fairness.rate_matching import interpolate_at_bpp
from lightning_modules.evaluation import run_comparison, run_evaluation
from lightning_modules.measurements import Measurements
from tests.evaluate_data import GROUPS, BlurBlueJpeg, PlainJpeg, evaluation_config, write_colour_faces

QUALITIES = (40, 80)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = write_colour_faces(root / "data", test_per_group=8)
    config = evaluation_config(data, n_resamples=999, n_matched_points=2)
    run_evaluation(config, root / "plain", measurements=Measurements(),
                   extra_codecs=[PlainJpeg(q) for q in QUALITIES])
    run_evaluation(config, root / "blurred", measurements=Measurements(),
                   extra_codecs=[BlurBlueJpeg(q) for q in QUALITIES])
    return root, config


@pytest.fixture(scope="module")
def planted(two_runs):
    root, config = two_runs
    return run_comparison({**config, "compare": [str(root / "plain"), str(root / "blurred")]}, root / "cmp")


def test_planted_blur_found(planted):
    table = planted.result.table
    did = table[(table["kind"] == "did") & (table["metric"] == "psnr")]
    assert (did["mode"] == "matched").all()
    assert len(did) == 2
    assert (did["p_holm"] < 0.05).all()
    assert (did["best_group"] == "Blue").all()

    groups = table[(table["kind"] == "group") & (table["metric"] == "psnr")]
    blue = groups[groups["group"] == "Blue"]
    assert (blue["difference"] > 0.2).all()
    assert (blue["ci_low"] > 0).all()
    for group in ("Green", "Red"):
        rows = groups[groups["group"] == group]
        # The same JPEG bits and decoder: the interpolated values agree exactly.
        assert np.allclose(rows["difference"], 0.0, atol=1e-9)


def test_run_against_itself_no_difference(two_runs):
    root, config = two_runs
    outputs = run_comparison({**config, "compare": [str(root / "plain"), str(root / "plain")]}, root / "self")
    table = outputs.result.table
    assert np.allclose(table.loc[table["kind"] == "group", "difference"], 0.0, atol=1e-12)
    did = table[table["kind"] == "did"]
    assert len(did) > 0
    assert (did["p_value"] == 1.0).all()
    assert (did["p_holm"] == 1.0).all()
    assert outputs.result.names == ("plain (A)", "plain (B)")


def test_comparison_files_written(planted):
    run_dir = planted.run_dir
    written = pd.read_csv(run_dir / "comparison.csv")
    assert set(written["kind"]) == {"group", "did"}
    markdown = planted.report_path.read_text()
    assert "Difference-in-differences tests" in markdown
    assert "| Blue | 8 |" in markdown
    assert "Underpowered" in markdown
    assert (run_dir / "figures" / "compare_psnr.png").is_file()
    assert "](figures/compare_psnr.png)" in markdown


def test_matched_points_inside_both_ranges(planted):
    table = planted.result.table
    curves = planted.result.curves
    psnr = curves[curves["metric"] == "psnr"]
    low = psnr.groupby(["side", "group"])["bpp"].min().max()
    high = psnr.groupby(["side", "group"])["bpp"].max().min()
    points = table.loc[(table["metric"] == "psnr") & (table["kind"] == "did"), "bpp"]
    assert points.min() == pytest.approx(low)
    assert points.max() == pytest.approx(high)


def test_group_means_equal_interpolated_curves(planted):
    table = planted.result.table
    curves = planted.result.curves
    name_a = planted.result.names[0]
    for row in table[(table["kind"] == "group") & (table["metric"] == "psnr") & (table["group"] != "all")].itertuples():
        curve = curves[(curves["side"] == name_a) & (curves["metric"] == "psnr") & (curves["group"] == row.group)]
        expected = interpolate_at_bpp(curve["bpp"], curve["value"], row.bpp)[0]
        assert row.value_a == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bpp", [[0.5, 1.0, 2.0, 4.0], [0.5, 1.0, 1.0, 3.0], [2.0, 0.7, 1.3]])
def test_interpolation_weights_match_rate_matching(bpp):
    rng = np.random.default_rng(len(bpp))
    values = rng.normal(size=len(bpp))
    for target in np.exp(np.linspace(np.log(min(bpp)), np.log(max(bpp)), 7)):
        weights = interpolation_weights(np.array(bpp), target)
        assert weights.sum() == pytest.approx(1.0)
        assert values @ weights == pytest.approx(interpolate_at_bpp(bpp, values, target)[0], rel=1e-12)
    assert interpolation_weights(np.array(bpp), max(bpp) * 1.01) is None


def _table(codec: str, rate_points: dict[str, float], shift: dict[str, float], seed: str = "") -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for rate_point, bpp in rate_points.items():
        for group in GROUPS:
            for index in range(6):
                rows.append({"codec": codec, "rate_point": rate_point, "seed": seed, "sample_id": f"{group}{index}",
                             "group": group, "bpp": bpp * (1 + 0.01 * index),
                             "psnr": 30 + 4 * np.log(bpp) + shift.get(group, 0.0) + rng.normal(0, 0.1)})
    return pd.DataFrame(rows)


def test_single_rate_point_compared_directly():
    side_a = _table("a", {"lmbda0.01": 0.8}, {})
    side_b = _table("b", {"lmbda0.01": 0.6}, {"Red": -2.0})
    result = compare_runs(side_a, side_b, GROUPS, n_resamples=199)
    psnr = result.table[result.table["metric"] == "psnr"]
    assert (psnr["mode"] == "direct").all()
    red = psnr[(psnr["kind"] == "group") & (psnr["group"] == "Red")].iloc[0]
    assert red["bpp_a"] > red["bpp_b"]
    assert red["difference"] == pytest.approx(red["value_a"] - red["value_b"])
    assert any("bpp_a and bpp_b" in note for note in result.notes)


def test_seed_spread_reported():
    seeds = [_table("a", {"q1": 0.5, "q2": 1.0}, {"Blue": 0.3 * s}, seed=str(s)) for s in range(3)]
    side_a = pd.concat(seeds, ignore_index=True)
    side_b = _table("b", {"q1": 0.5, "q2": 1.0}, {})
    result = compare_runs(side_a, side_b, GROUPS, n_resamples=199, n_points=2)
    assert result.n_seeds == (3, 1)
    blue = result.table[(result.table["kind"] == "group") & (result.table["group"] == "Blue")]
    assert (blue["sd_a"] > 0.2).all()
    assert blue["sd_b"].isna().all()


def test_disjoint_images_rejected():
    side_a = _table("a", {"q1": 0.5}, {})
    side_b = _table("b", {"q1": 0.5}, {}).assign(sample_id=lambda f: "other_" + f["sample_id"])
    with pytest.raises(ValueError, match="share no sample_id"):
        compare_runs(side_a, side_b, GROUPS)


def test_several_codecs_need_a_choice():
    both = pd.concat([_table("a", {"q1": 0.5}, {}), _table("b", {"q1": 0.5}, {})])
    with pytest.raises(ValueError, match="compare_codecs"):
        select_codec(both)
    rows, codec = select_codec(both, "b")
    assert codec == "b"
    assert set(rows["codec"]) == {"b"}


def test_direct_report_one_column_per_pair(tmp_path):
    from fairness.report import render_comparison

    side_a = _table("a", {"lmbda0.01": 0.8}, {})
    side_b = _table("b", {"lmbda0.01": 0.6}, {"Red": -2.0})
    result = compare_runs(side_a, side_b, GROUPS, n_resamples=99)
    markdown = render_comparison(result, sources=("a", "b"), figures={})
    section = markdown.split("## psnr")[1]
    header = next(line for line in section.splitlines() if line.startswith("| group"))
    assert header.count("pair 1:") == 1
    assert "nan" not in section


def _with_attributes(frame: pd.DataFrame, *, accurate: bool) -> pd.DataFrame:
    # "smile": label 1 for two thirds of the images. An accurate classifier copies the
    # label; the other always predicts the majority label, so it cannot beat the majority rate.
    frame = frame.copy()
    index = frame["sample_id"].str[-1].astype(int)
    frame["smile_label"] = (index % 3 != 0).astype(int)
    frame["smile_pred_orig"] = frame["smile_label"] if accurate else 1
    frame["smile_pred_rec"] = frame["smile_pred_orig"]
    return frame


def test_classifier_quality_against_majority():
    from fairness.comparison import classifier_quality

    side = _table("a", {"lmbda0.01": 0.8, "lmbda0.02": 1.6}, {})
    good = classifier_quality(_with_attributes(side, accurate=True), min_margin=0.05)
    bad = classifier_quality(_with_attributes(side, accurate=False), min_margin=0.05)

    labels = _with_attributes(side, accurate=True).drop_duplicates("sample_id")["smile_label"].to_numpy()
    majority = np.bincount(labels).max() / labels.size
    assert good["majority_rate"].iloc[0] == pytest.approx(majority)
    assert good["acc_orig"].iloc[0] == pytest.approx(1.0)
    assert bool(good["passes"].iloc[0])
    assert bad["acc_orig"].iloc[0] == pytest.approx(majority)
    assert not bool(bad["passes"].iloc[0])


def test_comparison_report_quality_note():
    from fairness.comparison import classifier_quality
    from fairness.report import QUALITY_FLAG, render_comparison

    side_a = _with_attributes(_table("a", {"lmbda0.01": 0.8}, {}), accurate=False)
    side_b = _with_attributes(_table("b", {"lmbda0.01": 0.6}, {"Red": -2.0}), accurate=False)
    result = compare_runs(side_a, side_b, GROUPS, names=("A", "B"), n_resamples=99)
    result.quality = classifier_quality(side_a, side="A")
    markdown = render_comparison(result, sources=("a", "b"), figures={})

    did_section = markdown.split("## Difference-in-differences tests")[1].split("\n## ")[0]
    smile_rows = [line for line in did_section.splitlines() if line.startswith("| smile |")]
    image_rows = [line for line in did_section.splitlines() if line.startswith("| (image) |")]
    assert len(smile_rows) == 2
    assert all(QUALITY_FLAG in line for line in smile_rows)
    assert image_rows
    assert not any(QUALITY_FLAG in line for line in image_rows)
    smile_heading = markdown.split("## smile: acc_rec difference A - B per group")[1].split("\n## ")[0]
    assert QUALITY_FLAG in smile_heading


def test_comparison_report_gap_zero_names_no_group():
    from fairness.report import render_comparison

    # The same predictions on both sides: every group's difference is 0 for the attribute outcomes.
    side_a = _with_attributes(_table("a", {"lmbda0.01": 0.8}, {}), accurate=True)
    side_b = _with_attributes(_table("b", {"lmbda0.01": 0.6}, {"Red": -2.0}), accurate=True)
    result = compare_runs(side_a, side_b, GROUPS, names=("A", "B"), n_resamples=99)
    did = result.table[result.table["kind"] == "did"]
    assert (did.loc[did["attribute"] == "smile", "difference"] == 0).all()
    assert (did.loc[did["metric"] == "psnr", "difference"] > 1.0).all()

    markdown = render_comparison(result, sources=("a", "b"), figures={})
    header = next(line for line in markdown.splitlines() if line.startswith("| attribute | metric"))
    assert "group where A is furthest behind B" in header
    for line in markdown.splitlines():
        if line.startswith("| smile |"):
            assert line.count("none (gap 0)") == 2
        if line.startswith("| (image) | psnr |"):
            assert "| Red | " in line
            assert "none (gap 0)" not in line
    assert "mde: minimum detectable effect" in markdown
    assert "## psnr difference A - B per group (positive = A better)" in markdown
