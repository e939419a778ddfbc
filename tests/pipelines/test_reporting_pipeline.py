"""The ``reporting`` pipeline on an in-memory catalog: tables, figures, the HTML report and the
Markdown summary from hand-made per-attack artefacts; and its place in the registry."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure
from test_clip_split_pipeline import _KeptMemoryDataset

from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES, DEFAULT_ATTACKS
from cgd_kedro.pipelines.reporting.pipeline import create_pipeline
from cgd_kedro.reporting.tables import DEFENSE_COLUMNS

ATTACKS = ("badnets", "sig")
CLIP_ATTACKS = ("clip_badnet",)


def _metrics(asr_cgd: float) -> dict:
    return {
        "none": {"clean_acc": 0.93, "asr": 0.99, "ra": 0.01, "der": 0.5, "seconds": 0.0},
        "cgd": {"clean_acc": 0.92, "asr": asr_cgd, "ra": 0.9, "der": 0.99, "seconds": 40.0},
    }


def _mcr_metrics() -> dict:
    """MCR's rows (fed CGD's subset and oracle data) with their curves,
    as cgd_unlearn's evaluation writes them."""

    def row(t: float, proxy: bool) -> dict:
        curve = [
            {"t": x, "val_clean_acc": 0.9 - x / 10, "test_clean_acc": 0.88, "test_asr": 1 - x}
            | ({"triggered_agreement": 1 - x} if proxy else {})
            for x in (0.1, 0.5, 0.9)
        ]
        return {
            "clean_acc": 0.88,
            "asr": 1 - t,
            "ra": 0.5,
            "der": 0.7,
            "seconds": 9.0,
            "t": t,
            "curve": curve,
        }

    return {"mcr_cgd": row(0.9, True), "mcr_oracle": row(0.5, False)}


def _entropy(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"r_clip": rng.random(50), "r_sus": rng.random(50), "is_poisoned": rng.random(50) < 0.1}
    )


def _inputs() -> dict:
    abd = pd.DataFrame(
        [
            ["embedded", "badnet", d, ca, asr, s, 0]
            for d, ca, asr, s in (
                ("none", 0.8, 0.99, 0),
                ("abd", 0.79, 0.2, 80),
                ("ft", 0.81, 0.98, 40),
            )
        ],
        columns=["dataset", "attack", "defense", "clean_acc", "asr", "seconds", "seed"],
    )
    mask = torch.zeros(1, 32, 32)
    mask[:, -4:, -4:] = 1
    entries = {
        "dataset_info": {"name": "embedded", "num_classes": 10},
        "params:runtime": {"seed": 0, "device": "cpu"},
        "abd_report": abd,
        "reference_clip_metrics": {
            "source": "stand-in",
            "model_name": "cgd-small-clip",
            "zero_shot_acc": 0.7512,
            "weights": None,
            "pretraining": {"pairs": 10000},
        },
        "defense_report_versions": {},
        "params:reporting": {"seeds": None},
        "clip_defense_pairs": {
            "images": torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8),
            "captions": ["x"] * 10,
        },
        "clip_badnet.clip_trigger": {"pattern": torch.ones(3, 32, 32), "mask": mask},
        "clip_badnet.adversarial_patch": {"pattern": torch.zeros(3, 32, 32), "mask": mask},
    }
    for i, attack in enumerate(ATTACKS):
        entries |= {
            f"{attack}.defense_metrics": _metrics(0.001 * (i + 1))
            | (_mcr_metrics() if attack == "sig" else {}),
            f"{attack}.split_metrics": {
                "auroc_combined": 0.99 - i / 100,
                "clean_size": 16000 + i,
                "auroc_clip": 0.98,
                "triggered_recall": 0.99,
                "clean_poisoned_fraction": 0.0,
            },
            f"{attack}.cgd_report": {
                "history": [
                    {"epoch": e, "test_clean_acc": 0.9, "test_asr": 1.0 / (e + 1)} for e in range(3)
                ]
            },
            f"{attack}.entropy_scores": _entropy(i),
            f"{attack}.cgd_robustness": {
                "reference": "clip_badnet",
                "split": {
                    "auroc_clip": 0.7,
                    "auroc_combined": 0.96,
                    "triggered_recall": 0.95,
                    "clean_poisoned_fraction": 0.001,
                },
                "cgd": {"clean_acc": 0.91, "asr": 0.002, "ra": 0.88, "der": 0.99, "seconds": 30.0},
            },
        }
    return entries


