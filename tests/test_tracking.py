"""cgd_kedro.tracking: metric names and values, artefacts, the project's default store."""

from __future__ import annotations

import json

import pytest

from cgd_kedro.tracking import default_tracking_uri, log_run_outputs, metric_items, metric_prefix


def test_metric_names_follow_the_dataset_and_keep_only_finite_numbers():
    metrics = {
        "cgd": {"asr": 0.01, "clean_acc": 0.9, "curve": [{"t": 0.1}]},
        "none": {"asr": 1, "ok": True, "nan": float("nan")},
    }
    assert dict(metric_items(metrics, metric_prefix("badnets.defense_metrics"))) == {
        "badnets/defense/cgd/asr": 0.01,
        "badnets/defense/cgd/clean_acc": 0.9,
        "badnets/defense/none/asr": 1.0,
    }
    assert metric_prefix("reference_clip_metrics") == "reference_clip"
    assert metric_prefix("clip_badnet.clip_defense_metrics") == "clip_badnet/clip_defense"


def test_outputs_are_logged_as_metrics_and_files(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(tmp_path))
    assert (tmp_path / "data/09_tracking").is_dir()
    files = {
        "badnets.split_metrics": tmp_path / "split_metrics.json",
        "badnets.entropy_map": tmp_path / "entropy_map.png",
        "report_html": tmp_path / "report.html",
        "badnets.cgd_split": tmp_path
        / "cgd_split.safetensors",  # neither a metric nor a report file
    }
    files["badnets.split_metrics"].write_text(
        json.dumps({"auroc_combined": 0.98, "clean_size": 6800})
    )
    for name in ("badnets.entropy_map", "report_html", "badnets.cgd_split"):
        files[name].write_bytes(b"x")
    mlflow.set_tracking_uri(default_tracking_uri(tmp_path))
    # its own experiment: the process's active one (set by earlier sessions) lives in another store
    mlflow.set_experiment("tracking-test")
    with mlflow.start_run() as run:
        assert log_run_outputs(files) == (2, 2)
    client = mlflow.MlflowClient()
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged == {
        "badnets/split/auroc_combined": pytest.approx(0.98),
        "badnets/split/clean_size": 6800.0,
    }
    paths = {
        a.path
        for folder in ("badnets", "report")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert paths == {"badnets/entropy_map.png", "report/report.html"}


def test_sessions_in_one_process_get_a_run_each_and_a_refused_one_gets_none(tmp_project):
    """Each session is its own MLflow run, closed at its end, so the next session of the same
    process (a notebook, the platform, these tests) never logs into it; the parameter check runs
    before kedro-mlflow opens a run, so a refused run leaves none."""
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.config import ParameterError

    bootstrap_project(tmp_project)
    tiny = {
        "dataset": {"world": {"n_train": 200, "n_test": 80}},
        "victim": {"training": {"epochs": 1}},
    }
    ids = []
    for seed in (0, 1):
        with KedroSession.create(
            project_path=tmp_project, runtime_params=tiny | {"runtime": {"seed": seed}}
        ) as session:
            session.run(pipeline_names=["poison"], namespaces=["dataset", "badnets"])
        assert mlflow.active_run() is None
        ids.append(mlflow.last_active_run().info.run_id)
    client = mlflow.MlflowClient()
    runs = [client.get_run(i) for i in ids]
    assert len(set(ids)) == 2 and [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert [r.data.params["runtime.seed"] for r in runs] == ["0", "1"]
    experiment = client.get_experiment_by_name("cgd_kedro").experiment_id
    before = len(client.search_runs([experiment]))
    with (
        pytest.raises(ParameterError, match=r"victim\.training\.epochs = 0"),
        KedroSession.create(
            project_path=tmp_project, runtime_params={"victim": {"training": {"epochs": 0}}}
        ) as session,
    ):
        session.run(pipeline_names=["poison"], namespaces=["dataset", "badnets"])
    assert mlflow.active_run() is None and len(client.search_runs([experiment])) == before
