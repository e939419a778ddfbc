"""Figures the platform draws on request from catalog data (the pipelines save the others).

They are plain ``Figure`` objects, never pyplot's global state: the
server draws in several threads."""

from __future__ import annotations

from matplotlib.figure import Figure

from cgd_kedro.platform.project import ProjectView
from cgd_kedro.reporting.figures import mcr_curves, plot_mcr_curves, plot_unlearning_curves

# Reports whose per-epoch history carries test CA / ASR: defense name -> dataset of an attack.
CURVE_REPORTS = {"cgd": "{attack}.cgd_report", "cgd_bdclip": "{attack}.cgd_bdclip_report"}


def classifier_samples(view: ProjectView, attack: str, n: int = 8) -> Figure:
    """Clean test images (top row) and the attack's triggered test images (bottom row)."""
    test_set, backdoor_test = view.load("test_set"), view.load(f"{attack}.backdoor_test")
    figure = Figure(figsize=(1.3 * n, 3.0))
    axes = figure.subplots(2, n, squeeze=False)
    for row, (images, caption) in enumerate(
        ((test_set, "clean"), (backdoor_test, f"{attack} triggered"))
    ):
        for column, axis in enumerate(axes[row]):
            axis.axis("off")
            if images is not None and column < len(images["images"]):
                axis.imshow(images["images"][column].permute(1, 2, 0).numpy())
        axes[row][0].set_title(caption, loc="left", fontsize=9)
    return figure


def defense_curves(view: ProjectView, attack: str) -> Figure:
    """Test CA and ASR over the epochs of each defense that records them
    (CGD, CGD with a backdoored CLIP)."""
    reports = {
        defense: view.load(name.format(attack=attack)) for defense, name in CURVE_REPORTS.items()
    }
    return plot_unlearning_curves(
        {d: r["history"] for d, r in reports.items() if r},
        title=f"{attack}: clean accuracy and ASR per epoch",
    )


def mcr_curve(view: ProjectView, attack: str) -> Figure:
    """MCR along its curve (validation figures, and test figures for evaluation)
    from the newest ``defense_metrics``."""
    return plot_mcr_curves(mcr_curves({attack: view.load(f"{attack}.defense_metrics") or {}}))
