"""The report's summary figures: CA/ASR bars per defense and attack, CA/ASR per unlearning epoch,
MCR's figures along its curve and every attack's entropy map in one panel (the ABD sample grid is
``clip.figures.plot_abd_sample_grid``).

They are plain ``Figure`` objects, never pyplot's global state, so the platform's server threads
can draw them at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure


def plot_message(text: str) -> Figure:
    """A small figure holding only ``text``: the stand-in for a figure with nothing to show."""
    figure = Figure(figsize=(6.0, 1.2))
    figure.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return figure


def plot_defense_bars(report: pd.DataFrame, model: str) -> Figure:
    """Clean accuracy and ASR of each defense (bars) per attack (groups), for the rows of
    ``defense_report`` with ``model`` (``classifier`` or ``clip``); mean over seeds."""
    rows = report[report["model"] == model]
    if rows.empty:
        raise ValueError(f"plot_defense_bars: defense_report has no rows for model {model!r}")
    means = rows.groupby(["attack", "defense"], sort=False)[["clean_acc", "asr"]].mean()
    attacks = list(dict.fromkeys(rows["attack"]))
    defenses = list(dict.fromkeys(rows["defense"]))
    width = 0.8 / len(defenses)
    x = np.arange(len(attacks))
    figure = Figure(figsize=(max(6.0, 0.9 * len(attacks) * max(1, len(defenses) / 4)), 5.5))
    axes = figure.subplots(2, 1, sharex=True)
    colours = colormaps["tab10"]
    for axis, metric, label in zip(
        axes, ("clean_acc", "asr"), ("clean accuracy", "attack success rate"), strict=True
    ):
        for i, defense in enumerate(defenses):
            heights = [means[metric].get((attack, defense), np.nan) for attack in attacks]
            axis.bar(
                x + (i - (len(defenses) - 1) / 2) * width,
                heights,
                width,
                label=defense,
                color=colours(i % 10),
            )
        axis.set_ylabel(label)
        axis.set_ylim(0, 1)
        axis.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(x, attacks, rotation=30, ha="right")
    axes[0].legend(
        ncol=min(len(defenses), 8), fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.02)
    )
    figure.suptitle(
        f"{model} defenses: clean accuracy and ASR per attack", y=1.08 if len(defenses) > 4 else 1.0
    )
    figure.tight_layout()
    return figure


def plot_unlearning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    title: str = "CGD unlearning (test figures, recorded for the report only)",
) -> Figure:
    """Test CA and ASR (recorded for the report) per unlearning epoch, one line per history
    (``{label: [{epoch, test_clean_acc, test_asr, ...}]}``: an attack's CGD, or CGD variants)."""
    figure = Figure(figsize=(10, 3.8))
    ca_axis, asr_axis = figure.subplots(1, 2)
    colours = colormaps["tab20"]
    for i, (label, history) in enumerate(sorted(histories.items())):
        epochs = [entry["epoch"] for entry in history]
        colour = colours(i % 20)
        ca_axis.plot(
            epochs,
            [entry.get("test_clean_acc", np.nan) for entry in history],
            "-o",
            ms=3,
            color=colour,
            label=label,
        )
        asr_axis.plot(
            epochs,
            [entry.get("test_asr", np.nan) for entry in history],
            "-o",
            ms=3,
            color=colour,
            label=label,
        )
    for axis, label in ((ca_axis, "clean accuracy"), (asr_axis, "attack success rate")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    if histories:
        asr_axis.legend(fontsize=7, ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def mcr_curves(defense_metrics: dict[str, dict]) -> dict[str, dict]:
    """``{attack: {mcr_<source>: {t, curve}}}`` from each attack's ``defense_metrics``
    (attacks without MCR left out)."""
    found = {
        attack: {
            name: {"t": m["t"], "curve": m["curve"]}
            for name, m in metrics.items()
            if name.startswith("mcr_") and "curve" in m
        }
        for attack, metrics in defense_metrics.items()
    }
    return {attack: by_defense for attack, by_defense in found.items() if by_defense}


def plot_mcr_curves(curves: Mapping[str, Mapping[str, Mapping]]) -> Figure:
    """MCR along its Bézier curve, one row per attack, one column per clean-data source
    (``{attack: {mcr_cgd: {t, curve: [{t, val_clean_acc, [triggered_agreement,] test_clean_acc,
    test_asr}]}, ...}}``). Solid: the training-side figures the defense chose its t by (validation
    CA, CGD-fed: triggered agreement); dotted: test CA and ASR, measured afterwards for evaluation
    only; the vertical line is the chosen t."""
    defenses = sorted({d for by_defense in curves.values() for d in by_defense})
    if not defenses:
        return plot_message(
            "No MCR in this run: kedro run --pipelines cgd_unlearn runs it (mcr_cgd, mcr_oracle)."
        )
    attacks = sorted(curves)
    figure = Figure(figsize=(4.6 * len(defenses), 2.9 * len(attacks) + 0.7))
    grid = np.atleast_2d(figure.subplots(len(attacks), len(defenses), squeeze=False))
    lines = (
        ("val_clean_acc", "validation CA", "-o", "tab:blue"),
        ("triggered_agreement", "triggered agreement (ASR proxy)", "-s", "tab:orange"),
        ("test_clean_acc", "test CA (evaluation only)", ":o", "tab:green"),
        ("test_asr", "test ASR (evaluation only)", ":^", "tab:red"),
    )
    for row, attack in enumerate(attacks):
        for column, defense in enumerate(defenses):
            axis = grid[row, column]
            result = curves[attack].get(defense)
            if result is None:
                axis.set_axis_off()
                continue
            ts = [point["t"] for point in result["curve"]]
            for key, label, style, colour in lines:
                if any(key in point for point in result["curve"]):
                    axis.plot(
                        ts,
                        [point.get(key, np.nan) for point in result["curve"]],
                        style,
                        ms=3,
                        color=colour,
                        label=label,
                    )
            axis.axvline(result["t"], color="grey", lw=1, ls="--")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1.02)
            axis.grid(alpha=0.3)
            axis.set_title(f"{attack}: {defense} (chosen t = {result['t']:g}, dashed)", fontsize=9)
            if row == len(attacks) - 1:
                axis.set_xlabel("t (0: backdoored model, 1: fine-tuned end point)")
    handles = {
        label: handle
        for axis in grid.flat
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)
    }
    height = figure.get_figheight()
    figure.suptitle("MCR along the curve", y=1.0, va="top")
    figure.legend(
        handles.values(),
        handles.keys(),
        loc="upper center",
        ncol=4,
        fontsize=8,
        bbox_to_anchor=(0.5, 1 - 0.3 / height),
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.65 / height))
    return figure


