"""Figures of evaluate.py: bias against rate and realism, per-group RD curves and BD-rates, grids.

Every function takes the tables of :mod:`fairness.ladder` or :mod:`fairness.comparison`,
writes one PNG with matplotlib's Agg backend (no display needed) and returns its path.
Groups keep one colour across all figures, in ``group_names`` order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fairness.ladder import ORIGINAL_CODEC, SEED_MEAN, higher_is_better, representative_rows  # noqa: E402

log = logging.getLogger(__name__)

__all__ = [
    "bias_vs_bpp",
    "bias_vs_realism",
    "comparison_figure",
    "difference_note",
    "group_bd_rate_bars",
    "group_colours",
    "group_rd_curves",
    "metric_unit",
    "reconstruction_grid",
]

_DPI = 110
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")

METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ms_ssim": "MS-SSIM",
    "bpp": "bits per pixel",
    "bpp_est": "estimated bits per pixel",
    "lpips": "LPIPS",
    "feat_dist": "feature distance (1 - cosine)",
    "fid": "FID (pooled)",
    "kid": "KID",
    "acc_rec": "accuracy on reconstructions",
    "agreement": "prediction agreement",
    "retention": "retention",
    "degradation": "accuracy degradation",
    "bal_acc_rec": "balanced accuracy on reconstructions",
}


def metric_label(metric: str, attribute: str = "") -> str:
    """Return an axis label for a metric, prefixed by its attribute."""
    label = METRIC_LABELS.get(metric, metric)
    return f"{attribute}: {label}" if attribute else label


METRIC_UNITS = {"psnr": "dB", "bpp": "bits per pixel", "bpp_est": "bits per pixel",
                "acc_rec": "share of images", "agreement": "share of images"}
"""Units of metrics that have one; the others are unitless scores or shares."""

GAP_NOTE = "lower is better: max - min over groups"
"""Direction note of a gap: a gap is never negative and 0 means equal groups."""


def _direction_note(metric: str) -> str:
    try:
        return "higher is better" if higher_is_better(metric) else "lower is better"
    except KeyError:
        return ""


def difference_note(metric: str, name_a: str = "A") -> str:
    """Return which sign of a difference A - B favours side A, by the metric's direction."""
    try:
        sign = "positive" if higher_is_better(metric) else "negative"
    except KeyError:
        return ""
    return f"{sign} = {name_a} better"


def metric_unit(metric: str) -> str:
    """Return the unit of a metric ("dB" for PSNR), or "unitless"."""
    return METRIC_UNITS.get(metric, "unitless")


def group_colours(group_names: Sequence[str]) -> dict[str, tuple]:
    """Return a fixed colour per group (tab10, then tab20 for more than 10 groups)."""
    palette = plt.get_cmap("tab10" if len(group_names) <= 10 else "tab20")
    return {name: palette(index % palette.N) for index, name in enumerate(group_names)}


def _log_axis(axis, axis_name: str = "x") -> None:
    # Log scale with plain tick labels (0.4, 1, 2) instead of powers of ten.
    target = axis.xaxis if axis_name == "x" else axis.yaxis
    (axis.set_xscale if axis_name == "x" else axis.set_yscale)("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    target.set_major_formatter(plain)
    target.set_minor_formatter(plain)
    target.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 3.0, 5.0)))
    axis.tick_params(axis=axis_name, which="minor", labelsize=7)


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    return path


def _attribute_mask(frame: pd.DataFrame, attribute: str) -> pd.Series:
    return frame["attribute"].fillna("").astype(str) == (attribute or "")