def test_in_memory_run_builds_the_tables_figures_and_a_self_contained_report():
    pipeline = create_pipeline(
        attacks=ATTACKS, clip_attacks=CLIP_ATTACKS, robustness_attacks=ATTACKS
    )
    catalog = DataCatalog({k: MemoryDataset(v, copy_mode="assign") for k, v in _inputs().items()})
    for name in pipeline.all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)

    report = catalog.load("defense_report")
    summary = catalog.load("defense_summary")
    assert summary["n_seeds"].tolist() == [1] * len(report)  # one seed: std undefined
    assert (
        summary["asr_std"].isna().all() and summary["asr_mean"].tolist() == report["asr"].tolist()
    )
    assert report[["attack", "model", "defense"]].values.tolist() == [
        ["badnets", "classifier", "none"],
        ["badnets", "classifier", "cgd"],
        ["badnets", "classifier", "cgd_bdclip"],
        ["sig", "classifier", "none"],
        ["sig", "classifier", "cgd"],
        ["sig", "classifier", "cgd_bdclip"],
        ["sig", "classifier", "mcr_cgd"],
        ["sig", "classifier", "mcr_oracle"],
        ["badnet", "clip", "none"],
        ["badnet", "clip", "abd"],
        ["badnet", "clip", "ft"],
    ]
    assert report.loc[2, ["clean_acc", "asr", "ra"]].tolist() == [
        0.91,
        0.002,
        0.88,
    ]  # CGD with the backdoored CLIP
    # ABD against the backdoored CLIP
    assert report.loc[9, "der"] == pytest.approx((0.99 - 0.2 - (0.8 - 0.79) + 1) / 2)
    split = catalog.load("split_report")
    assert split["attack"].tolist() == ["badnets", "sig"] and split["clean_size"].tolist() == [
        16000,
        16001,
    ]
    for figure in (
        "defense_bars_png",
        "clip_defense_bars_png",
        "unlearning_curves_png",
        "mcr_curves_png",
        "entropy_panel_png",
        "abd_grid_png",
    ):
        assert isinstance(catalog.load(figure), Figure), figure
    # sig ran MCR (two sources), badnets did not: one row
    assert len(catalog.load("mcr_curves_png").axes) == 2
    page, markdown = catalog.load("report_html"), catalog.load("report_md")
    assert (
        page.startswith("<!DOCTYPE html>")
        and page.count("<img") == 6
        and "src='data:image/png;base64," in page
    )
    assert "http://" not in page and "https://" not in page  # nothing fetched: opens offline
    assert (
        "Reference CLIP: a stand-in, cgd-small-clip pretrained here on 10000 images held out of "
        "the training set (zero-shot accuracy 0.751 on the test set)" in markdown
    )
    # 2 matrices, robustness, the clean-data comparison, defense_report, defense_summary,
    # split_report
    assert page.count('class="dataframe sortable"') == 7
    # sig's MCR fed CGD's subset: same CA as its oracle, lower ASR
    assert "| mcr | 1 | 1 | 0 | 0.100 | 0.500 | 0.880 | 0.880 |" in markdown
    assert (
        "| badnets | 0.930 / 0.990 | 0.920 / 0.001 | 0.910 / 0.002 |" in markdown
        and "| badnet | 0.800 / 0.990 | 0.790 / 0.200 | 0.810 / 0.980 |" in markdown
    )
    assert re.search(r"\| embedded \| sig \| 0\.980 \| 16001 \|", markdown)
    # robustness: the normal CGD (split_report, cgd row) beside CGD with the backdoored CLIP
    assert "| sig | reference | 0.980 | 0.980 | 0.990 | 0.000 | 0.920 | 0.002 | 0.900 |" in markdown
    assert (
        "| sig | backdoored (clip_badnet) | 0.700 | 0.960 | 0.950 | 0.001 | 0.910 | 0.002 | 0.880 |"
        in markdown
    )


