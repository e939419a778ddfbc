"""Dask cluster configuration: dask.yml, the local cluster's size, and the SLURM job script."""

from __future__ import annotations

import time

import pytest
import yaml

from cgd_kedro.cluster import (
    DaskConfig,
    Job,
    SlurmClusterConfig,
    cell_slots,
    load_dask_config,
    local_cluster_size,
    slurm_cluster,
    submit_as_workers_free,
    workers_have_gpus,
)
from cgd_kedro.config import ParameterError


def test_dask_yml_is_read_per_environment_and_checked(tmp_project):
    assert load_dask_config(tmp_project).scheduler is None  # conf/base/dask.yml: a local cluster
    (tmp_project / "conf" / "local" / "dask.yml").write_text(
        yaml.safe_dump({"dask": {"scheduler": "tcp://10.0.0.5:8786"}})
    )
    config = load_dask_config(tmp_project)
    # the rest from base
    assert config.scheduler == "tcp://10.0.0.5:8786" and config.slurm.cores == 8
    with pytest.raises(
        ParameterError, match=r"dask\.slurm\.gpus = -1: must be greater than or equal to 0"
    ):
        DaskConfig.from_params({"slurm": {"gpus": -1}})
    with pytest.raises(
        ParameterError,
        match=r"dask\.local\.n_worker: unknown parameter; did you mean 'n_workers'\?",
    ):
        DaskConfig.from_params({"local": {"n_worker": 2}})


def test_a_local_cluster_shares_the_cores_among_its_workers(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setattr("cgd_kedro.cluster.gpu_count", lambda: 0)
    config = DaskConfig().local
    assert local_cluster_size(config) == (16, 1) and local_cluster_size(config, 4) == (4, 4)
    monkeypatch.setattr("cgd_kedro.cluster.gpu_count", lambda: 2)
    assert local_cluster_size(config) == (2, 8)  # one worker per GPU, 8 torch threads each


def test_the_slurm_job_script_asks_for_what_dask_yml_says(tmp_path):
    pytest.importorskip("dask_jobqueue")
    config = SlurmClusterConfig(
        queue="gpu",
        account="lab",
        cores=8,
        memory="64GB",
        gpus=2,
        walltime="08:00:00",
        jobs=4,
        job_extra_directives=["--constraint=a100"],
        job_script_prologue=["source ~/venv/bin/activate"],
        log_directory=str(tmp_path / "slurm_logs"),
    )
    cluster = slurm_cluster(config, submit=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A lab",
        "#SBATCH -t 08:00:00",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --constraint=a100",
        "export OMP_NUM_THREADS=4",
        "source ~/venv/bin/activate",
        "--resources GPU=1",
        "--nworkers 2",
    ):
        assert line in script, (line, script)


def _timed_sleep(seconds: float) -> tuple[float, float, str]:
    from distributed import get_worker

    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic(), get_worker().address


def test_jobs_are_submitted_as_workers_free_so_none_waits_behind_a_busy_worker():
    from distributed import Client, LocalCluster

    # One long job and three short ones on two workers: the short ones must all run on the free
    # worker while the long one runs, none queued behind it (all submitted at once, Dask can
    # hand one to the busy worker), and never more jobs in flight than workers.
    durations = {"long": 3.0, "a": 0.3, "b": 0.3, "c": 0.3}
    jobs = [
        Job(name, _timed_sleep, (seconds,), key=f"job-{name}")
        for name, seconds in durations.items()
    ]
    asked, assigned = [], []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster,
        Client(cluster) as client,
    ):

        def slots() -> int:
            asked.append(cell_slots(client, gpus=False))
            assigned.append(sum(map(len, client.processing().values())))  # tasks given to workers
            return asked[-1]

        runs = {
            tag: future.result()
            for tag, future, _ in submit_as_workers_free(client, jobs, slots, poll_s=0.2)
        }
    assert set(runs) == set(durations) and set(asked) == {2}
    assert max(assigned) == 2, assigned  # never a job parked on a busy worker
    _, long_end, long_worker = runs["long"]
    for name in "abc":
        start, end, worker = runs[name]
        assert worker != long_worker and end < long_end, (name, runs)
    spans = sorted((start, end) for start, end, _ in runs.values())
    for i, (start, _) in enumerate(spans):  # jobs running at each start, itself included
        assert sum(s <= start < e for s, e in spans[: i + 1]) <= 2, spans


def test_cells_ask_for_a_gpu_when_the_workers_have_one_or_slurm_jobs_will():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cpus,
        Client(cpus) as client,
    ):
        assert not workers_have_gpus(client) and cell_slots(client, gpus=False) == 2
        assert workers_have_gpus(client, slurm_gpus=1)  # GPU jobs still pending
        assert cell_slots(client, gpus=True) == 0  # none of these workers can take a GPU cell
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, resources={"GPU": 1}
        ) as gpus,
        Client(gpus) as client,
    ):
        assert workers_have_gpus(client) and cell_slots(client, gpus=True) == 2
