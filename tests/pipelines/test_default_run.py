"""``kedro run`` (the ``__default__`` pipeline, what ``make run`` runs) end to end at a tiny
size."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT_ROOT, make_project
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from test_abd_defense_pipeline import tiny_abd_parameters
from test_cgd_unlearn_pipeline import TINY_DEFENSES

from cgd_kedro.pipeline_registry import DEFAULT_CLIP_ATTACKS
from cgd_kedro.pipelines.cgd_robustness.pipeline import DEFAULT_ROBUSTNESS_ATTACKS
from cgd_kedro.pipelines.poison.pipeline import DEFAULT_ATTACKS

PARAMS = tiny_abd_parameters() | TINY_DEFENSES


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """The default run at a tiny size, in a throw-away project (shared by this module's tests)."""
    project = make_project(tmp_path_factory.mktemp("default_run"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store, as for a user
        bootstrap_project(project)
        with KedroSession.create(project_path=project, runtime_params=PARAMS) as session:
            session.run()
    return project


@pytest.mark.slow
def test_default_run_writes_every_pipelines_outputs_for_the_default_attacks(default_run):
    tmp_project, params = default_run, PARAMS
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
    cache = tmp_project / "data/06_models/embedded/cache"
    # one entry (and the .locks folder of the cache's per-entry locks)
    assert [p.name.split("-")[0] for p in cache.iterdir() if p.name != ".locks"] == [
        "reference_clip"
    ]
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
    # classifier figures only
    assert html.count("<img") == 3 and "No CLIP attack in this run" in html
    zero_shot = json.loads(
        next((reporting / "reference_clip_metrics.json").rglob("*.json")).read_text()
    )
    assert zero_shot["pretraining"]["pairs"] == 96 and 0 <= zero_shot["zero_shot_acc"] <= 1

    # The run is an MLflow run in the project's local store, with its metrics, parameters and files.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_project / 'data/09_tracking/mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("cgd_kedro").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["cgd.version"] == next((reporting / "report.html").iterdir()).name
    metrics = json.loads(
        next((reporting / "badnets/defense_metrics.json").rglob("*.json")).read_text()
    )
    split = json.loads(next((reporting / "badnets/split_metrics.json").rglob("*.json")).read_text())
    assert run.data.metrics["badnets/defense/cgd/asr"] == pytest.approx(metrics["cgd"]["asr"])
    assert run.data.metrics["badnets/defense/fp_oracle/clean_acc"] == pytest.approx(
        metrics["fp_oracle"]["clean_acc"]
    )
    assert run.data.metrics["badnets/split/auroc_combined"] == pytest.approx(
        split["auroc_combined"]
    )
    assert run.data.params["victim.training.epochs"] == str(params["victim"]["training"]["epochs"])
    artifacts = {
        a.path
        for folder in ("badnets", "report")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "badnets/entropy_map.png",
        "report/report.html",
        "report/defense_report.csv",
    } <= artifacts


@pytest.mark.slow
def test_the_exploration_notebook_runs_on_the_default_run(default_run):
    """notebooks/explore_cgd.ipynb, executed as a user would open it, on the tiny default run."""
    import nbclient
    import nbformat

    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "explore_cgd.ipynb", as_version=4)
    # committed clean
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    env = {
        "CGD_PROJECT": str(default_run),
        "CGD_ATTACK": "badnets",
        "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
    }
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(PROJECT_ROOT / "notebooks")}},
        ).execute()
    finally:
        for key, value in previous.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the entropy map and CGD's unlearning curve
    # text as shown (kedro.ipython's rich printing colours numbers: drop the ANSI codes)
    tables = [
        re.sub(r"\x1b\[[0-9;]*m", "", o["data"]["text/plain"])
        for o in outputs
        if o.output_type == "execute_result"
    ]
    assert any("auroc_combined" in table for table in tables)  # the split's metrics
    # the defense table shows the run's defense_report: CGD's row, rounded to 3 places
    report = pd.read_csv(
        next((default_run / "data/08_reporting/embedded/defense_report.csv").rglob("*.csv"))
    )
    cgd = report[(report["attack"] == "badnets") & (report["defense"] == "cgd")].iloc[0]
    [defenses] = [table for table in tables if "seconds" in table and "der" in table]
    [row] = [
        line.split() for line in defenses.splitlines() if line.split()[1:3] == ["badnets", "cgd"]
    ]
    assert [float(v) for v in row[3:6]] == [round(cgd[k], 3) for k in ("clean_acc", "asr", "ra")]


@pytest.mark.slow
def test_kedro_run_with_tags_report_rebuilds_the_report_alone(default_run):
    """``kedro run --tags report`` re-renders the tables and figures from the saved artefacts."""
    models = sorted(
        p.relative_to(default_run) for p in (default_run / "data/06_models").rglob("*.safetensors")
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(default_run)
        bootstrap_project(default_run)
        with KedroSession.create(project_path=default_run, runtime_params=PARAMS) as session:
            session.run(tags=["report"])
    reporting = default_run / "data/08_reporting/embedded"
    assert len(list((reporting / "report.html").iterdir())) == 2  # a new version of the report
    assert len(list((reporting / "badnets/defense_metrics.json").iterdir())) == 1  # no evaluation
    assert (
        sorted(
            p.relative_to(default_run)
            for p in (default_run / "data/06_models").rglob("*.safetensors")
        )
        == models
    )
