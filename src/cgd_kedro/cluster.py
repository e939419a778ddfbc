"""Dask clusters for ``DaskRunner`` and ``kedro grid``: a ``LocalCluster`` sized to the machine, an
existing ``dask scheduler``, or SLURM through dask-jobqueue, configured in ``conf/<env>/dask.yml``.

Workers get ``OMP_NUM_THREADS`` = their share of the cores, so torch on the CPU uses the cores a
worker owns and no more; with GPUs every worker announces the resource ``GPU`` and a task asking
for one runs on the GPU ``worker_gpu()`` names.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cgd_kedro.config import ParameterModel, quiet_loader

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """A cluster could not be started or reached."""


class LocalClusterConfig(ParameterModel):
    """``dask.local``: the cluster started on this machine when no scheduler is given."""

    n_workers: int | None = Field(
        None, ge=1, le=1024, description="worker processes (null: one per GPU, else one per core)"
    )
    memory_limit: str = Field(
        "auto", description="memory per worker, e.g. '8GB' (auto: the machine's memory shared out)"
    )
    dashboard_address: str = Field(
        ":8787", description="where the dashboard listens (':0' picks a free port)"
    )


class SlurmClusterConfig(ParameterModel):
    """``dask.slurm``: workers started as SLURM jobs by dask-jobqueue's ``SLURMCluster``."""

    queue: str | None = Field(None, description="partition (sbatch -p)")
    account: str | None = Field(None, description="account to charge (sbatch -A)")
    cores: int = Field(8, ge=1, le=4096, description="cores per job")
    memory: str = Field("32GB", description="memory per job")
    gpus: int = Field(0, ge=0, le=64, description="GPUs per job (--gres=gpu:N); one worker per GPU")
    walltime: str = Field("04:00:00", description="time limit per job (HH:MM:SS)")
    jobs: int = Field(2, ge=1, le=10_000, description="jobs to submit")
    job_extra_directives: list[str] = Field(
        default_factory=list, description="more #SBATCH lines, e.g. ['--constraint=a100']"
    )
    job_script_prologue: list[str] = Field(
        default_factory=list,
        description=(
            "shell lines run before the worker starts, e.g. ['source ~/cgd/.venv/bin/activate']"
        ),
    )
    log_directory: str = Field("data/09_grid/slurm_logs", description="where the jobs' logs go")


class DaskConfig(ParameterModel):
    """``conf/<env>/dask.yml``: where the Dask cluster comes from."""

    SECTION: ClassVar[str] = "dask"

    scheduler: str | None = Field(
        None,
        description=(
            "address of a running `dask scheduler`, e.g. tcp://10.0.0.5:8786 (null: start one)"
        ),
    )
    local: LocalClusterConfig = Field(
        default_factory=LocalClusterConfig, description="the LocalCluster"
    )
    slurm: SlurmClusterConfig = Field(
        default_factory=SlurmClusterConfig, description="the SLURMCluster of --cluster slurm"
    )


def load_dask_config(project_path: str | Path = ".", env: str | None = None) -> DaskConfig:
    """``dask`` of ``conf/base/dask.yml`` merged with the run environment's
    (``local`` by default)."""
    from kedro.config import OmegaConfigLoader

    loader = quiet_loader(
        OmegaConfigLoader,
        conf_source=str(Path(project_path) / "conf"),
        base_env="base",
        default_run_env="local",
        env=env,
        config_patterns={"dask": ["dask*", "dask*/**"]},
        merge_strategy={"dask": "soft"},
    )
    try:
        section = loader["dask"]
    except KeyError:  # no dask.yml anywhere: the defaults
        section = {}
    return DaskConfig.from_params(section.get("dask", {}))


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no usable torch CUDA: no GPU
        return 0