def bias_vs_bpp(gaps: pd.DataFrame, metric: str, path: Path, *, attribute: str = "") -> Path | None:
    """Plot the gap between groups against bpp, one line per codec.

    The band of a single-seed codec is the simultaneous (max-T) 95% interval of the
    worst-versus-best difference. A codec with several seeds is drawn as its across-seed
    mean with a band of +-1 across-seed SD. Underpowered points are drawn hollow.

    Returns None when no codec has a value for this metric.
    """
    rows = gaps[(gaps["metric"] == metric) & _attribute_mask(gaps, attribute) & (gaps["codec"] != ORIGINAL_CODEC)]
    rows = representative_rows(rows)
    rows = rows[np.isfinite(pd.to_numeric(rows["bpp_mean"], errors="coerce"))
                & np.isfinite(pd.to_numeric(rows["gap"], errors="coerce"))]
    if rows.empty:
        return None

    figure, axis = plt.subplots(figsize=(7.0, 4.2))
    for index, (codec, codec_rows) in enumerate(rows.groupby("codec", sort=False)):
        codec_rows = codec_rows.sort_values("bpp_mean")
        x = codec_rows["bpp_mean"].to_numpy(dtype=float)
        y = codec_rows["gap"].to_numpy(dtype=float)
        several_seeds = (codec_rows["seed"].astype(str) == SEED_MEAN).any()
        if several_seeds:
            spread = codec_rows["gap_sd"].to_numpy(dtype=float)
            low, high = y - spread, y + spread
            label = f"{codec} (mean of {int(codec_rows['n_seeds'].max())} seeds, band +-1 SD)"
        else:
            low = codec_rows["worst_best_low"].to_numpy(dtype=float)
            high = codec_rows["worst_best_high"].to_numpy(dtype=float)
            label = codec
        marker = _MARKERS[index % len(_MARKERS)]
        line, = axis.plot(x, y, marker=marker, linestyle="-", label=label, linewidth=1.5, markersize=6)
        finite = np.isfinite(low) & np.isfinite(high)
        if finite.all() and len(x) > 1:
            axis.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        elif finite.any():
            # A band needs two neighbouring intervals, so single points get error bars.
            axis.errorbar(x[finite], y[finite], yerr=[y[finite] - low[finite], high[finite] - y[finite]],
                          fmt="none", ecolor=line.get_color(), alpha=0.5, capsize=3)
        weak = codec_rows["underpowered"].fillna(False).astype(bool).to_numpy()
        if weak.any():
            axis.plot(x[weak], y[weak], linestyle="none", marker=marker, markersize=6,
                      markerfacecolor="white", markeredgecolor=line.get_color())

    axis.axhline(0.0, color="0.5", linewidth=0.8)
    _log_axis(axis)
    axis.set_xlabel("bits per pixel (mean over all images, log scale)")
    axis.set_ylabel(f"gap, max - min over groups\n{metric_label(metric, attribute)}")
    axis.set_title(f"Group gap of {metric_label(metric, attribute)} against rate\n({GAP_NOTE})", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    if rows["underpowered"].fillna(False).astype(bool).any():
        figure.text(0.01, -0.02, "Hollow markers: a group has fewer images than min_group_size (underpowered). "
                    "Bands: simultaneous max-T 95% interval of worst minus best group.", fontsize=7)
    return _save(figure, path)


def bias_vs_realism(gaps: pd.DataFrame, set_summary: pd.DataFrame, metrics: Sequence[str], path: Path, *,
                    realism_metric: str = "fid") -> Path | None:
    """Scatter the group gap of each metric against pooled realism, one panel per metric.

    x is the pooled ``realism_metric`` (FID or KID over all images) of each instance, y
    the gap, the marker shape the codec and the colour the mean bpp.
    """
    realism = set_summary[(set_summary["metric"] == realism_metric) & (set_summary["group"] == "all")]
    realism = representative_rows(realism)
    if realism.empty:
        return None
    key = ["codec", "rate_point", "seed"]
    realism = realism.assign(seed=realism["seed"].fillna("").astype(str))[[*key, "value"]]
    panels = []
    for metric in metrics:
        rows = representative_rows(gaps[(gaps["metric"] == metric) & _attribute_mask(gaps, "")])
        rows = rows.assign(seed=rows["seed"].fillna("").astype(str)).merge(realism, on=key, how="inner")
        rows = rows[np.isfinite(rows["value"].astype(float)) & np.isfinite(rows["gap"].astype(float))]
        if not rows.empty:
            panels.append((metric, rows))
    if not panels:
        return None

    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False,
                                layout="constrained")
    all_bpp = pd.concat([rows["bpp_mean"] for _, rows in panels]).astype(float)
    norm = matplotlib.colors.LogNorm(vmin=max(all_bpp.min(), 1e-3), vmax=max(all_bpp.max(), all_bpp.min() * 1.01))
    codecs = list(dict.fromkeys(pd.concat([rows["codec"] for _, rows in panels])))
    scatter = None
    for axis, (metric, rows) in zip(axes[0], panels):
        for index, codec in enumerate(codecs):
            codec_rows = rows[rows["codec"] == codec]
            if codec_rows.empty:
                continue
            scatter = axis.scatter(codec_rows["value"].astype(float), codec_rows["gap"].astype(float),
                                   c=codec_rows["bpp_mean"].astype(float), cmap="viridis", norm=norm,
                                   marker=_MARKERS[index % len(_MARKERS)], s=55, edgecolors="black",
                                   linewidths=0.5, label=codec)
        axis.set_xlabel(f"{METRIC_LABELS.get(realism_metric, realism_metric)}, all images")
        axis.set_ylabel(f"gap of {metric_label(metric)}")
        axis.set_title(f"{metric_label(metric)}\n(gap: {GAP_NOTE})", fontsize=9)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        axis.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4), useMathText=True)
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    if scatter is not None:
        colourbar = figure.colorbar(scatter, ax=list(axes[0]), shrink=0.9)
        colourbar.set_label("bits per pixel (log scale)")
        ticks, digits = _colourbar_ticks(all_bpp.to_numpy(dtype=float), norm)
        colourbar.set_ticks(ticks)
        colourbar.ax.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:.{digits}g}"))
        colourbar.ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    figure.suptitle("Group gap against realism (marker: codec, colour: rate)", fontsize=10)
    return _save(figure, path)


