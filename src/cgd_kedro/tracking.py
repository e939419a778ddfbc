"""Experiment tracking: each ``kedro run`` is an MLflow run, through kedro-mlflow.

kedro-mlflow (a Kedro plugin: installing it registers its hooks) opens one MLflow run per
``kedro run``, tags it with the command, and logs the parameters each node reads
(``conf/base/mlflow.yml``). This module adds what only this project knows:

- where runs go when nothing else is said: ``sqlite:///<project>/data/09_tracking/mlflow.db``, one
  local file and nothing to start (MLflow 3 refuses its older folder store). ``MLFLOW_TRACKING_URI``
  or ``server.mlflow_tracking_uri`` in ``conf/<env>/mlflow.yml`` send runs to a tracking server;
- the metrics: every number in the run's ``*metrics`` outputs (attack, split, defense and CLIP
  defense metrics) as ``<attack>/<what>/<leaf>``, e.g. ``badnets/defense/cgd/asr``,
  ``badnets/split/auroc_combined``;
- the artefacts: the figures, CSV tables and the HTML report the run saved, under ``<attack>/``
  (or ``report/`` for the run-wide ones), and the run's data version as the tag ``cgd.version``
  (the folder name of every versioned output, and of its run record in ``data/09_runs``);
- grid cells as child runs of their grid's run (``open_grid_run``, ``cell_run``).

Everything is logged from the driver when the run ends (or fails), from the files the run wrote,
so it works the same with the DaskRunner, whose nodes run in other processes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, DataCatalog
from omegaconf import OmegaConf

from cgd_kedro.run_records import outputs_written

log = logging.getLogger(__name__)

TRACKING_FOLDER = Path("data") / "09_tracking"
ARTIFACT_SUFFIXES = (".png", ".csv", ".html", ".md")


def default_tracking_uri(project_path: str | Path) -> str:
    """The project's local tracking store: one SQLite file under ``data/09_tracking``."""
    folder = Path(project_path).resolve() / TRACKING_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def default_artifact_location(project_path: str | Path) -> str:
    return (Path(project_path).resolve() / TRACKING_FOLDER / "artifacts").as_uri()


