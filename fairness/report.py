"""Markdown for report.md (one evaluation) and comparison.md (two runs compared).

Pure text rendering: every number comes from the tables of :mod:`fairness.ladder` and
:mod:`fairness.comparison`, figures are linked by their path relative to the report. The
reports always state n per group, the number of MS-SSIM scales and which results are
underpowered, because at small n a non-significant result is weak evidence of no difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairness.comparison import QUALITY_COLUMNS, ComparisonResult
from fairness.ladder import ORIGINAL_CODEC, SEED_MEAN, higher_is_better, representative_rows

__all__ = [
    "BIAS_TABLE_METRICS",
    "ReportInputs",
    "bias_table",
    "markdown_table",
    "quality_notes",
    "render_comparison",
    "render_report",
]

BIAS_TABLE_METRICS = ("psnr", "ms_ssim", "feat_dist", "lpips", "bpp")
"""Per-image metrics in the bias-against-rate table, when present."""

_MS_SSIM_STANDARD_SCALES = 5


def _number(value, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    if not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 10**6):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def _p(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(value):
        return ""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """Render a DataFrame as a GitHub markdown table (cells as they are, index dropped)."""
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if cell is None else str(cell).replace("|", "/") for cell in row) + " |")
    return "\n".join(lines)


def _figure(path: Path | str | None, caption: str) -> str:
    if path is None:
        return ""
    return f"![{caption}]({Path(path).as_posix()})\n"


@dataclass
class ReportInputs:
    """Contents of report.md.

    Attributes
    ----------
    dataset, partition : str
        Data set name and the partition evaluated.
    group_names : list of str
        Groups in report order.
    counts : pandas.Series
        Images per group.
    image_size : int
        Side of the evaluated images in pixels.
    ms_ssim_scales : int or None
        MS-SSIM scales used at that size (None: MS-SSIM not reported).
    instances : pandas.DataFrame
        One row per codec instance (``fairness.ladder.instance_table`` plus ``family``
        and ``source``).
    summary, gaps : pandas.DataFrame
        summary.csv and gaps.csv.
    bd_rates, matched : pandas.DataFrame
        ``fairness.ladder.group_bd_rates`` and ``matched_gaps``.
    anchor : str
        Anchor codec of the BD-rates.
    figures : dict
        Section -> list of figure paths relative to the report.
    skipped : list of dict
        Instances not evaluated, with the reason.
    unavailable : dict
        Metric family -> reason it is not reported.
    """

    dataset: str
    partition: str
    group_names: list[str]
    counts: pd.Series
    image_size: int
    ms_ssim_scales: int | None
    instances: pd.DataFrame
    summary: pd.DataFrame
    gaps: pd.DataFrame
    bd_rates: pd.DataFrame
    matched: pd.DataFrame
    anchor: str
    figures: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    min_group_size: int = 100
    fid_min_per_group: int = 200
    confidence: float = 0.95
    n_resamples: int = 1000
    notes: list[str] = field(default_factory=list)
    quality: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QUALITY_COLUMNS))


QUALITY_FLAG = "classifier below majority: results not trustworthy"
"""Note next to the results of an attribute whose classifier failed the quality gate."""

_MDE_DEFINITION = ("mde: minimum detectable effect, the smallest difference between the two smallest groups that "
                   "the test detects with 80% power at alpha 0.05 (normal approximation).")


def quality_notes(quality: pd.DataFrame) -> dict[str, str]:
    """Return attribute -> note for every attribute that failed a classifier quality gate.

    The note names each failing check (side, where it ran, accuracy against majority rate).
    """
    notes: dict[str, str] = {}
    if quality is None or quality.empty:
        return notes
    failed = quality[~quality["passes"].astype(bool)]
    for attribute, rows in failed.groupby("attribute", sort=False):
        checks = []
        for row in rows.itertuples(index=False):
            side = f"{row.side}, " if row.side else ""
            checks.append(f"{side}{row.check}: acc {_number(row.acc_orig)} vs majority {_number(row.majority_rate)}"
                          f" + {_number(row.required_margin, 2)}")
        notes[str(attribute)] = f"{QUALITY_FLAG} ({'; '.join(checks)})"
    return notes


def _quality_section(quality: pd.DataFrame, heading: str = "##") -> list[str]:
    if quality is None or quality.empty:
        return []
    table = pd.DataFrame({
        "side": quality["side"], "check": quality["check"], "attribute": quality["attribute"],
        "acc on originals": quality["acc_orig"].map(_number),
        "majority rate": quality["majority_rate"].map(_number),
        "required margin": quality["required_margin"].map(lambda value: _number(value, 2)),
        "passes": quality["passes"].map(lambda flag: "yes" if bool(flag) else "**no**"),
    })
    if (table["side"].fillna("") == "").all():
        table = table.drop(columns="side")
    lines = [f"{heading} Classifier quality gate", "",
             "An attribute passes when the classifier's pooled accuracy on the original images exceeds the "
             "majority-class rate (the accuracy of always predicting the most common label) by the required "
             "margin. Where it does not, the attribute's fidelity results measure a classifier that has not "
             "learnt the attribute, so they are not trustworthy; they are marked below.", "",
             markdown_table(table), ""]
    failed = sorted(set(quality.loc[~quality["passes"].astype(bool), "attribute"]))
    if failed:
        lines += [f"**{QUALITY_FLAG}** for {', '.join(failed)}.", ""]
    return lines


def bias_table(gaps: pd.DataFrame, metrics: Sequence[str] = BIAS_TABLE_METRICS) -> pd.DataFrame:
    """Return the bias-against-rate table: one row per instance, gap and worst group per metric.

    Each cell reads ``gap (worst group)``, with ``*`` when the Holm-adjusted p-value is
    below 0.05. Rows are sorted by codec, then bpp.
    """
    rows = gaps[(gaps["codec"] != ORIGINAL_CODEC) & (gaps["attribute"].fillna("") == "")]
    present = [metric for metric in metrics if metric in set(rows["metric"])]
    if rows.empty or not present:
        return pd.DataFrame()
    records = []
    keys = ["codec", "rate_point", "seed"]
    rows = rows.assign(seed=rows["seed"].fillna("").astype(str))
    order = rows.drop_duplicates(keys)[[*keys, "bpp_mean", "underpowered"]]
    order = order.sort_values(["codec", "bpp_mean"], kind="stable")
    for _, instance in order.iterrows():
        instance_rows = rows[(rows["codec"] == instance["codec"]) & (rows["rate_point"] == instance["rate_point"])
                             & (rows["seed"] == instance["seed"])].set_index("metric")
        record = {"codec": instance["codec"], "rate point": instance["rate_point"], "seed": instance["seed"],
                  "bpp": _number(instance["bpp_mean"])}
        for metric in present:
            if metric not in instance_rows.index:
                record[f"{metric} gap"] = ""
                continue
            gap = instance_rows.loc[metric]
            star = "*" if np.isfinite(float(gap["p_holm"])) and float(gap["p_holm"]) < 0.05 else ""
            spread = f" +- {_number(gap['gap_sd'])} SD" if str(gap["seed"]) == SEED_MEAN else ""
            record[f"{metric} gap"] = f"{_number(gap['gap'])}{spread}{star} ({gap['worst_group']})"
        record["underpowered"] = "yes" if bool(instance["underpowered"]) else "no"
        records.append(record)
    return pd.DataFrame(records)


def _counts_section(inputs: ReportInputs) -> list[str]:
    counts = inputs.counts
    table = pd.DataFrame({"group": counts.index, "images": counts.to_numpy()})
    lines = ["## Data", "",
             f"Data set **{inputs.dataset}**, partition **{inputs.partition}**, {int(counts.sum())} images "
             f"of {inputs.image_size} x {inputs.image_size} px. Every codec instance codes the same images.", "",
             markdown_table(table), ""]
    small = [group for group, n in counts.items() if n < inputs.min_group_size]
    if len(small) == len(counts):
        lines.append(f"**Underpowered: every group has fewer than min_group_size = {inputs.min_group_size} images, "
                     f"so every test and interval in this report is underpowered.** A gap that is not significant "
                     f"here may still be real; the minimum detectable effect (mde) next to each test says how "
                     f"large a difference these data could have found.")
    elif small:
        lines.append(f"**Underpowered groups** (fewer than {inputs.min_group_size} images): {', '.join(small)}. "
                     "Results involving them are flagged.")
    else:
        lines.append(f"Every group has at least min_group_size = {inputs.min_group_size} images.")
    lines.append("")
    if inputs.ms_ssim_scales is not None:
        lines.append(f"MS-SSIM uses **{inputs.ms_ssim_scales} of the {_MS_SSIM_STANDARD_SCALES} standard scales** "
                     f"at {inputs.image_size} px (the coarsest scales do not fit; their weights are dropped and "
                     "the rest renormalised), so it is not comparable to 5-scale MS-SSIM of larger images.")
    else:
        lines.append(f"MS-SSIM is not reported: {inputs.image_size} px images are too small for two scales.")
    lines.append("")
    return lines


def _codecs_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Codecs", ""]
    instances = inputs.instances
    if instances.empty:
        lines += ["No codec instance was evaluated.", ""]
    else:
        records = []
        for codec, rows in instances.groupby("codec", sort=False):
            seeds = sorted({str(seed) for seed in rows["seed"].fillna("") if str(seed) != ""})
            records.append({
                "codec": codec,
                "family": rows["family"].iloc[0] if "family" in rows else "",
                "rate points": ", ".join(dict.fromkeys(rows["rate_point"].astype(str))),
                "seeds": ", ".join(seeds) if seeds else "",
                "bpp range": f"{_number(rows['bpp_mean'].min())} to {_number(rows['bpp_mean'].max())}",
                "source": rows["source"].iloc[0] if "source" in rows else "",
            })
        lines += [markdown_table(pd.DataFrame(records)), ""]
    if inputs.skipped:
        lines += ["Not evaluated:", ""]
        lines += [f"- {item['codec']} {item['rate_point']}: {item['reason']}" for item in inputs.skipped]
        lines.append("")
    if inputs.unavailable:
        lines += ["Metrics reported unavailable:", ""]
        lines += [f"- {name}: {reason}" for name, reason in inputs.unavailable.items()]
        lines.append("")
    return lines


def _figures(inputs: ReportInputs, section: str, caption: str) -> list[str]:
    return [_figure(path, caption) for path in inputs.figures.get(section, [])]


def _bias_section(inputs: ReportInputs) -> list[str]:
    table = bias_table(inputs.gaps)
    family = int(inputs.gaps["p_value"].notna().sum())
    lines = ["## Bias against rate", "",
             "Gap = max - min of the group means (the group with the worst value in brackets). `*`: Holm-adjusted "
             f"p < 0.05 in the permutation test of no group difference; Holm runs over all {family} tests of this "
             "report. Rows with several seeds show the across-seed mean +- SD of the gap.", "",
             markdown_table(table), ""]
    lines += _figures(inputs, "bias_vs_bpp", "group gap against bpp")
    if not inputs.matched.empty:
        matched = inputs.matched.copy()
        for column in matched.columns:
            if column not in ("codec", "metric", "worst_group", "best_group"):
                matched[column] = matched[column].map(_number)
        lines += ["", "### Gaps at matched bpp", "",
                  "At one quality or lambda the groups spend different bpp. Here each group's metric is "
                  "interpolated over log(bpp) (its own mean bpp per rate point) to common bpp points, so the gap "
                  "compares groups at equal rate.", "", markdown_table(matched), ""]
    return lines


def _rd_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Per-group rate-distortion", ""]
    lines += _figures(inputs, "rd_curves", "per-group RD curves")
    psnr = representative_rows(inputs.summary[(inputs.summary["metric"] == "psnr")
                                              & (inputs.summary["codec"] != ORIGINAL_CODEC)])
    if not psnr.empty:
        psnr = psnr.assign(seed=psnr["seed"].fillna("").astype(str))
        table = psnr.pivot_table(index=["codec", "rate_point", "seed"], columns="group", values="value",
                                 sort=False, aggfunc="first")
        table = table.reindex(columns=[g for g in [*inputs.group_names, "all"] if g in table.columns])
        table = table.map(lambda value: _number(value, 2)).reset_index()
        lines += ["Group mean PSNR (dB):", "", markdown_table(table), ""]
    lines += ["### Per-group BD-rate", ""]
    if inputs.bd_rates.empty:
        lines += [f"No BD-rate: the anchor codec `{inputs.anchor}` was not evaluated with at least two rate points "
                  "(set `anchor=` to another codec).", ""]
    else:
        bd = inputs.bd_rates.copy()
        bd["bd_rate"] = bd["bd_rate"].map(lambda value: _number(value, 1))
        table = bd.pivot_table(index="codec", columns="group", values="bd_rate", aggfunc="first", sort=False)
        table = table.reindex(columns=[g for g in [*inputs.group_names, "all", "gap"] if g in table.columns])
        notes = bd[bd["note"].fillna("") != ""].groupby("codec", sort=False)["note"].agg(
            lambda values: "; ".join(dict.fromkeys(values)))
        table["note"] = notes.reindex(table.index).fillna("")
        lines += [f"BD-rate (%) of each codec against `{inputs.anchor}` on each group's own images (PSNR, PCHIP "
                  "fit over log rate, over the PSNR range both curves cover). Negative: fewer bits for the same "
                  "quality. The `gap` column is max - min over groups.", "",
                  markdown_table(table.fillna("").reset_index()), ""]
        lines += _figures(inputs, "bd_rate", "per-group BD-rate")
    return lines


def _realism_section(inputs: ReportInputs) -> list[str]:
    realism = inputs.summary[inputs.summary["metric"].isin(["fid", "kid"])]
    if realism.empty:
        return []
    realism = representative_rows(realism).assign(seed=lambda f: f["seed"].fillna("").astype(str))
    table = realism.pivot_table(index=["codec", "rate_point", "seed"], columns=["metric", "group"], values="value",
                                aggfunc="first", sort=False)
    ordered = [(metric, group) for metric in ("fid", "kid") for group in ["all", *inputs.group_names]
               if (metric, group) in table.columns]
    table = table.reindex(columns=ordered)
    table.columns = [f"{metric} {group}" for metric, group in table.columns]
    table = table.map(lambda value: _number(value, 4)).reset_index()
    smallest = int(inputs.counts.min()) if len(inputs.counts) else 0
    lines = ["## Realism", "",
             "FID and KID compare the Inception features of the reconstructions with those of the originals. "
             f"FID is pooled over all images; per group it is reported only when every group has at least "
             f"fid_min_per_group = {inputs.fid_min_per_group} images (here the smallest has {smallest}), because "
             "the 2048-d covariance is degenerate below a few thousand images and FID is strongly biased at "
             "small n. KID is unbiased at any n and is given per group (subset size capped by the group's n); being "
             "unbiased, it can be negative when a group is small.", "",
             markdown_table(table), ""]
    lines += _figures(inputs, "bias_vs_realism", "group gap against realism")
    return lines


def _attribute_section(inputs: ReportInputs) -> list[str]:
    attribute_rows = inputs.summary[inputs.summary["attribute"].fillna("") != ""]
    if attribute_rows.empty:
        return []
    lines = ["## Attribute fidelity", ""]
    lines += _quality_section(inputs.quality, heading="###")
    original = attribute_rows[attribute_rows["codec"] == ORIGINAL_CODEC]
    if not original.empty:
        table = original.pivot_table(index=["attribute", "metric"], columns="group", values="value", aggfunc="first",
                                     sort=False)
        table = table.reindex(columns=[g for g in [*inputs.group_names, "all"] if g in table.columns])
        lines += ["Classifier accuracy on the originals (its own bias, `classifier_bias` = gap of acc_orig):", "",
                  markdown_table(table.map(_number).reset_index()), ""]
    lines += ["Gaps of the reconstruction metrics per instance are in the tests table below; "
              "`compression_bias` is the gap of degradation (acc_orig - acc_rec on the same images).", ""]
    lines += _figures(inputs, "attribute_bias", "attribute gaps against bpp")
    return lines


def _seeds_section(inputs: ReportInputs) -> list[str]:
    averaged = inputs.gaps[inputs.gaps["seed"].astype(str) == SEED_MEAN]
    if averaged.empty:
        return []
    table = averaged[["codec", "rate_point", "n_seeds", "attribute", "metric", "gap", "gap_sd", "worst_group"]].copy()
    table["gap"] = table["gap"].map(_number)
    table["gap_sd"] = table["gap_sd"].map(_number)
    return ["## Training seeds", "",
            "Configurations trained with several seeds: the gap averaged over seeds and its across-seed SD. The "
            "per-seed rows, with their own tests, stay in gaps.csv and summary.csv.", "",
            markdown_table(table), ""]


def _tests_section(inputs: ReportInputs) -> list[str]:
    tested = inputs.gaps[inputs.gaps["p_value"].notna()].copy()
    if tested.empty:
        return []
    table = pd.DataFrame({
        "codec": tested["codec"], "rate point": tested["rate_point"], "seed": tested["seed"].fillna(""),
        "attribute": tested["attribute"].fillna(""), "metric": tested["metric"],
        "gap": tested["gap"].map(_number), "worst": tested["worst_group"], "best": tested["best_group"],
        "worst - best 95% max-T": [f"[{_number(low)}, {_number(high)}]"
                                   for low, high in zip(tested["worst_best_low"], tested["worst_best_high"])],
        "p": tested["p_value"].map(_p), "p (Holm)": tested["p_holm"].map(_p), "mde": tested["mde"].map(_number),
        "underpowered": tested["underpowered"].map(lambda flag: "yes" if bool(flag) else "no"),
    })
    flags = quality_notes(inputs.quality)
    if flags:
        table["note"] = [QUALITY_FLAG if attribute in flags else "" for attribute in table["attribute"]]
    return ["## Tests", "",
            f"Permutation test of no group difference ({inputs.n_resamples} resamples, statistic = gap), Holm "
            f"correction over all {len(tested)} tests. The interval is the simultaneous (max-T bootstrap) "
            f"{inputs.confidence:.0%} interval of the worst minus the best group (higher minus lower mean), which "
            f"can cover 0, unlike a percentile bootstrap interval of max - min. {_MDE_DEFINITION}", "",
            markdown_table(table), ""]


def _grids_section(inputs: ReportInputs) -> list[str]:
    paths = inputs.figures.get("grids", [])
    if not paths:
        return []
    lines = ["## Reconstructions", "", "A few test images per group, the original first, then each rate point.", ""]
    lines += [_figure(path, f"reconstructions {Path(path).stem}") for path in paths]
    return lines


def _reading_notes(inputs: ReportInputs) -> list[str]:
    notes = [
        "Gaps are max - min of group means; no confidence interval of the gap itself is given, because a "
        "percentile bootstrap interval of max - min is biased upwards and never covers 0 when groups are equal.",
        "Comparisons across codecs are only meaningful at matched bpp (the matched-gap table and the BD-rates); "
        "at the same quality or lambda different codecs and groups spend different numbers of bits.",
        "Per-group CIs are 95% BCa bootstrap intervals for means and Wilson intervals for proportions; they are "
        "marginal, so overlapping CIs do not show that two groups are equal.",
    ]
    notes += inputs.notes
    return ["## Reading this report", ""] + [f"- {note}" for note in notes] + [""]


def render_report(inputs: ReportInputs) -> str:
    """Return report.md for one evaluation."""
    lines = [f"# fairbits evaluation: {inputs.dataset}, {inputs.partition} partition", ""]
    for section in (_counts_section, _codecs_section, _bias_section, _rd_section, _realism_section,
                    _attribute_section, _seeds_section, _tests_section, _grids_section, _reading_notes):
        lines += section(inputs)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- comparison


def _did_table(did: pd.DataFrame, name_a: str, name_b: str, flags: Mapping[str, str]) -> str:
    # With a gap of 0 every group ties, so naming one as furthest behind would mislead.
    tied = ~(did["difference"].astype(float).abs() > 1e-12)
    attributes = did["attribute"].fillna("").astype(str)
    table = pd.DataFrame({
        "attribute": attributes.replace("", "(image)"), "metric": did["metric"], "mode": did["mode"],
        "bpp": [_number(b) if mode == "matched" else f"{_number(a)} vs {_number(c)}"
                for b, a, c, mode in zip(did["bpp"], did["bpp_a"], did["bpp_b"], did["mode"])],
        "gap of differences": did["difference"].map(_number),
        f"group where {name_a} is furthest behind {name_b}": did["worst_group"].where(~tied, "none (gap 0)"),
        f"group where {name_a} is furthest ahead": did["best_group"].where(~tied, "none (gap 0)"),
        "p": did["p_value"].map(_p), "p (Holm)": did["p_holm"].map(_p), "mde": did["mde"].map(_number),
    })
    if flags:
        table["note"] = [QUALITY_FLAG if attribute in flags else "" for attribute in attributes]
    return markdown_table(table)


def render_comparison(result: ComparisonResult, *, sources: tuple[str, str], figures: Mapping[str, Path],
                      min_group_size: int = 100, confidence: float = 0.95, n_resamples: int = 1000) -> str:
    """Return comparison.md for two runs compared at matched bpp."""
    name_a, name_b = result.names
    table = result.table
    lines = [f"# fairbits comparison: {name_a} against {name_b}", "",
             "| side | source | codec | rate points (lowest bpp first) | seeds averaged |", "|---|---|---|---|---|"]
    for index, name in enumerate(result.names):
        lines.append(f"| {name} | `{sources[index]}` | {result.codecs[index]} | "
                     f"{', '.join(result.rate_points[index])} | {result.n_seeds[index]} |")
    lines += ["", "Paired images per group (the same sample_id on both sides):", "",
              markdown_table(pd.DataFrame({"group": result.n_images.index, "images": result.n_images.to_numpy()})),
              ""]
    small = result.n_images[result.n_images < min_group_size]
    if len(small):
        lines += [f"**Underpowered:** {len(small)} of {len(result.n_images)} groups have fewer than "
                  f"min_group_size = {min_group_size} paired images; a non-significant difference here is weak "
                  "evidence of no difference (see mde).", ""]
    lines += [
        "## Method", "",
        f"Difference = {name_a} - {name_b}. Where both sides have at least two rate points and their group "
        "curves overlap, each group's metric is interpolated over log(bpp) (the group's own mean bpp at each "
        "rate point) to common bpp points inside the range every group of both sides covers (`matched`). "
        "Otherwise the rate points are paired by rank, lowest rate first, and compared as they are (`direct`); "
        "their bpp then differ, as the bpp columns show.",
        "",
        f"Per group: the mean paired difference over the same images, with a {confidence:.0%} bootstrap CI. "
        f"Across groups: the difference-in-differences test, a permutation test ({n_resamples} resamples) of "
        "whether the per-image difference depends on the group (statistic = max - min of the group mean "
        "differences), Holm-corrected over every test in this comparison. Per-image values are averaged over "
        "training seeds first; sd_a and sd_b give the across-seed SD of each group value where a side has "
        "several seeds.", "",
    ]
    lines += [f"- {note}" for note in result.notes]
    if result.notes:
        lines.append("")

    flags = quality_notes(result.quality)
    lines += _quality_section(result.quality)
    did = table[table["kind"] == "did"]
    if not did.empty:
        lines += ["## Difference-in-differences tests", "", _did_table(did, name_a, name_b, flags), "",
                  f"A group is named only where the gap of differences is above 0. {_MDE_DEFINITION}", ""]

    groups = table[table["kind"] == "group"]
    for (attribute, metric), rows in groups.groupby([groups["attribute"].fillna(""), "metric"], sort=False):
        title = f"{attribute}: {metric}" if attribute else metric
        sign = "positive" if higher_is_better(metric) else "negative"
        lines += [f"## {title} difference {name_a} - {name_b} per group ({sign} = {name_a} better)", ""]
        if attribute in flags:
            lines += [f"**{flags[attribute]}.**", ""]
        if rows["mode"].iloc[0] == "matched":
            column = rows["bpp"].map(lambda value: f"bpp {_number(value)}")
        else:
            # Each group has its own bpp (in comparison.csv); the column shows all images' bpp.
            pooled = rows[rows["group"] == "all"].set_index("pair")
            label = {pair: f"pair {int(pair)}: {_number(row['bpp_a'])} vs {_number(row['bpp_b'])} bpp"
                     for pair, row in pooled.iterrows()}
            column = rows["pair"].map(label)
        cells = [f"{_number(d)} [{_number(lo)}, {_number(hi)}]"
                 for d, lo, hi in zip(rows["difference"], rows["ci_low"], rows["ci_high"])]
        pivot = pd.DataFrame({"group": rows["group"].to_numpy(), "point": list(column), "cell": cells})
        wide = pivot.pivot_table(index="group", columns="point", values="cell", aggfunc="first", sort=False)
        order = [g for g in [*result.n_images.index, "all"] if g in wide.index]
        lines += [markdown_table(wide.reindex(order).fillna("").reset_index()), ""]
        key = f"{attribute}/{metric}" if attribute else metric
        if key in figures:
            lines.append(_figure(figures[key], f"comparison of {title}"))
    return "\n".join(lines).rstrip() + "\n"