def _colourbar_ticks(values: np.ndarray, norm) -> tuple[list[float], int]:
    # Round ticks where the range contains two; otherwise the data's own bpp values (at most
    # three). Digits: the fewest significant digits (3 or 4) that keep the labels distinct.
    ticks = [tick for tick in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10) if norm.vmin <= tick <= norm.vmax]
    if len(ticks) < 2:
        unique = np.unique(values[np.isfinite(values)])
        ticks = list(unique if unique.size <= 3 else np.geomspace(unique[0], unique[-1], 3))
    for digits in (3, 4):
        if len({f"{tick:.{digits}g}" for tick in ticks}) == len(ticks):
            return ticks, digits
    return ticks, 4


def group_rd_curves(summary: pd.DataFrame, group_names: Sequence[str], path: Path, *,
                    metric: str = "psnr") -> Path | None:
    """Plot each group's rate-distortion curve: group mean ``metric`` against group mean bpp.

    One panel per codec, one line per group, vertical bars for the per-group 95% CI
    (bootstrap) of single-seed instances.
    """
    rows = representative_rows(summary[(summary["codec"] != ORIGINAL_CODEC) & _attribute_mask(summary, "")])
    codecs = [codec for codec in rows["codec"].unique()
              if not rows[(rows["codec"] == codec) & (rows["metric"] == metric)].empty]
    if not codecs:
        return None
    colours = group_colours(group_names)
    columns = min(3, len(codecs))
    lines = int(np.ceil(len(codecs) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(4.8 * columns, 3.6 * lines), squeeze=False)
    for axis, codec in zip(axes.flat, codecs):
        codec_rows = rows[rows["codec"] == codec]
        bpp = codec_rows[codec_rows["metric"] == "bpp"].set_index(["rate_point", "group"])["value"]
        values = codec_rows[codec_rows["metric"] == metric].set_index(["rate_point", "group"])
        for group in group_names:
            points = []
            for rate_point in codec_rows["rate_point"].unique():
                if (rate_point, group) in bpp.index and (rate_point, group) in values.index:
                    row = values.loc[(rate_point, group)]
                    points.append((bpp[(rate_point, group)], row["value"], row["ci_low"], row["ci_high"]))
            if not points:
                continue
            points.sort()
            x, y, low, high = (np.array(column, dtype=float) for column in zip(*points))
            axis.plot(x, y, marker="o", markersize=3.5, linewidth=1.2, color=colours[group], label=group)
            if np.isfinite(low).any():
                axis.errorbar(x, y, yerr=[np.clip(y - low, 0, None), np.clip(high - y, 0, None)], fmt="none",
                              ecolor=colours[group], elinewidth=0.8, capsize=2, alpha=0.7)
        _log_axis(axis)
        axis.set_title(codec, fontsize=9)
        axis.set_xlabel("group mean bpp (log scale)")
        axis.set_ylabel(metric_label(metric))
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(codecs):]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8,
                  bbox_to_anchor=(0.5, -0.02))
    figure.suptitle(f"Per-group rate-distortion curves ({metric_label(metric)}; bars: 95% CI)", fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _save(figure, path)


def group_bd_rate_bars(bd_rates: pd.DataFrame, group_names: Sequence[str], path: Path) -> Path | None:
    """Bar chart of per-group BD-rate against the anchor, one bar colour per codec."""
    rows = bd_rates[bd_rates["group"].isin([*group_names, "all"]) & np.isfinite(bd_rates["bd_rate"].astype(float))]
    if rows.empty:
        return None
    codecs = list(rows["codec"].unique())
    groups = [group for group in [*group_names, "all"] if group in set(rows["group"])]
    width = 0.8 / len(codecs)
    figure, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.0))
    positions = np.arange(len(groups))
    for index, codec in enumerate(codecs):
        values = rows[rows["codec"] == codec].set_index("group")["bd_rate"].reindex(groups).astype(float)
        bars = axis.bar(positions + (index - (len(codecs) - 1) / 2) * width, values.to_numpy(), width, label=codec)
        axis.bar_label(bars, labels=[f"{v:.0f}" if np.isfinite(v) else "" for v in values.to_numpy()], fontsize=7,
                       padding=2)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks(positions)
    axis.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    anchor = rows["anchor"].iloc[0]
    metric = rows["metric"].iloc[0]
    axis.set_ylabel(f"BD-rate against {anchor} (%)\nnegative: fewer bits for equal {metric}")
    axis.set_title(f"Per-group BD-rate ({metric}) against {anchor}, each group on its own images", fontsize=10)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def reconstruction_grid(originals, groups: Sequence[str], columns: Mapping[str, object], path: Path, *,
                        title: str = "") -> Path | None:
    """Show originals and their reconstructions side by side, a few images per group.

    Parameters
    ----------
    originals : uint8 tensor or array ``[k, 3, H, W]``
    groups : sequence of str
        Group of each row.
    columns : mapping
        Column title (a rate point) -> uint8 ``[k, 3, H, W]`` reconstructions in the same order.
    """
    originals = np.asarray(originals)
    if originals.size == 0:
        return None
    images = [("original", originals)] + [(name, np.asarray(array)) for name, array in columns.items()]
    count = originals.shape[0]
    side = 1.15
    figure, axes = plt.subplots(count, len(images), figsize=(side * len(images) + 1.2, side * count), squeeze=False)
    for column, (name, array) in enumerate(images):
        for row in range(count):
            axis = axes[row][column]
            axis.imshow(np.transpose(array[row], (1, 2, 0)), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=7)
            if column == 0:
                axis.set_ylabel(groups[row], fontsize=7, rotation=0, ha="right", va="center")
    height = figure.get_figheight()
    # Keep the title close to the grid: the default top margin is a fraction of the height.
    figure.subplots_adjust(wspace=0.04, hspace=0.06, top=1.0 - 0.6 / height)
    figure.suptitle(title, fontsize=9, y=1.0 - 0.12 / height)
    return _save(figure, path)