def metric_items(value: Any, prefix: str) -> Iterator[tuple[str, float]]:
    """Every finite number in a nested dict as ``(prefix/key/.../leaf, value)``; lists (curves,
    histories), strings and booleans are left out."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from metric_items(item, f"{prefix}/{key}")
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        yield prefix, float(value)


def metric_prefix(dataset_name: str) -> str:
    """``badnets.defense_metrics`` -> ``badnets/defense``;
    ``reference_clip_metrics`` -> ``reference_clip``."""
    *namespace, name = dataset_name.split(".")
    return "/".join([*namespace, name.removesuffix("_metrics")])


def run_outputs(catalog: DataCatalog, names: Iterable[str], version: str) -> dict[str, Path]:
    """The files of the versioned outputs among ``names`` that this run (``version``) wrote."""
    files = {}
    for name, entry in outputs_written(catalog, names, version).items():
        dataset = catalog.get(name)
        assert isinstance(dataset, AbstractVersionedDataset)
        files[name] = Path(str(dataset._get_versioned_path(entry["version"])))
    return files


def log_run_outputs(files: Mapping[str, Path]) -> tuple[int, int]:
    """Log the metrics and artefacts among ``files`` to the active MLflow run; returns how many."""
    import mlflow

    metrics: dict[str, float] = {}
    artifacts = 0
    for name, path in sorted(files.items()):
        if name.endswith("metrics") and path.suffix == ".json":
            metrics.update(metric_items(json.loads(path.read_text()), metric_prefix(name)))
        elif path.suffix in ARTIFACT_SUFFIXES:
            *namespace, _ = name.split(".")
            mlflow.log_artifact(str(path), artifact_path="/".join(namespace) or "report")
            artifacts += 1
    if metrics:
        mlflow.log_metrics(metrics)
    return len(metrics), artifacts


class MlflowTrackingHooks:
    """Point kedro-mlflow at the project's tracking store and log each run's results to its run.

    ``tryfirst``: the store must be chosen before kedro-mlflow reads ``mlflow.yml``, and the
    results logged before kedro-mlflow closes the run.
    """

    def __init__(self) -> None:
        self.version = ""
        self.saved: set[str] = set()

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            config = OmegaConf.create(loader["mlflow"])
        except MissingConfigException:  # no mlflow.yml (a bare project): kedro-mlflow's defaults
            config = OmegaConf.create({})
        if not (config.get("server") or {}).get("mlflow_tracking_uri") and not os.environ.get(
            "MLFLOW_TRACKING_URI"
        ):
            project = context.project_path
            OmegaConf.update(config, "server.mlflow_tracking_uri", default_tracking_uri(project))
            location = "tracking.experiment.create_experiment_kwargs.artifact_location"
            if not OmegaConf.select(config, location):
                OmegaConf.update(config, location, default_artifact_location(project))
        loader["mlflow"] = OmegaConf.to_container(config)

    @hook_impl
    def before_pipeline_run(self, run_params) -> None:
        self.version = run_params["run_id"]
        self.saved.clear()

    @hook_impl
    def after_dataset_saved(self, dataset_name) -> None:
        self.saved.add(dataset_name)  # in this process only (not the DaskRunner's workers)

    def _log(self, catalog: DataCatalog, names: Iterable[str]) -> None:
        try:
            import mlflow
        except ImportError:  # tracking is optional at run time
            return
        if (
            mlflow.active_run() is None
        ):  # kedro-mlflow absent, or tracking disabled for the pipeline
            return
        mlflow.set_tag("cgd.version", self.version)
        metrics, artifacts = log_run_outputs(run_outputs(catalog, names, self.version))
        log.info(
            "MLflow run %s: %d metrics, %d artefacts (%s)",
            mlflow.active_run().info.run_id,
            metrics,
            artifacts,
            mlflow.get_tracking_uri(),
        )

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, pipeline, catalog) -> None:
        self._log(catalog, pipeline.all_outputs())

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, catalog) -> None:
        self._log(catalog, self.saved)  # what was saved before the failure


EXPERIMENT = (
    "cgd_kedro"  # kedro-mlflow's default experiment: the package name (conf/base/mlflow.yml)
)


def open_grid_run(project_path: str | Path, root: Path, name: str) -> dict | None:
    """The grid's MLflow run (reopened when the grid resumes: its id is kept in
    ``<grid>/mlflow_run.json``), the parent of its cells' runs. ``{tracking_uri, run_id}``, or
    None without MLflow."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        return None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(project_path)
    client = MlflowClient(tracking_uri=uri)
    saved = root / "mlflow_run.json"
    if saved.exists():
        known = json.loads(saved.read_text())
        if known.get("tracking_uri") == uri:
            client.update_run(known["run_id"], status="RUNNING")
            return known
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            EXPERIMENT, artifact_location=default_artifact_location(project_path)
        )
    )
    run = client.create_run(experiment_id, run_name=f"grid {name}", tags={"cgd.grid": name})
    info = {"tracking_uri": uri, "run_id": run.info.run_id}
    root.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(info))
    return info


def close_grid_run(info: dict | None, files: Iterable[Path], failed: int) -> None:
    """Attach the grid's summary files to its run and close it (FAILED while any cell failed)."""
    if info is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=info["tracking_uri"])
    for path in files:
        if path.exists():
            client.log_artifact(info["run_id"], str(path))
    client.set_terminated(info["run_id"], status="FAILED" if failed else "FINISHED")


def cell_run(tracking: dict | None, run_name: str):
    """In a grid cell: a context manager opening the cell's MLflow run as a child of the grid's
    run; kedro-mlflow finds it active and logs into it. A no-op outside a grid."""
    import contextlib

    if not tracking:
        return contextlib.nullcontext()
    import mlflow

    mlflow.set_tracking_uri(tracking["tracking_uri"])
    experiment_id = mlflow.get_run(tracking["run_id"]).info.experiment_id
    return mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, parent_run_id=tracking["run_id"]
    )