def test_a_second_seed_makes_the_report_lead_with_mean_and_std():
    pipeline = create_pipeline(
        attacks=ATTACKS, clip_attacks=CLIP_ATTACKS, robustness_attacks=ATTACKS
    )
    inputs = _inputs()
    catalog = DataCatalog({k: MemoryDataset(v, copy_mode="assign") for k, v in inputs.items()})
    for name in pipeline.all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")
    # A first run of seed 0 is replaced by this run's; seed 1 (ASR of CGD 0.003 on badnets) stays.
    seed_1 = pd.DataFrame(
        [["embedded", "badnets", "classifier", "cgd", 0.94, 0.003, 0.9, 0.99, 38.0, 1, ""]],
        columns=DEFENSE_COLUMNS,
    )
    stale_seed_0 = seed_1.assign(seed=0, asr=0.5)
    catalog["defense_report_versions"] = MemoryDataset(
        {
            "2026-01-01T00.00.00.000Z/defense_report": lambda: stale_seed_0,
            "2026-01-02T00.00.00.000Z/defense_report": lambda: seed_1,
        }
    )
    SequentialRunner().run(pipeline, catalog)
    summary = catalog.load("defense_summary").set_index(["attack", "model", "defense"])
    cgd = summary.loc[("badnets", "classifier", "cgd")]
    assert (
        cgd["n_seeds"] == 2
        and cgd["asr_mean"] == pytest.approx(0.002)
        and cgd["asr_std"] == pytest.approx(0.001414, abs=1e-5)
    )
    assert summary.loc[("sig", "classifier", "cgd"), "n_seeds"] == 1
    markdown = catalog.load("report_md")
    assert (
        "mean ± standard deviation over 2 seeds" in markdown
        and "| badnets | 0.930 / 0.990 | 0.930 ± 0.014" in markdown
    )
    # CGD: CA 0.92 and 0.94, ASR 0.001 and 0.003
    assert "| 0.930 ± 0.014 / 0.002 ± 0.001 |" in markdown


def test_the_seeds_parameter_chooses_the_seeds_summarised_and_names_missing_ones(caplog):
    pipeline = create_pipeline(
        attacks=ATTACKS, clip_attacks=CLIP_ATTACKS, robustness_attacks=ATTACKS
    )
    seed_1 = pd.DataFrame(
        [["embedded", "badnets", "classifier", "cgd", 0.94, 0.003, 0.9, 0.99, 38.0, 1, ""]],
        columns=DEFENSE_COLUMNS,
    )
    seed_2 = seed_1.assign(seed=2, asr=0.5)
    summaries = {}
    for seeds in ([0, 1], [1, 7]):
        catalog = DataCatalog(
            {k: MemoryDataset(v, copy_mode="assign") for k, v in _inputs().items()}
        )
        for name in pipeline.all_outputs():
            catalog[name] = _KeptMemoryDataset(copy_mode="assign")
        catalog["params:reporting"] = MemoryDataset({"seeds": seeds})
        catalog["defense_report_versions"] = MemoryDataset(
            {
                "2026-01-01T00.00.00.000Z/defense_report": lambda: seed_1,
                "2026-01-02T00.00.00.000Z/defense_report": lambda: seed_2,
            }
        )
        SequentialRunner().run(pipeline, catalog)
        summaries[tuple(seeds)] = catalog.load("defense_summary").set_index(
            ["attack", "model", "defense"]
        )
    cgd = ("badnets", "classifier", "cgd")
    assert summaries[(0, 1)].loc[cgd, "n_seeds"] == 2 and summaries[(0, 1)].loc[
        cgd, "asr_mean"
    ] == pytest.approx(0.002)  # not seed 2
    # seed 7 was never run: the summary holds seed 1 alone (this run is
    # seed 0) and the log names seed 7
    assert summaries[(1, 7)].loc[cgd, "n_seeds"] == 1 and summaries[(1, 7)].loc[
        cgd, "asr_mean"
    ] == pytest.approx(0.003)
    assert "no saved defense_report for seed(s) [7]" in caplog.text


def test_registry_reporting_covers_the_default_attacks_and_reporting_full_all():
    from conftest import PROJECT_ROOT
    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.pipeline_registry import register_pipelines

    bootstrap_project(PROJECT_ROOT)
    pipelines = register_pipelines()
    defense_inputs = lambda p: {  # noqa: E731
        i.split(".")[0]
        for n in p.nodes
        if n.name == "make_defense_report"
        for i in n.inputs
        if i.endswith(".defense_metrics")
    }
    assert defense_inputs(pipelines["reporting"]) == set(DEFAULT_ATTACKS)
    assert (
        defense_inputs(pipelines["reporting_full"])
        == defense_inputs(pipelines["full"])
        == set(ATTACK_NAMESPACES)
    )
    assert defense_inputs(pipelines["__default__"]) == set(DEFAULT_ATTACKS)
    assert {"report_html", "defense_report", "split_report"} <= pipelines[
        "__default__"
    ].all_outputs()
    # CGD and the clean-data defenses alone, every attack: no peer that trains from scratch
    clean_data = {n.name.split(".")[1] for n in pipelines["cgd_unlearn_clean_data"].nodes}
    assert {
        "fine_prune_cgd",
        "adversarial_neuron_pruning_oracle",
        "mode_connectivity_repair_cgd",
        "implicit_backdoor_unlearning_oracle",
    } <= clean_data
    assert not {"retrain_on_clean_subset", "anti_backdoor_learning"} & clean_data
    assert {n.namespace for n in pipelines["cgd_unlearn_clean_data"].nodes} == set(
        ATTACK_NAMESPACES
    )
