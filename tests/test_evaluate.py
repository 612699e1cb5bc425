"""evaluate.py end to end on a tiny labelled folder: per-image rows, summaries, figures, report."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairness.ladder import ORIGINAL_CODEC, read_per_image, summarize_ladder
from lightning_modules.compressai_codecs import zoo_weights_filename
from lightning_modules.evaluation import run_evaluation
from lightning_modules.measurements import Measurements, fid_from_features
from tests.evaluate_data import (
    GROUPS,
    GreennessClassifier,
    PooledColourFeatures,
    evaluation_config,
    write_colour_faces,
)

JPEG_QUALITIES = (30, 70)
WEBP_QUALITIES = (30, 70)
TEST_PER_GROUP = 8


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    data = write_colour_faces(root / "data", test_per_group=TEST_PER_GROUP)
    config = evaluation_config(data, codecs={"jpeg": list(JPEG_QUALITIES), "webp": list(WEBP_QUALITIES)})
    extractor = PooledColourFeatures()
    classifier = GreennessClassifier()
    outputs = run_evaluation(config, root / "run",
                             measurements=Measurements(feature_extractor=extractor, classifier=classifier))
    return outputs, root, extractor, classifier


def _pillow_jpeg(array: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False,
                                progressive=False)
    blob = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"), dtype=np.uint8)
    return decoded, len(blob)


def test_jpeg_rows_match_pillow_and_numpy(evaluated):
    outputs, root, _, _ = evaluated
    per_image = read_per_image(outputs.run_dir / "per_image.csv")
    for quality in JPEG_QUALITIES:
        rows = per_image[(per_image["codec"] == "jpeg") & (per_image["rate_point"] == f"q{quality}")]
        assert len(rows) == TEST_PER_GROUP * len(GROUPS)
        for row in rows.itertuples():
            original = np.asarray(Image.open(root / "data" / row.sample_id).convert("RGB"), dtype=np.uint8)
            decoded, size = _pillow_jpeg(original, quality)
            mse = np.mean((original.astype(np.float64) / 255.0 - decoded.astype(np.float64) / 255.0) ** 2)
            assert row.bpp == pytest.approx(8.0 * size / (original.shape[0] * original.shape[1]), abs=1e-12)
            assert row.psnr == pytest.approx(10.0 * np.log10(1.0 / mse), abs=1e-4)


def test_summary_means_equal_per_image(evaluated):
    outputs, _, _, _ = evaluated
    per_image = read_per_image(outputs.run_dir / "per_image.csv")
    summary = pd.read_csv(outputs.run_dir / "summary.csv", dtype={"seed": str, "rate_point": str})
    image_rows = summary[summary["attribute"].isna() & summary["metric"].isin(["psnr", "bpp", "ms_ssim",
                                                                               "feat_dist"])]
    assert len(image_rows) == 4 * 4 * (len(GROUPS) + 1)
    for row in image_rows.itertuples():
        rows = per_image[(per_image["codec"] == row.codec) & (per_image["rate_point"] == row.rate_point)]
        if row.group != "all":
            rows = rows[rows["group"] == row.group]
        assert row.value == pytest.approx(rows[row.metric].mean(), rel=1e-9)
        assert row.n == len(rows)
        assert row.ci_low <= row.value <= row.ci_high


def test_gaps_match_summary(evaluated):
    outputs, _, _, _ = evaluated
    summary, gaps = outputs.summary, outputs.gaps
    psnr_gaps = gaps[(gaps["metric"] == "psnr") & (gaps["attribute"].fillna("") == "")]
    assert len(psnr_gaps) == 4
    for gap in psnr_gaps.itertuples():
        values = summary[(summary["codec"] == gap.codec) & (summary["rate_point"] == gap.rate_point)
                         & (summary["metric"] == "psnr") & (summary["group"] != "all")].set_index("group")["value"]
        assert gap.gap == pytest.approx(values.max() - values.min())
        assert gap.worst_group == values.idxmin()
        assert gap.worst_best_low <= gap.gap <= gap.worst_best_high
        assert gap.underpowered
    tested = gaps[gaps["p_value"].notna()]
    assert (tested["p_holm"] >= tested["p_value"]).all()
    assert tested["p_holm"].between(0, 1).all()


def test_originals_measured_once(evaluated):
    outputs, _, extractor, classifier = evaluated
    n_images = TEST_PER_GROUP * len(GROUPS)
    instances = len(JPEG_QUALITIES) + len(WEBP_QUALITIES)
    # Originals once, then one pass over the reconstructions per instance.
    assert extractor.images_seen == n_images * (instances + 1)
    assert classifier.images_seen == n_images * (instances + 1)


def test_attribute_rows_from_predictions(evaluated):
    outputs, _, _, _ = evaluated
    per_image, summary = outputs.per_image, outputs.summary
    original = summary[(summary["codec"] == ORIGINAL_CODEC) & (summary["metric"] == "acc_orig")]
    first = per_image[(per_image["codec"] == "jpeg") & (per_image["rate_point"] == "q30")]
    for group in GROUPS:
        rows = first[first["group"] == group]
        expected = np.mean(rows["gender_pred_orig"] == rows["gender_label"])
        assert original.set_index("group").loc[group, "value"] == pytest.approx(expected)
    agreement = summary[(summary["codec"] == "webp") & (summary["rate_point"] == "q30")
                        & (summary["metric"] == "agreement") & (summary["group"] == "all")]
    rows = per_image[(per_image["codec"] == "webp") & (per_image["rate_point"] == "q30")]
    assert agreement["value"].iloc[0] == pytest.approx(np.mean(rows["gender_pred_orig"] == rows["gender_pred_rec"]))
    assert not summary[(summary["codec"] != ORIGINAL_CODEC) & (summary["metric"] == "acc_orig")].shape[0]


def test_realism_rows_per_instance(evaluated):
    outputs, _, _, _ = evaluated
    summary = outputs.summary
    kid = summary[(summary["metric"] == "kid") & (summary["codec"] == "jpeg") & (summary["rate_point"] == "q30")]
    assert set(kid["group"]) == {*GROUPS, "all"}
    fid = summary[summary["metric"] == "fid"]
    # Groups of 8 are below fid_min_per_group, so FID is pooled only.
    assert set(fid["group"]) == {"all"}
    assert len(fid) == len(JPEG_QUALITIES) + len(WEBP_QUALITIES)
    assert (fid["value"] > 0).all()


def test_fid_gram_form_matches_covariance_form():
    from fairness.realism import FeatureStats, fid_from_stats

    rng = np.random.default_rng(0)
    for n, d in ((12, 40), (60, 8)):
        real = rng.normal(size=(n, d))
        fake = rng.normal(size=(n + 3, d)) * 1.3 + 0.2
        expected = fid_from_stats(FeatureStats(d).update(real), FeatureStats(d).update(fake))
        assert fid_from_features(real, fake) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_output_files_and_figures(evaluated):
    outputs, _, _, _ = evaluated
    run_dir = outputs.run_dir
    for name in ("per_image.csv", "summary.csv", "gaps.csv", "report.md", "provenance.json",
                 "split_manifest.csv", "bd_rates.csv", "matched_gaps.csv"):
        assert (run_dir / name).is_file(), name
    figures = {path.name for path in (run_dir / "figures").glob("*.png")}
    expected = {"bias_vs_bpp_psnr.png", "bias_vs_bpp_ms_ssim.png", "bias_vs_bpp_bpp.png", "bias_vs_bpp_feat_dist.png",
                "bias_vs_bpp_gender_degradation.png", "bias_vs_realism.png", "rd_curves_psnr.png",
                "bd_rate_psnr.png", "grid_jpeg.png", "grid_webp.png"}
    assert expected <= figures
    for path in (run_dir / "figures").glob("*.png"):
        with Image.open(path) as image:
            assert min(image.size) > 200

    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["evaluation"]["group_names"] == list(GROUPS)
    assert provenance["split_manifest_sha256"]


def test_report_states_counts_and_power(evaluated):
    outputs, _, _, _ = evaluated
    report = outputs.report_path.read_text()
    for group in GROUPS:
        assert f"| {group} | {TEST_PER_GROUP} |" in report
    assert "every test and interval in this report is underpowered" in report
    assert "MS-SSIM uses **2 of the 5 standard scales** at 32 px" in report
    for figure in ("figures/bias_vs_bpp_psnr.png", "figures/rd_curves_psnr.png", "figures/grid_jpeg.png"):
        assert f"]({figure})" in report
    assert "webp" in outputs.bd_rates["codec"].tolist()


def test_bd_rates_match_bjontegaard(evaluated):
    bjontegaard = pytest.importorskip("bjontegaard")
    outputs, _, _, _ = evaluated
    summary = outputs.summary
    for group in (*GROUPS, "all"):
        curves = {}
        for codec in ("jpeg", "webp"):
            rows = summary[(summary["codec"] == codec) & (summary["group"] == group)
                           & (summary["attribute"].fillna("") == "")]
            bpp = rows[rows["metric"] == "bpp"].set_index("rate_point")["value"]
            psnr = rows[rows["metric"] == "psnr"].set_index("rate_point")["value"].reindex(bpp.index)
            curves[codec] = (bpp.to_numpy(), psnr.to_numpy())
        expected = bjontegaard.bd_rate(*curves["jpeg"], *curves["webp"], method="pchip",
                                       require_matching_points=False, min_overlap=0.0)
        actual = outputs.bd_rates.set_index(["codec", "group"]).loc[("webp", group), "bd_rate"]
        assert actual == pytest.approx(expected, rel=1e-6)


def test_missing_zoo_weights_skipped(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    data = write_colour_faces(tmp_path / "data", test_per_group=3, val_per_group=1)
    external = {"_target_": "tests.evaluate_data.PlainJpeg", "quality": 60}
    config = evaluation_config(data, codecs={"jpeg": [50], "zoo": [{"arch": "bmshj2018-factorized",
                                                                   "qualities": [1]}],
                                             "external": [external]})
    with caplog.at_level(logging.WARNING):
        outputs = run_evaluation(config, tmp_path / "run", measurements=Measurements())

    # The external codec comes from its Hydra target; the zoo codec is skipped.
    assert set(outputs.per_image["codec"]) == {"jpeg", "jpeg_plain"}
    assert set(outputs.per_image.loc[outputs.per_image["codec"] == "jpeg_plain", "rate_point"]) == {"q60"}
    skipped = outputs.result.skipped
    assert len(skipped) == 1
    assert skipped[0]["codec"] == "bmshj2018-factorized"
    filename = zoo_weights_filename("bmshj2018-factorized", 1)
    assert filename in skipped[0]["reason"]
    assert str(tmp_path / "empty_torch_home") in skipped[0]["reason"]
    assert filename in outputs.report_path.read_text()


def test_no_codec_raises(tmp_path):
    data = write_colour_faces(tmp_path / "data", test_per_group=2, val_per_group=1)
    with pytest.raises(ValueError, match="No codec to evaluate"):
        run_evaluation(evaluation_config(data), tmp_path / "run", measurements=Measurements())


def test_attribute_group_of_one_not_tested():
    # Group C has one image correct on the original, so its retention has n = 1.
    rows = []
    for group, labels, originals in (("A", [0, 1, 0, 1], [0, 1, 0, 1]), ("B", [0, 1, 0, 1], [0, 1, 1, 0]),
                                     ("C", [0, 1, 0, 1], [0, 0, 1, 0])):
        for index, (label, original) in enumerate(zip(labels, originals)):
            rows.append({"codec": "jpeg", "rate_point": "q50", "quality": 50, "lmbda": np.nan, "seed": "",
                         "epoch": np.nan, "sample_id": f"{group}{index}", "group": group, "psnr": 30.0 + index,
                         "bpp": 1.0 + 0.1 * index, "gender_label": label, "gender_pred_orig": original,
                         "gender_pred_rec": original})
    summary, gaps = summarize_ladder(pd.DataFrame(rows), ["A", "B", "C"], n_resamples=99)

    retention = summary[(summary["metric"] == "retention") & (summary["group"] == "C")]
    assert retention["n"].iloc[0] == 1
    assert retention["value"].iloc[0] == 1.0
    tested = gaps[(gaps["metric"] == "retention")].iloc[0]
    # A and B are still compared; C, with one image, is left out of the test only.
    assert 0.0 < tested["p_value"] <= 1.0


def test_report_flags_classifier_below_majority(evaluated):
    outputs, _, _, _ = evaluated
    images = outputs.per_image.drop_duplicates("sample_id")
    labels = images["gender_label"].to_numpy(dtype=int)
    labelled = labels >= 0
    accuracy = float(np.mean(images["gender_pred_orig"].to_numpy(dtype=int)[labelled] == labels[labelled]))
    majority = float(np.bincount(labels[labelled]).max() / labelled.sum())
    # The greenness stand-in does not learn gender, so it must fail the gate.
    assert accuracy <= majority + 0.05

    report = outputs.report_path.read_text()
    assert "### Classifier quality gate" in report
    gate_row = f"| evaluate.py (test partition) | gender | {accuracy:.3f} | {majority:.3f} | 0.05 | **no** |"
    assert gate_row in report
    tests_section = report.split("## Tests")[1].split("\n## ")[0]
    gender_rows = [line for line in tests_section.splitlines() if "| gender |" in line]
    assert gender_rows
    assert all(line.rstrip(" |").endswith("classifier below majority: results not trustworthy")
               for line in gender_rows)
