"""Thin Kedro adapters over ``cgd_kedro.reporting``: every per-attack artefact arrives as a keyword
argument ``<group>__<attack>`` (group = ``defense``, ``split``, ``cgd``, ``entropy``,
``robustness``, and for the CLIP attacks ``trigger`` and ``patch``)."""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure

from cgd_kedro.clip.figures import plot_abd_sample_grid
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.reporting import figures, render
from cgd_kedro.reporting.tables import (
    DEFENSE_KEYS,
    build_defense_report,
    build_robustness_table,
    build_split_report,
    check_seeds,
    clean_data_comparison,
    latest_per_seed,
    summarise_over_seeds,
)

SEPARATOR = "__"
log = logging.getLogger(__name__)


def by_attack(group: str, artefacts: dict) -> dict:
    """``{attack: artefact}`` of the ``<group>__<attack>`` keyword arguments."""
    prefix = group + SEPARATOR
    return {
        key.removeprefix(prefix): value
        for key, value in artefacts.items()
        if key.startswith(prefix)
    }


def make_defense_report(
    dataset_info: dict, runtime: dict, abd_report: pd.DataFrame, **artefacts
) -> pd.DataFrame:
    """``defense_report``: every classifier defense of every attack (``cgd_bdclip``: CGD with a
    backdoored reference CLIP), then every CLIP defense."""
    return build_defense_report(
        dataset_info["name"],
        RuntimeConfig.from_params(runtime).seed,
        by_attack("defense", artefacts),
        abd_report,
        by_attack("robustness", artefacts),
        num_classes=dataset_info["num_classes"],
    )


def make_split_report(dataset_info: dict, runtime: dict, **artefacts) -> pd.DataFrame:
    """``split_report``: the CLIP split's quality per attack."""
    return build_split_report(
        dataset_info["name"], RuntimeConfig.from_params(runtime).seed, by_attack("split", artefacts)
    )


def summarise_seeds(
    defense_report: pd.DataFrame, defense_report_versions: dict, reporting: dict
) -> pd.DataFrame:
    """``defense_summary``: mean and std over seeds, from the newest saved ``defense_report`` of
    each seed (``defense_report_versions``: every saved version, loaded lazily) with this run's
    report standing for its own seed; only the seeds of ``reporting.seeds`` when it is a list."""
    versions = {key: load() for key, load in defense_report_versions.items()}
    versions["~this run"] = (
        defense_report  # "~" sorts after every timestamp: this run is the newest
    )
    report = latest_per_seed(versions)
    seeds = check_seeds(reporting.get("seeds"))
    if seeds is not None:
        missing = sorted(set(seeds) - set(report["seed"]))
        if (
            missing
        ):  # a warning, not an error: the report of the seeds that were run is still worth having
            log.warning(
                "reporting.seeds: no saved defense_report for seed(s) %s; run kedro run "
                "--params runtime.seed=<seed>",
                missing,
            )
        report = report[report["seed"].isin(seeds)]
    return summarise_over_seeds(report, DEFENSE_KEYS)


# The report's figures: catalog name -> caption in the HTML report. They are drawn once, in
# `render_report`, which embeds them and returns them for the catalog to save as PNGs
# (MatplotlibDataset cannot be loaded back, so a separate plotting node would mean drawing twice).
REPORT_FIGURES = {
    "defense_bars_png": "CA and ASR per classifier defense",
    "clip_defense_bars_png": "CA and ASR per CLIP defense",
    "unlearning_curves_png": "CGD unlearning curves",
    "mcr_curves_png": "MCR along its curve",
    "entropy_panel_png": "entropy maps",
    "abd_grid_png": "ABD samples",
}


CLIP_FIGURES = ("clip_defense_bars_png", "abd_grid_png")
NO_CLIP_ATTACK = (
    "No CLIP attack in this run: ABD runs with kedro run --pipelines abd_quick (one) "
    "or abd_defense (all)."
)


def has_clip_rows(defense_report: pd.DataFrame) -> bool:
    return bool((defense_report["model"] == "clip").any())


def draw_report_figures(
    defense_report: pd.DataFrame, clip_defense_pairs: dict, **artefacts
) -> dict[str, Figure]:
    """Every figure of ``REPORT_FIGURES``, by catalog name
    (the CLIP ones say so when the run has no CLIP attack)."""
    drawn = {
        "defense_bars_png": figures.plot_defense_bars(defense_report, "classifier"),
        "unlearning_curves_png": figures.plot_unlearning_curves(
            {a: r["history"] for a, r in by_attack("cgd", artefacts).items()}
        ),
        "mcr_curves_png": figures.plot_mcr_curves(
            figures.mcr_curves(by_attack("defense", artefacts))
        ),
        "entropy_panel_png": figures.plot_entropy_panel(by_attack("entropy", artefacts)),
    }
    if not has_clip_rows(defense_report):
        return drawn | {name: figures.plot_message(NO_CLIP_ATTACK) for name in CLIP_FIGURES}
    return drawn | {
        "clip_defense_bars_png": figures.plot_defense_bars(defense_report, "clip"),
        "abd_grid_png": plot_abd_sample_grid(
            clip_defense_pairs["images"],
            by_attack("trigger", artefacts),
            by_attack("patch", artefacts),
            title="clean, backdoored and ABD-adversarial samples",
        ),
    }


