"""The entropy map: each training sample at (r_clip, r_sus), with marginal histograms.

Poisoned samples (ground truth, when known) collect in the lower right: CLIP finds their given
label unlikely (high r_clip) while the suspicious model fits it at once (low r_sus). The split's
threshold lines are drawn: clean = left of ``1 - sigma1`` and above ``sigma1``; triggered = right
of ``1 - sigma2`` or below ``sigma2``.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from torch import Tensor

CLEAN_COLOUR, POISON_COLOUR = "#3b75af", "#d62728"


def plot_entropy_map(
    r_clip: Tensor,
    r_sus: Tensor,
    poison: Tensor | None,
    *,
    sigma1: float,
    sigma2: float,
    title: str = "",
) -> Figure:
    """Scatter of ``(r_clip, r_sus)`` with marginal histograms, coloured by ``poison`` if given."""
    # not pyplot: no global state, safe in the platform's threads
    figure = Figure(figsize=(6.4, 6.4))
    grid = figure.add_gridspec(
        2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05
    )
    scatter = figure.add_subplot(grid[1, 0])
    top = figure.add_subplot(grid[0, 0], sharex=scatter)
    right = figure.add_subplot(grid[1, 1], sharey=scatter)
    x, y = r_clip.double().numpy(), r_sus.double().numpy()
    groups = [("all samples", x, y, CLEAN_COLOUR)]
    if poison is not None:
        flags = poison.bool().numpy()
        groups = [
            (f"clean ({int((~flags).sum())})", x[~flags], y[~flags], CLEAN_COLOUR),
            (f"poisoned ({int(flags.sum())})", x[flags], y[flags], POISON_COLOUR),
        ]
    bins = [i / 50 for i in range(51)]
    for label, gx, gy, colour in groups:
        scatter.scatter(gx, gy, s=2, alpha=0.35, color=colour, label=label, rasterized=True)
        top.hist(gx, bins=bins, color=colour, alpha=0.6)
        right.hist(gy, bins=bins, color=colour, alpha=0.6, orientation="horizontal")
    for value, style in ((1 - sigma1, "--"), (1 - sigma2, ":")):
        scatter.axvline(value, color="black", linestyle=style, linewidth=1)
    for value, style in ((sigma1, "--"), (sigma2, ":")):
        scatter.axhline(value, color="black", linestyle=style, linewidth=1)
    scatter.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="r_clip (rank of CLIP NLL of the given label)",
        ylabel="r_sus (rank of suspicious-model NLL)",
    )
    scatter.legend(
        loc="upper left",
        markerscale=4,
        fontsize=8,
        title=f"-- sigma1={sigma1:g}   : sigma2={sigma2:g}",
        title_fontsize=8,
    )
    top.tick_params(labelbottom=False)
    right.tick_params(labelleft=False)
    top.set_title(title or "entropy map")
    return figure