def _jitter_factor(index: int, count: int, spread: float = 0.04) -> float:
    # Multiplicative x offset (log axis) that spreads ``count`` markers around their point.
    return 1.0 + spread * (index - (count - 1) / 2) / max(count, 1)


def comparison_figure(curves: pd.DataFrame, differences: pd.DataFrame, group_names: Sequence[str], metric: str,
                      path: Path, *, names: tuple[str, str], attribute: str = "") -> Path | None:
    """Two panels: each side's per-group curves, and the per-group difference at matched bpp.

    Groups at the same point are shifted slightly along x and drawn half transparent, so
    that none hides another. The legend of the left panel names the groups (colour) and
    the sides (marker).

    Parameters
    ----------
    curves : pandas.DataFrame
        ``side``, ``group``, ``bpp``, ``value`` of each side's group means per rate point.
    differences : pandas.DataFrame
        Per-group rows of :func:`fairness.comparison.compare_runs` for this metric:
        ``group``, ``bpp`` (or ``pair`` in direct mode), ``difference``, ``ci_low``, ``ci_high``.
    """
    if differences.empty:
        return None
    colours = group_colours(group_names)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.8), layout="constrained")
    _comparison_curves(left, curves, group_names, colours, metric, names=names, attribute=attribute)
    _comparison_differences(right, differences, group_names, colours, metric, names=names, attribute=attribute)
    return _save(figure, path)


