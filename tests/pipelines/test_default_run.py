"""``kedro run`` (the ``__default__`` pipeline, what ``make run`` runs) end to end
at a tiny size."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from test_abd_defense_pipeline import tiny_abd_parameters
from test_cgd_unlearn_pipeline import TINY_DEFENSES

from cgd_kedro.pipeline_registry import DEFAULT_CLIP_ATTACKS
from cgd_kedro.pipelines.cgd_robustness.pipeline import DEFAULT_ROBUSTNESS_ATTACKS
from cgd_kedro.pipelines.poison.pipeline import DEFAULT_ATTACKS


@pytest.mark.slow
def test_default_run_writes_every_pipelines_outputs_for_the_default_attacks(tmp_project):
    bootstrap_project(tmp_project)
    params = tiny_abd_parameters() | TINY_DEFENSES
    with KedroSession.create(project_path=tmp_project, runtime_params=params) as session:
        session.run()
    reporting = tmp_project / "data/08_reporting/embedded"
    folders = {
        p.name
        for p in reporting.iterdir()
        if p.is_dir() and not p.name.endswith((".json", ".csv", ".html", ".md"))
    }
    assert folders == set(DEFAULT_ATTACKS) | set(DEFAULT_CLIP_ATTACKS) | {"figures"}
    for attack in DEFAULT_ATTACKS:
        for name in (
            "attack_metrics.json",
            "split_metrics.json",
            "entropy_map.png",
            "defense_metrics.json",
        ):
            assert len(list((reporting / attack / name).iterdir())) == 1, (attack, name)
        # CGD with a backdoored CLIP as reference: the default run repeats
        # it on DEFAULT_ROBUSTNESS_ATTACKS
        assert (reporting / attack / "cgd_robustness.json").exists() == (
            attack in DEFAULT_ROBUSTNESS_ATTACKS
        ), attack
    # no default attack builds its trigger from the clean model, so
    # the default run does not train it
    assert not (tmp_project / "data/06_models/embedded/clean_model.safetensors").exists()
    assert [
        p.name.split("-")[0] for p in (tmp_project / "data/06_models/embedded/cache").iterdir()
    ] == ["reference_clip"]
    report = pd.read_csv(next((reporting / "defense_report.csv").rglob("*.csv")))
    assert (
        set(report["attack"]) == {"badnets", "blended"}
        and len(report) == 8
        and set(report["model"]) == {"classifier"}
    )
    # CGD's clean-data peers on BadNets only (DEFAULT_PEER_ATTACKS): none, CGD, FP and ANP fed by
    # CGD or oracle data; Blended: none and CGD. No CLIP attack (ABD:
    # `kedro run --pipelines abd_quick`).
    assert sorted(report.loc[report["attack"] == "badnets", "defense"]) == [
        "anp_cgd",
        "anp_oracle",
        "cgd",
        "fp_cgd",
        "fp_oracle",
        "none",
    ]
    assert sorted(report.loc[report["attack"] == "blended", "defense"]) == ["cgd", "none"]
    html = next((reporting / "report.html").rglob("*.html")).read_text()
    assert (
        html.count("<img") == 3 and "No CLIP attack in this run" in html
    )  # classifier figures only
    zero_shot = json.loads(
        next((reporting / "reference_clip_metrics.json").rglob("*.json")).read_text()
    )
    assert zero_shot["pretraining"]["pairs"] == 96 and 0 <= zero_shot["zero_shot_acc"] <= 1
