"""Real ``kedro run`` processes killed (SIGKILL) mid-save and between nodes: no truncated latest
version, no run reading another run's partial outputs, and a rerun that succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from cgd_kedro.pipelines.poison.pipeline import create_pipeline

KILLER = Path(__file__).with_name("killed_kedro_run.py")
TINY = (
    "runtime.device=cpu,dataset.world.n_test=120,dataset.world.n_captions=1,"
    "victim.architecture=compact_cnn,victim.training.epochs=1,victim.training.batch_size=64"
)


def _kedro_run(
    project: Path, n_train: int, *extra: str, kill_at: str | None = None, mode: str = "mid-save"
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(KILLER) if kill_at else "-m",
        *([] if kill_at else ["kedro"]),
        "run",
        "--pipelines",
        "poison",
    ]
    command += ["--params", f"{TINY},dataset.world.n_train={n_train}", *extra]
    env = os.environ | {
        "KEDRO_DISABLE_TELEMETRY": "1",
        "CGD_KILL_AT": kill_at or "",
        "CGD_KILL_MODE": mode,
    }
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def _records(project: Path) -> dict[str, dict]:
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((project / "data/09_runs").glob("*.json"))
    }


def _metrics(project: Path, version: str) -> dict:
    return json.loads(
        (
            project
            / (
                "data/08_reporting/embedded/badnets/attack_metrics.json/"
                f"{version}/attack_metrics.json"
            )
        ).read_text()
    )


def _load_every_output(project: Path, names: set[str]) -> None:
    """Kedro's own 'latest' of every output loads (no truncated file is ever the newest)."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        catalog = session.load_context().catalog
        for name in sorted(names):
            assert catalog.load(name) is not None, name


@pytest.mark.slow
def test_killed_runs_leave_loadable_versions_and_later_runs_read_complete_ones(tmp_project):
    outputs = {
        n
        for n in create_pipeline().only_nodes_with_namespaces(["dataset", "badnets"]).all_outputs()
        if "clean" not in n
    }
    namespaces = ("--namespaces", "dataset,badnets")

    done = _kedro_run(tmp_project, 300, *namespaces)
    assert done.returncode == 0, done.stderr[-3000:]
    [complete] = _records(tmp_project)
    assert _records(tmp_project)[complete]["status"] == "complete"
    assert {"train_set", "badnets.victim_model", "badnets.attack_metrics"} <= set(
        _records(tmp_project)[complete]["outputs"]
    )

    # 1. Killed in the middle of saving the training set (the run's first and largest save).
    killed = _kedro_run(
        tmp_project, 400, *namespaces, kill_at="train_set.safetensors", mode="mid-save"
    )
    assert killed.returncode == -signal.SIGKILL
    versions = sorted(
        (tmp_project / "data/02_intermediate/embedded/train_set.safetensors").iterdir()
    )
    # only a temporary file
    assert len(versions) == 2 and not (versions[-1] / "train_set.safetensors").exists()
    assert [p.name.startswith(".writing-") for p in versions[-1].iterdir()] == [True]
    _load_every_output(tmp_project, outputs)

    # 2. Killed between nodes, after the victim was saved: a new, complete-looking train_set (400
    #    images) and victim exist, but the run never finished.
    killed = _kedro_run(
        tmp_project, 400, *namespaces, kill_at="victim_model.safetensors", mode="after-save"
    )
    assert killed.returncode == -signal.SIGKILL
    statuses = sorted(record["status"] for record in _records(tmp_project).values())
    assert statuses == ["complete", "running", "running"]
    _load_every_output(tmp_project, outputs)

    # 3. The scenario: only BadNets, at the 300-image configuration. Its train_set must be
    #    the complete run's (300 images), not the killed run's newer 400-image one.
    badnets = _kedro_run(tmp_project, 300, "--namespaces", "badnets")
    assert badnets.returncode == 0, badnets.stderr[-3000:]
    latest = max(_records(tmp_project))
    record = _records(tmp_project)[latest]
    assert record["status"] == "complete" and record["inputs"]["train_set"]["version"] == complete
    assert len(record["inputs"]["train_set"]["skipped_incomplete"]) == 1
    assert _metrics(tmp_project, latest)["n_train"] == 300
    # rich wraps lines
    assert "train_set: skipped the newer" in " ".join((badnets.stderr + badnets.stdout).split())

    # 4. A plain rerun of the whole thing succeeds and is complete.
    rerun = _kedro_run(tmp_project, 300, *namespaces)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _records(tmp_project)[max(_records(tmp_project))]["status"] == "complete"
    _load_every_output(tmp_project, outputs)
