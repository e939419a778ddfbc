"""``DaskRunner``: a Kedro runner that runs a pipeline's independent nodes in parallel on Dask.

    kedro run --runner cgd_kedro.runner.DaskRunner --pipelines poison

follows Kedro's Dask deployment guide: every node becomes one Dask task whose dependencies are the
tasks of the nodes it reads from, so Dask runs, e.g., the thirteen attack namespaces of ``poison``
side by side. The cluster is ``conf/<env>/dask.yml``'s (``dask.scheduler``: a running scheduler's
address; none: a ``LocalCluster`` sized to the machine, see ``cgd_kedro.cluster``); the environment
variable ``CGD_DASK_SCHEDULER`` overrides it.

Data that crosses a node boundary in memory (the catalog's ``MemoryDataset`` s) travels as the
producing task's result: the task returns its in-memory outputs and Dask hands them to the tasks
that read them, worker to worker. Saved datasets are written and read by the workers themselves, so
the project folder must be visible to every worker (always true on one machine; a shared file
system on a cluster).

Pipeline hooks (parameter checks, run records, timing summary) run once, in the driver; node and
dataset hooks run in the worker that runs the node.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner
from kedro.runner.task import Task

from cgd_kedro.cluster import load_dask_config, open_client, worker_gpu

log = logging.getLogger(__name__)


def _prepare_worker(package_name: str | None, project_path: str) -> Any:
    """Configure the Kedro project in this worker process (once), move into the project folder
    (parameters such as ``runtime.cache_dir`` are relative to it) and return a hook manager with
    the project's hooks."""
    from kedro.framework.hooks.manager import _create_hook_manager, _register_hooks
    from kedro.framework.project import PACKAGE_NAME, configure_project, settings

    if package_name and package_name != PACKAGE_NAME:
        configure_project(package_name)
    os.chdir(project_path)
    gpu = worker_gpu()
    if gpu is not None:
        import torch

        torch.cuda.set_device(gpu)
    hook_manager = _create_hook_manager()
    _register_hooks(hook_manager, settings.HOOKS)
    return hook_manager


def run_node_task(
    node,
    catalog,
    memory_outputs: frozenset[str],
    package_name: str | None,
    project_path: str,
    is_async: bool,
    run_id: str | None,
    *upstream: dict,
) -> dict:
    """One node on a Dask worker: the in-memory inputs come from ``upstream`` (the results of the
    tasks it depends on), saved ones from disk; returns
    ``{name: data}`` of its in-memory outputs."""
    for outputs in upstream:
        for name, data in outputs.items():
            if name in node.inputs:
                catalog[name] = MemoryDataset(data, copy_mode="assign")
    for name in memory_outputs & set(node.outputs):
        catalog[name] = MemoryDataset(copy_mode="assign")
    hook_manager = _prepare_worker(package_name, project_path)
    Task(
        node=node, catalog=catalog, is_async=is_async, hook_manager=hook_manager, run_id=run_id
    ).execute()
    return {name: catalog.load(name) for name in node.outputs if name in memory_outputs}


class DaskRunner(AbstractRunner):
    """Runs the nodes of a pipeline as Dask tasks (see the module docstring).

    Args:
        client: a ``distributed.Client`` to use (its cluster is left running); None: open one from
            ``address``, ``CGD_DASK_SCHEDULER`` or ``conf/<env>/dask.yml``, closed after the run.
        address: a scheduler address, ``local`` or ``slurm``.
        n_workers: workers of a LocalCluster it starts (default: ``dask.local.n_workers``).
        env: the Kedro environment whose ``dask.yml`` is read (default: ``local`` over ``base``).
        is_async: load and save node inputs and outputs in threads (Kedro's option).
    """

    def __init__(
        self,
        is_async: bool = False,
        client=None,
        address: str | None = None,
        n_workers: int | None = None,
        env: str | None = None,
    ) -> None:
        super().__init__(is_async=is_async)
        self._client = client
        self._address = address or os.environ.get("CGD_DASK_SCHEDULER") or None
        self._n_workers = n_workers
        self._env = env or os.environ.get("KEDRO_ENV")

    def _get_executor(self, max_workers: int):  # the nodes go to Dask, not to an Executor
        return None

    def _run(
        self, pipeline: Pipeline, catalog, hook_manager=None, run_id: str | None = None
    ) -> None:
        if self._client is not None:
            self._run_on(self._client, pipeline, catalog, run_id)
            return
        config = load_dask_config(Path.cwd(), self._env)
        with open_client(config, self._address, self._n_workers) as client:
            self._run_on(client, pipeline, catalog, run_id)

    def _run_on(self, client, pipeline: Pipeline, catalog, run_id: str | None) -> None:
        from distributed import as_completed
        from kedro.framework.project import PACKAGE_NAME

        log.info(
            "dask: %d node(s) on %s (dashboard %s)",
            len(pipeline.nodes),
            client.scheduler.address,
            client.dashboard_link,
        )
        memory = frozenset(
            name
            for name in pipeline.datasets()
            if not name.startswith("params:")
            and name != "parameters"
            and isinstance(catalog.get(name, fallback_to_runtime_pattern=True), MemoryDataset)
        )
        for name in memory:  # the driver's copy holds no data: it travels between tasks
            catalog[name] = MemoryDataset(copy_mode="assign")
        dependencies = pipeline.node_dependencies
        # Keys unique to this run: a key the client still knows (a previous run of the same node
        # objects whose release has not reached the scheduler yet) would hand back that run's
        # future, i.e. stale outputs, instead of running the node again.
        run_token = uuid.uuid4().hex
        futures: dict[Any, Any] = {}
        started = time.perf_counter()
        for node in pipeline.nodes:  # topologically sorted: a node's parents are submitted first
            parents = [
                futures[parent] for parent in sorted(dependencies[node], key=lambda n: n.name)
            ]
            futures[node] = client.submit(
                run_node_task,
                node,
                catalog,
                memory,
                PACKAGE_NAME,
                str(Path.cwd()),
                self._is_async,
                run_id,
                *parents,
                key=f"{node.name}-{run_token}",
                pure=False,
                retries=0,
            )
        by_future = {future: node for node, future in futures.items()}
        for done, future in enumerate(as_completed(list(futures.values())), start=1):
            node = by_future[future]
            try:
                outputs = future.result()
            except Exception:
                for other in futures.values():
                    other.cancel()
                log.error("dask: node %s failed; the nodes still running were cancelled", node.name)
                raise
            for name, data in outputs.items():
                # free outputs reach the caller like the SequentialRunner's
                if name in pipeline.outputs():
                    catalog[name] = MemoryDataset(data, copy_mode="assign")
            log.info(
                "Completed node: %s (%d of %d, %.0f s into the run)",
                node.name,
                done,
                len(futures),
                time.perf_counter() - started,
            )
