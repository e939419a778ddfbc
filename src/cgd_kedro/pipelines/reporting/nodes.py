"""Thin Kedro adapters over ``cgd_kedro.reporting``: every per-attack artefact arrives as a keyword
argument ``<group>__<attack>`` (group = ``defense``, ``split``, ``cgd``, ``entropy``, and for the
CLIP attacks ``trigger`` and ``patch``)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.reporting import figures, render
from cgd_kedro.reporting.tables import DEFENSE_KEYS, build_defense_report, build_split_report, latest_per_seed, summarise_over_seeds

SEPARATOR = "__"


def by_attack(group: str, artefacts: dict) -> dict:
    """``{attack: artefact}`` of the ``<group>__<attack>`` keyword arguments."""
    prefix = group + SEPARATOR
    return {key.removeprefix(prefix): value for key, value in artefacts.items() if key.startswith(prefix)}


def make_defense_report(dataset_info: dict, runtime: dict, abd_report: pd.DataFrame, **artefacts) -> pd.DataFrame:
    """``defense_report``: every classifier defense of every attack, then every CLIP defense."""
    return build_defense_report(dataset_info["name"], RuntimeConfig.from_params(runtime).seed, by_attack("defense", artefacts), abd_report)


def make_split_report(dataset_info: dict, runtime: dict, **artefacts) -> pd.DataFrame:
    """``split_report``: the CLIP split's quality per attack."""
    return build_split_report(dataset_info["name"], RuntimeConfig.from_params(runtime).seed, by_attack("split", artefacts))


def summarise_seeds(defense_report: pd.DataFrame, defense_report_versions: dict) -> pd.DataFrame:
    """``defense_summary``: mean and std over seeds, from the newest saved ``defense_report`` of each
    seed (``defense_report_versions``: every saved version, loaded lazily) with this run's report
    standing for its own seed."""
    versions = {key: load() for key, load in defense_report_versions.items()}
    versions["~this run"] = defense_report  # "~" sorts after every timestamp: this run is the newest
    return summarise_over_seeds(latest_per_seed(versions), DEFENSE_KEYS)


def plot_classifier_defenses(defense_report: pd.DataFrame) -> Figure:
    return figures.plot_defense_bars(defense_report, "classifier")


def plot_clip_defenses(defense_report: pd.DataFrame) -> Figure:
    return figures.plot_defense_bars(defense_report, "clip")


def plot_unlearning_curves(**artefacts) -> Figure:
    return figures.plot_unlearning_curves({attack: report["history"] for attack, report in by_attack("cgd", artefacts).items()})


def plot_entropy_panel(**artefacts) -> Figure:
    return figures.plot_entropy_panel(by_attack("entropy", artefacts))


def plot_abd_grid(clip_defense_pairs: dict, **artefacts) -> Figure:
    return figures.plot_abd_grid(clip_defense_pairs["images"], by_attack("trigger", artefacts), by_attack("patch", artefacts))


def render_report(
    defense_report: pd.DataFrame, split_report: pd.DataFrame, defense_summary: pd.DataFrame, clip_defense_pairs: dict, **artefacts
) -> tuple[str, str]:
    """The HTML report (figures embedded) and the Markdown summary; with several seeds, the
    mean ± std over seeds leads."""
    dataset = defense_report["dataset"].iloc[0] if len(defense_report) else "?"
    n_seeds = int(defense_summary["n_seeds"].max()) if len(defense_summary) else 1
    if n_seeds > 1:
        classifier = render.ca_asr_summary_matrix(defense_summary, "classifier")
        clip = render.ca_asr_summary_matrix(defense_summary, "clip")
        what = f"mean ± standard deviation over {n_seeds} seeds"
    else:
        classifier, clip = render.ca_asr_matrix(defense_report, "classifier"), render.ca_asr_matrix(defense_report, "clip")
        what = f"seed {int(defense_report['seed'].iloc[0])}" if len(defense_report) else "no rows"
    summary = (
        f"Dataset {dataset}, {what}. Each cell: clean accuracy / attack success rate on the test set "
        "(none = the undefended model). Classifier defenses come from cgd_unlearn, CLIP defenses from abd_defense."
    )
    tables = {"classifier defenses (CA / ASR)": classifier, "CLIP defenses (CA / ASR)": clip,
              "defense_report (this run's seed)": defense_report, "defense_summary (over seeds)": defense_summary,
              "split_report": split_report}  # fmt: skip
    uris = {
        "CA and ASR per classifier defense": render.figure_to_data_uri(figures.plot_defense_bars(defense_report, "classifier")),
        "CA and ASR per CLIP defense": render.figure_to_data_uri(figures.plot_defense_bars(defense_report, "clip")),
        "CGD unlearning curves": render.figure_to_data_uri(plot_unlearning_curves(**artefacts)),
        "entropy maps": render.figure_to_data_uri(plot_entropy_panel(**artefacts)),
        "ABD samples": render.figure_to_data_uri(plot_abd_grid(clip_defense_pairs, **artefacts)),
    }
    page = render.render_html(f"cgd_kedro report: {dataset}", {"summary": summary}, tables, uris)
    markdown = "\n\n".join([
        f"# cgd_kedro report: {dataset}", summary,
        "## Classifier defenses (CA / ASR)", render.markdown_table(classifier),
        "## CLIP defenses (CA / ASR)", render.markdown_table(clip),
        "## CLIP split quality", render.markdown_table(split_report),
    ])  # fmt: skip
    return page, markdown + "\n"
