"""The report's summary figures: CA/ASR bars per defense and attack, CA/ASR per unlearning epoch and
every attack's entropy map in one panel (the ABD sample grid is ``clip.figures.plot_abd_sample_grid``).

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
    for axis, metric, label in zip(axes, ("clean_acc", "asr"), ("clean accuracy", "attack success rate"), strict=True):
        for i, defense in enumerate(defenses):
            heights = [means[metric].get((attack, defense), np.nan) for attack in attacks]
            axis.bar(x + (i - (len(defenses) - 1) / 2) * width, heights, width, label=defense, color=colours(i % 10))
        axis.set_ylabel(label)
        axis.set_ylim(0, 1)
        axis.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(x, attacks, rotation=30, ha="right")
    axes[0].legend(ncol=min(len(defenses), 8), fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.02))
    figure.suptitle(f"{model} defenses: clean accuracy and ASR per attack", y=1.08 if len(defenses) > 4 else 1.0)
    figure.tight_layout()
    return figure


def plot_unlearning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], title: str = "CGD unlearning (test figures, recorded for the report only)"
) -> Figure:  # fmt: skip
    """Test CA and ASR (recorded for the report) per unlearning epoch, one line per history
    (``{label: [{epoch, test_clean_acc, test_asr, ...}]}``: an attack's CGD, or CGD variants)."""
    figure = Figure(figsize=(10, 3.8))
    ca_axis, asr_axis = figure.subplots(1, 2)
    colours = colormaps["tab20"]
    for i, (label, history) in enumerate(sorted(histories.items())):
        epochs = [entry["epoch"] for entry in history]
        colour = colours(i % 20)
        ca_axis.plot(epochs, [entry.get("test_clean_acc", np.nan) for entry in history], "-o", ms=3, color=colour, label=label)
        asr_axis.plot(epochs, [entry.get("test_asr", np.nan) for entry in history], "-o", ms=3, color=colour, label=label)
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


def plot_entropy_panel(scores: Mapping[str, pd.DataFrame], *, max_points: int = 4000, seed: int = 0) -> Figure:
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
    for axis, (attack, frame) in zip(axes.flat, sorted(scores.items())):
        sample = frame.iloc[rng.permutation(len(frame))[:max_points]]
        poisoned = sample["is_poisoned"].astype(bool).to_numpy()
        axis.scatter(sample["r_clip"][~poisoned], sample["r_sus"][~poisoned], s=2, c="#1f77b4", alpha=0.4, label="clean")
        axis.scatter(sample["r_clip"][poisoned], sample["r_sus"][poisoned], s=2, c="#d62728", alpha=0.6, label="poisoned")
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