def _comparison_curves(axis, curves: pd.DataFrame, group_names: Sequence[str], colours: dict, metric: str, *,
                       names: tuple[str, str], attribute: str) -> None:
    styles = {names[0]: ("-", "o"), names[1]: ("--", "s")}
    shown = [group for group in group_names if (curves["group"] == group).any()]
    single_points = True
    for (side, group), rows in curves.groupby(["side", "group"], sort=False):
        if group not in colours:
            continue
        rows = rows.sort_values("bpp")
        single_points &= len(rows) < 2
        linestyle, marker = styles.get(side, (":", "^"))
        x = rows["bpp"].to_numpy(dtype=float) * _jitter_factor(shown.index(group), len(shown))
        axis.plot(x, rows["value"], linestyle=linestyle, marker=marker, markersize=7, alpha=0.75,
                  markerfacecolor="white" if marker == "s" else colours[group], markeredgewidth=1.5,
                  color=colours[group])
    _log_axis(axis)
    axis.set_xlabel("group mean bpp (log scale; groups shifted slightly apart)")
    axis.set_ylabel(metric_label(metric, attribute))
    drawn = "dots and squares" if single_points else "solid and dashed lines"
    axis.set_title(f"Group means per rate point ({drawn})", fontsize=9)
    axis.grid(True, which="both", alpha=0.3)

    # One legend entry per group (colour) and per side (marker and line style).
    handles = [matplotlib.lines.Line2D([], [], color=colours[group], marker="o", linestyle="none", label=group)
               for group in shown]
    for side, (linestyle, marker) in styles.items():
        handles.append(matplotlib.lines.Line2D(
            [], [], color="0.3", marker=marker, markerfacecolor="white" if marker == "s" else "0.3",
            linestyle="none" if single_points else linestyle, label=side))
    axis.legend(handles=handles, fontsize=7, loc="best")


def _comparison_differences(axis, differences: pd.DataFrame, group_names: Sequence[str], colours: dict,
                            metric: str, *, names: tuple[str, str], attribute: str) -> None:
    matched = differences["mode"].iloc[0] == "matched"
    shown = [group for group in [*group_names, "all"] if (differences["group"] == group).any()]
    for index, group in enumerate(shown):
        rows = differences[differences["group"] == group]
        difference = rows["difference"].to_numpy(dtype=float)
        low = rows["ci_low"].to_numpy(dtype=float)
        high = rows["ci_high"].to_numpy(dtype=float)
        colour = colours.get(group, "black")
        width = 2.5 if group == "all" else 1.3
        if matched and len(rows) > 1:
            x = rows["bpp"].to_numpy(dtype=float) * _jitter_factor(index, len(shown), spread=0.02)
            axis.plot(x, difference, marker="o", markersize=3.5, color=colour, linewidth=width, label=group,
                      alpha=0.85)
            axis.fill_between(x, low, high, color=colour, alpha=0.12, linewidth=0)
        else:
            # Single points: side-by-side error bars, spread so that groups do not overlap.
            base = rows["bpp"].to_numpy(dtype=float) if matched else rows["pair"].to_numpy(dtype=float)
            offset = (index - (len(shown) - 1) / 2) * 0.6 / max(len(shown), 1)
            x = base * (1 + 0.2 * offset) if matched else base + offset
            axis.errorbar(x, difference, yerr=[difference - low, high - difference], fmt="o", color=colour,
                          markersize=4, capsize=3, elinewidth=width, label=group)
    axis.axhline(0.0, color="0.4", linewidth=0.8)
    if matched:
        _log_axis(axis)
        axis.set_xlabel("matched bpp (log scale)")
    else:
        pairs = sorted(differences["pair"].dropna().unique())
        axis.set_xticks(pairs)
        axis.set_xticklabels([f"pair {int(pair)}" for pair in pairs])
        axis.set_xlabel("rate point pair (lowest rate first); the two sides' bpp differ")
    label = METRIC_LABELS.get(metric, metric).split(" (")[0]
    prefix = f"{attribute}: " if attribute else ""
    axis.set_ylabel(f"{prefix}{label} difference ({metric_unit(metric)})\n{names[0]}\n- {names[1]}", fontsize=8)
    note = difference_note(metric, "A")
    axis.set_title(f"Difference A - B per group, paired 95% bootstrap CI\n(A = {names[0]}, B = {names[1]}"
                   f"{'; ' + note if note else ''})", fontsize=9)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best", ncol=2)