def plot_entropy_panel(
    scores: Mapping[str, pd.DataFrame], *, max_points: int = 4000, seed: int = 0
) -> Figure:
    """Every attack's entropy map (``r_clip`` vs ``r_sus``, poisoned samples in red) in one grid;
    at most ``max_points`` samples per map, drawn with ``seed``."""
    if not scores:
        raise ValueError("plot_entropy_panel: no entropy scores")
    n = len(scores)
    columns = min(4, n)
    rows = -(-n // columns)
    figure = Figure(figsize=(3.2 * columns, 3.0 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    rng = np.random.default_rng(seed)
    for axis, (attack, frame) in zip(axes.flat, sorted(scores.items()), strict=False):
        sample = frame.iloc[rng.permutation(len(frame))[:max_points]]
        poisoned = sample["is_poisoned"].astype(bool).to_numpy()
        axis.scatter(
            sample["r_clip"][~poisoned],
            sample["r_sus"][~poisoned],
            s=2,
            c="#1f77b4",
            alpha=0.4,
            label="clean",
        )
        axis.scatter(
            sample["r_clip"][poisoned],
            sample["r_sus"][poisoned],
            s=2,
            c="#d62728",
            alpha=0.6,
            label="poisoned",
        )
        axis.set_title(attack, fontsize=9)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("r_clip", fontsize=8)
        axis.set_ylabel("r_sus", fontsize=8)
    for axis in list(axes.flat)[n:]:
        axis.set_visible(False)
    axes[0][0].legend(fontsize=7, markerscale=4)
    figure.suptitle("entropy maps: CLIP's and the suspicious model's rank-normalised NLL")
    figure.tight_layout()
    return figure
