"""Dask cluster configuration: dask.yml, the local cluster's size, and the SLURM job script."""

from __future__ import annotations

import pytest
import yaml

from cgd_kedro.cluster import (
    DaskConfig,
    SlurmClusterConfig,
    load_dask_config,
    local_cluster_size,
    slurm_cluster,
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