def describe_reference_clip(metrics: dict) -> str:
    """One sentence on the CLIP that CGD scored with:
    where it came from and its zero-shot accuracy."""
    accuracy = f"zero-shot accuracy {metrics['zero_shot_acc']:.3f} on the test set"
    if metrics.get("source") == "stand-in":
        pairs = metrics.get("pretraining", {}).get("pairs", "?")
        return (
            f"Reference CLIP: a stand-in, {metrics['model_name']} pretrained here on {pairs} "
            f"images held out of the training set ({accuracy}); CGD's paper scores with a public "
            "CLIP trained on other data (set clip.weights)."
        )
    if metrics.get("weights"):
        return (
            f"Reference CLIP: {metrics['model_name']} with the local weights "
            f"{metrics['weights']} ({accuracy})."
        )
    return (
        f"Reference CLIP: {metrics['model_name']} pretrained on the embedded world's "
        f"captions ({accuracy})."
    )


def render_report(
    defense_report: pd.DataFrame,
    split_report: pd.DataFrame,
    defense_summary: pd.DataFrame,
    clip_defense_pairs: dict,
    reference_clip_metrics: dict,
    **artefacts,
) -> tuple:
    """The HTML report (figures embedded), the Markdown summary, then the figures in the order of
    ``REPORT_FIGURES``; with several seeds, the mean ± std over seeds leads."""
    dataset = defense_report["dataset"].iloc[0] if len(defense_report) else "?"
    n_seeds = int(defense_summary["n_seeds"].max()) if len(defense_summary) else 1
    if n_seeds > 1:
        classifier = render.ca_asr_summary_matrix(defense_summary, "classifier")
        clip = render.ca_asr_summary_matrix(defense_summary, "clip")
        what = f"mean ± standard deviation over {n_seeds} seeds"
    else:
        classifier, clip = (
            render.ca_asr_matrix(defense_report, "classifier"),
            render.ca_asr_matrix(defense_report, "clip"),
        )
        what = f"seed {int(defense_report['seed'].iloc[0])}" if len(defense_report) else "no rows"
    summary = (
        f"Dataset {dataset}, {what}. Each cell: clean accuracy / attack success rate on the test "
        "set (none = the undefended model). Classifier defenses come from cgd_unlearn, CLIP "
        "defenses from abd_defense; cgd_bdclip is CGD with a backdoored CLIP as its reference "
        "(cgd_robustness). To explore the experiments, compare versions and launch runs, start "
        "the platform: kedro platform (then open 127.0.0.1:8000 in a browser). "
        + describe_reference_clip(reference_clip_metrics)
    )
    notes = render.notes_text(defense_report)
    if notes:
        summary += (
            " Rows with a note, marked (budget too small) or (no effect) in the tables: "
            + notes.replace("\n", "; ")
            + "."
        )
    if not has_clip_rows(defense_report):
        summary += " " + NO_CLIP_ATTACK
    robustness = build_robustness_table(
        defense_report, split_report, by_attack("robustness", artefacts)
    ).round(4)
    sections = {
        "Classifier defenses (CA / ASR)": classifier,
        "CLIP defenses (CA / ASR)": clip,
        "CGD with the reference CLIP and with a backdoored CLIP": robustness,
        # CGD's second claim: its clean subset can stand in for the clean data of other defenses
        "Clean-data defenses: fed CGD's clean subset vs fed oracle clean data": (
            clean_data_comparison(defense_report).round(3)
        ),
    }
    # a run without CLIP attacks has no CLIP tables; one without clean-data defenses no comparison
    sections = {title: table for title, table in sections.items() if len(table)}
    tables = {title[0].lower() + title[1:]: table for title, table in sections.items()} | {
        "defense_report (this run's seed)": defense_report,
        "defense_summary (over seeds)": defense_summary,
        "split_report": split_report,
    }
    drawn = draw_report_figures(defense_report, clip_defense_pairs, **artefacts)
    # a run without MCR saves the stand-in, shows none
    has_mcr = bool(figures.mcr_curves(by_attack("defense", artefacts)))
    shown = [
        name
        for name in REPORT_FIGURES
        if (has_clip_rows(defense_report) or name not in CLIP_FIGURES)
        and (has_mcr or name != "mcr_curves_png")
    ]
    uris = {REPORT_FIGURES[name]: render.figure_to_data_uri(drawn[name]) for name in shown}
    page = render.render_html(f"cgd_kedro report: {dataset}", {"summary": summary}, tables, uris)
    markdown = "\n\n".join(
        [f"# cgd_kedro report: {dataset}", summary]
        + [
            part
            for title, table in sections.items()
            for part in (f"## {title}", render.markdown_table(table))
        ]
        + ["## CLIP split quality", render.markdown_table(split_report)]
    )
    return (page, markdown + "\n", *(drawn[name] for name in REPORT_FIGURES))