def local_cluster_size(config: LocalClusterConfig, n_workers: int | None = None) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` on this machine: one worker per GPU when there are
    GPUs, else one per core, unless ``n_workers`` (or ``config.n_workers``) says otherwise."""
    cores = os.cpu_count() or 1
    workers = n_workers or config.n_workers or gpu_count() or cores
    return workers, max(1, cores // workers)


def worker_gpu() -> int | None:
    """The GPU index this Dask worker owns (its number modulo the GPUs here),
    or None without GPUs."""
    from distributed import get_worker

    count = gpu_count()
    if not count:
        return None
    name = get_worker().name
    return (int(name) if isinstance(name, int) or str(name).isdigit() else abs(hash(name))) % count


def _workers_gpu(client) -> list[bool]:
    """For each worker the scheduler knows, whether it announces the resource ``GPU``."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return [bool(w.get("resources", {}).get("GPU")) for w in workers]


def workers_have_gpus(client, slurm_gpus: int = 0) -> bool:
    """Whether grid cells ask for a ``GPU``: the connected workers announce one, or SLURM jobs
    that have not started yet will (``slurm_gpus`` per job)."""
    return bool(slurm_gpus) or any(_workers_gpu(client))


def cell_slots(client, gpus: bool) -> int:
    """Grid cells the cluster can run at once: one per worker (per GPU worker when the workers
    have GPUs), since a cell's torch uses all of its worker's threads."""
    return sum(1 for has_gpu in _workers_gpu(client) if has_gpu or not gpus)


@dataclass(frozen=True)
class Job:
    """One task for ``submit_as_workers_free``: ``function(*args)`` as Dask task ``key``."""

    tag: Any  # handed back with the finished future
    function: Callable
    args: tuple
    key: str
    resources: dict[str, float] | None = None


def submit_as_workers_free(
    client, jobs: Iterable[Job], slots: Callable[[], int], poll_s: float = 5.0
) -> Iterator[tuple[Any, Any, float]]:
    """Run ``jobs`` in order with at most ``slots()`` of them in flight; yield
    ``(tag, future, seconds since submission)`` as each finishes.

    Why not submit them all: the scheduler assigns a task to a worker the moment it is submitted
    (long independent tasks with distinct keys are not "root-ish", so its queuing does not apply),
    and a task queued behind a busy worker waits there while another worker idles. Submitting one
    per free slot leaves the placement to Dask and keeps every worker busy. ``slots()`` is asked
    again every ``poll_s`` seconds, so workers that join later (SLURM jobs) get work.
    """
    from distributed import wait

    waiting = deque(jobs)
    running: dict = {}  # future -> (job, when submitted)
    while waiting or running:
        free = max(1, slots()) - len(running)
        while waiting and free > 0:
            job = waiting.popleft()
            future = client.submit(
                job.function, *job.args, key=job.key, pure=False, resources=job.resources
            )
            running[future] = (job, time.perf_counter())
            free -= 1
        try:
            done = wait(list(running), timeout=poll_s, return_when="FIRST_COMPLETED").done
        except TimeoutError:  # none finished: count the workers again
            continue
        for future in done:
            job, submitted = running.pop(future)
            yield job.tag, future, time.perf_counter() - submitted


def _connect(address: str):
    from distributed import Client

    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as error:
        raise ClusterError(f"dask scheduler {address!r} unreachable: {error}") from error


def slurm_cluster(config: SlurmClusterConfig, submit: bool = True):
    """dask-jobqueue's ``SLURMCluster`` for ``config``; with ``submit``, its ``jobs`` are submitted
    (``submit=False``: nothing is submitted, e.g. to read ``cluster.job_script()``)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as error:  # pragma: no cover (declared in pyproject)
        raise ClusterError(
            "--cluster slurm needs dask-jobqueue: pip install dask-jobqueue"
        ) from error
    processes = max(1, config.gpus)
    threads = max(1, config.cores // processes)
    directives = list(config.job_extra_directives) + (
        [f"--gres=gpu:{config.gpus}"] if config.gpus else []
    )
    cluster = SLURMCluster(
        queue=config.queue,
        account=config.account,
        cores=config.cores,
        memory=config.memory,
        processes=processes,
        walltime=config.walltime,
        job_extra_directives=directives,
        log_directory=config.log_directory,
        job_script_prologue=[f"export OMP_NUM_THREADS={threads}", *config.job_script_prologue],
        worker_extra_args=["--resources", "GPU=1"] if config.gpus else [],
    )
    if submit:
        cluster.scale(jobs=config.jobs)
    return cluster


@contextmanager
def open_client(
    config: DaskConfig, cluster: str | None = None, n_workers: int | None = None
) -> Iterator:
    """A ``distributed.Client`` for ``cluster``: ``local`` (a ``LocalCluster``), ``slurm``, a
    scheduler address, or None (``config.scheduler`` if set, else local). Clusters it
    started are closed on exit."""
    from distributed import Client, LocalCluster

    target = cluster or config.scheduler or "local"
    if target == "local":
        workers, threads = local_cluster_size(config.local, n_workers)
        resources = {"GPU": 1} if gpu_count() else None
        log.info("dask: LocalCluster of %d worker(s), %d torch thread(s) each", workers, threads)
        started = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=config.local.memory_limit,
            dashboard_address=config.local.dashboard_address,
            resources=resources,
            env={"OMP_NUM_THREADS": str(threads)},
        )
    elif target == "slurm":
        started = slurm_cluster(config.slurm)
    else:
        started = None
    client = Client(started) if started is not None else _connect(target)
    try:
        yield client
    finally:
        client.close()
        if started is not None:
            started.close()


__all__ = [
    "ClusterError",
    "DaskConfig",
    "Job",
    "cell_slots",
    "load_dask_config",
    "local_cluster_size",
    "open_client",
    "submit_as_workers_free",
    "worker_gpu",
    "workers_have_gpus",
]
