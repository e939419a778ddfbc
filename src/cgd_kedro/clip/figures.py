"""Figures of the CLIP backdoor experiments: samples side by side, the similarity panel, and CA/ASR
per epoch of each defense."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from torch import Tensor

from cgd_kedro.clip.triggers import ClipTrigger, apply_trigger


def _subplots(rows: int, columns: int, **kwargs):
    """``pyplot.subplots`` on a plain ``Figure``: no pyplot global state
    (the platform draws in threads)."""
    figsize, sharey = kwargs.pop("figsize", None), kwargs.pop("sharey", False)
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, sharey=sharey, **kwargs)


DEFENSE_COLOURS = {"ft": "#7f7f7f", "cleanclip": "#1f77b4", "abd": "#d62728"}


def plot_sample_grid(rows: Mapping[str, Tensor], *, title: str = "") -> Figure:
    """One row per named uint8 batch (``C x H x W`` images, same count per row), e.g. clean,
    backdoored (triggered) and adversarial (ABD patch) versions of the same images."""
    n = min(t.shape[0] for t in rows.values())
    figure, axes = _subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[c].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_abd_sample_grid(
    images: Tensor,
    triggers: Mapping[str, ClipTrigger],
    patches: Mapping[str, ClipTrigger],
    *,
    title: str,
    n: int = 8,
) -> Figure:
    """The first ``n`` clean uint8 images, then per CLIP attack the same with its trigger and with
    ABD's adversarial patch."""
    rows = {"clean": images[:n]}
    for attack in sorted(triggers):
        name = attack.removeprefix("clip_")  # short row labels: they sit beside 32-pixel images
        rows[f"{name}\nbackdoor"] = apply_trigger(images[:n], triggers[attack])
        rows[f"{name}\nABD patch"] = apply_trigger(images[:n], patches[attack])
    return plot_sample_grid(rows, title=title)


def plot_similarity_panel(
    similarities: Mapping[str, Mapping[str, Sequence[float]]], *, title: str = ""
) -> Figure:
    """Box plots of cosine similarities: for each image group (e.g. clean, triggered, ABD-patched),
    the similarity to its own caption, to the target caption and to an unrelated caption."""
    groups = list(similarities)
    kinds = list(next(iter(similarities.values())))
    figure, axes = _subplots(
        1, len(groups), figsize=(3.2 * len(groups), 3.2), sharey=True, squeeze=False
    )
    for ax, group in zip(axes[0], groups, strict=True):
        ax.boxplot([list(similarities[group][k]) for k in kinds], showfliers=False)
        ax.set_xticks(range(1, len(kinds) + 1), kinds, rotation=20, fontsize=8)
        ax.set_title(group, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("cosine similarity")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_defense_curves(
    histories: Mapping[str, Sequence[Mapping]], *, before: Mapping[str, float], title: str = ""
) -> Figure:
    """CA and ASR after each epoch of each defense (epoch 0 = the backdoored CLIP)."""
    figure, (ca_ax, asr_ax) = _subplots(1, 2, figsize=(8, 3.2))
    for name, history in histories.items():
        epochs = [0] + [h["epoch"] for h in history]
        colour = DEFENSE_COLOURS.get(name)
        ca_ax.plot(
            epochs,
            [before["clean_acc"]] + [h["test_clean_acc"] for h in history],
            marker="o",
            label=name,
            color=colour,
        )
        asr_ax.plot(
            epochs,
            [before["asr"]] + [h["test_asr"] for h in history],
            marker="o",
            label=name,
            color=colour,
        )
    for ax, label in ((ca_ax, "clean accuracy"), (asr_ax, "attack success rate")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    asr_ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
