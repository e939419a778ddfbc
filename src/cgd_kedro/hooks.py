"""Project hooks."""

from __future__ import annotations

import logging
import resource
import time

import torch
from kedro.framework.hooks import hook_impl

from cgd_kedro.accelerate import configure
from cgd_kedro.input_check import check_inputs_exist
from cgd_kedro.parameters import RuntimeConfig, check_run_parameters
from cgd_kedro.run_records import (
    COMPLETE,
    FAILED,
    RunRecords,
    choose_input_versions,
    describe_inputs,
    finish_record,
    outputs_written,
    start_record,
)

logger = logging.getLogger(__name__)


def peak_memory() -> str:
    """This process's peak resident memory, and its peak GPU memory when CUDA was used."""
    text = (
        f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB resident"
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        text += f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return text


def _project_pipelines() -> dict:
    """The project's pipelines, one per package, those that run only on request last."""
    # imported here, not at the top: settings.py imports this module
    from cgd_kedro.pipeline_registry import ON_REQUEST, find_all_pipelines

    pipelines = find_all_pipelines()
    return dict(sorted(pipelines.items(), key=lambda item: (item[0] in ON_REQUEST, item[0])))


class ParameterCheckHooks:
    """Check every parameter the run will use before the first node starts.

    A bad value therefore stops the run before any data is generated or model trained, and,
    since nothing is saved, earlier versioned outputs stay as they were.
    """

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens its MLflow run
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        namespaces = {node.namespace.split(".")[0] for node in pipeline.nodes if node.namespace}
        builds_reference_clip = any(
            node.name == "clip.build_reference_clip" for node in pipeline.nodes
        )
        check_run_parameters(catalog.load("parameters"), namespaces, builds_reference_clip)


class RunRecordHooks:
    """Keep runs from mixing (``cgd_kedro.run_records``): pin each input to the newest version
    written by a complete run, refuse the run if an input has nothing to load
    (``cgd_kedro.input_check``), and record what the run read and wrote, and whether it finished.

    Registered first in ``settings.HOOKS`` so that pluggy, which calls hooks last-registered
    first, runs it after the parameter check: a run refused for a bad parameter leaves no record.
    """

    def __init__(self) -> None:
        self.records: RunRecords | None = None
        self.version = ""
        self.record: dict = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        self.records = RunRecords(context.project_path)

    @hook_impl(tryfirst=True)  # its refusals too come before any MLflow run
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self.version = run_params["run_id"]
        resume_run = (catalog.load("parameters").get("runtime") or {}).get("resume_run")
        chosen = choose_input_versions(catalog, pipeline.inputs(), self.records, resume_run)
        check_inputs_exist(catalog, pipeline, _project_pipelines)
        self.record = start_record(run_params, describe_inputs(catalog, chosen))
        self.records.write(self.version, self.record)
        sources = sorted({entry.version for entry in chosen.values()})
        logger.info(
            "Run %s: reading %d versioned input(s) from run(s) %s; record in %s",
            self.version,
            len(chosen),
            ", ".join(sources) or "-",
            self.records.folder / f"{self.version}.json",
        )

    def _finish(self, status: str, pipeline, catalog, error: BaseException | None = None) -> None:
        if not self.record:  # before_pipeline_run did not get as far as writing it
            return
        outputs = outputs_written(catalog, pipeline.all_outputs(), self.version)
        self.records.write(self.version, finish_record(self.record, status, outputs, error))
        self.record = {}

    @hook_impl
    def after_pipeline_run(self, pipeline, catalog) -> None:
        self._finish(COMPLETE, pipeline, catalog)

    @hook_impl
    def on_pipeline_error(self, error, pipeline, catalog) -> None:
        self._finish(FAILED, pipeline, catalog, error)


class AccelerationHooks:
    """Apply the run's ``runtime.precision`` and ``runtime.compile`` (the CUDA fast path, see
    ``cgd_kedro.accelerate``) before its first node; nothing changes on the CPU."""

    @hook_impl
    def before_pipeline_run(self, catalog) -> None:
        run = RuntimeConfig.from_params(dict(catalog.load("parameters").get("runtime") or {}))
        configure(run.precision, run.compile)


class NodeTimingHooks:
    """Log the run's wall time and its slowest nodes when the run ends.

    Node times include loading inputs and saving outputs, as a user waiting on the run sees them.
    """

    def __init__(self, slowest: int = 10) -> None:
        self.slowest = slowest
        self.run_started = 0.0
        self.node_started: dict[str, float] = {}
        self.node_seconds: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self) -> None:
        self.run_started = time.perf_counter()
        self.node_started.clear()
        self.node_seconds.clear()

    @hook_impl
    def before_dataset_loaded(self, node) -> None:  # the first input load starts the node's clock
        if node is not None:
            self.node_started.setdefault(node.name, time.perf_counter())

    @hook_impl
    def before_node_run(self, node) -> None:
        self.node_started.setdefault(node.name, time.perf_counter())

    @hook_impl
    def after_dataset_saved(self, node) -> None:  # the last output save stops it
        if node is not None and node.name in self.node_started:
            self.node_seconds[node.name] = time.perf_counter() - self.node_started[node.name]

    @hook_impl
    def after_node_run(self, node) -> None:
        self.node_seconds.setdefault(node.name, time.perf_counter() - self.node_started[node.name])

    @hook_impl
    def after_pipeline_run(self) -> None:
        logger.info(self.summary())

    def summary(self) -> str:
        """The run's wall time and a table of its ``slowest`` nodes (seconds, share of the run)."""
        total = time.perf_counter() - self.run_started
        ranked = sorted(self.node_seconds.items(), key=lambda item: item[1], reverse=True)[
            : self.slowest
        ]
        lines = [
            f"Run finished in {total / 60:.1f} min ({len(self.node_seconds)} nodes); "
            f"{peak_memory()}; slowest nodes:"
        ]
        lines += [
            f"  {seconds:8.1f} s  {100 * seconds / max(total, 1e-9):5.1f} %  {name}"
            for name, seconds in ranked
        ]
        return "\n".join(lines)
