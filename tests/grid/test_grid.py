"""``kedro grid``: the spec's errors before any cell starts, then a real grid on a 2-worker
LocalCluster (tiny cells): the mean ± std table, failure isolation, ``--rerun-failed``, resuming a
killed grid, and a cell giving exactly the metrics of the same run made alone with ``kedro run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
from test_cgd_unlearn_pipeline import TINY_CGD
from test_clip_split_pipeline import tiny_clip_parameters

from cgd_kedro.cluster import ClusterError
from cgd_kedro.config import ParameterError
from cgd_kedro.grid.run import plan, run_grid
from cgd_kedro.grid.spec import expand_cells, load_spec

PIPELINES = ["poison", "reference_clip", "clip_split", "cgd_unlearn_cgd"]


def _spec(path: Path, **grid) -> Path:
    content = {
        "name": "test",
        "envs": ["base"],
        "pipelines": PIPELINES,
        "namespaces": ["badnets"],
        "seeds": [0],
    } | grid
    path.write_text(yaml.safe_dump({"grid": content}, sort_keys=False))
    return path


@pytest.fixture
def tiny_project(tmp_project):
    """The test project with tiny parameters in conf/local, which every cell (env base) reads."""
    (tmp_project / "conf" / "local" / "parameters.yml").write_text(
        yaml.safe_dump(tiny_clip_parameters() | {"cgd": TINY_CGD})
    )
    return tmp_project


def test_cells_are_the_product_of_envs_attacks_seeds_and_sweeps(tmp_path):
    spec = load_spec(
        _spec(
            tmp_path / "g.yml",
            namespaces=["badnets", "blended"],
            seeds=[0, 1],
            sweep={"{attack}.attack.ratio": [0.05, 0.1], "cgd.epochs": [2, 4]},
        )
    )
    cells = expand_cells(spec)
    assert len(cells) == 2 * 2 * 2 * 2 and len({c.id for c in cells}) == 16
    cell = next(
        c
        for c in cells
        if c.attack == "blended"
        and c.seed == 1
        and c.sweep_values == {"{attack}.attack.ratio": 0.1, "cgd.epochs": 4}
    )
    assert cell.params == {
        "runtime": {"seed": 1},
        "blended": {"attack": {"ratio": 0.1}},
        "cgd": {"epochs": 4},
    }
    assert cell.namespaces == ("dataset", "clip", "blended") and cell.id.startswith(
        "base-blended-seed1-ratio=0.1-epochs=4-"
    )


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"envs": ["nowhere"]}, r"grid\.envs: unknown environment 'nowhere' \(no conf/nowhere/\)"),
        ({"pipelines": ["poison", "unlearn"]}, r"grid\.pipelines: unknown pipeline 'unlearn'"),
        (
            {"namespaces": ["badnet"]},
            r"grid\.namespaces: 'badnet' is not a namespace of the pipelines",
        ),
        (
            {"sweep": {"{attack}.attack.ratoi": [0.1]}},
            r"grid cell base-badnets-seed0-ratoi=0\.1-\w+ \(env base, namespace badnets, seed 0, "
            r"sweep \{attack\}\.attack\.ratoi = 0\.1\): badnets\.attack\.ratoi: unknown parameter; "
            r"did you mean 'ratio'\?",
        ),
        (
            {"sweep": {"{attack}.attack.ratio": [0.1, 1.5]}},
            r"sweep \{attack\}\.attack\.ratio = 1\.5\): badnets\.attack\.ratio = 1\.5: must be "
            r"less than or equal to 1",
        ),
        ({"sweep": {"cgd.epochs": []}}, r"grid\.sweep.*'cgd\.epochs' has no values"),
        ({"seeds": [0, 0]}, r"grid\.seeds = \[0, 0\]: repeats an entry"),
        (
            {"params": {"cgd": {"epochs": 0}}},
            r"cgd\.epochs = 0: must be greater than or equal to 1",
        ),
        ({"unknown": 1}, r"grid\.unknown: unknown parameter"),
    ],
)
def test_a_bad_spec_is_refused_before_any_cell_starts(tiny_project, grid, message):
    with pytest.raises(ParameterError, match=message):
        run_grid(_spec(tiny_project / "grid.yml", **grid), tiny_project, echo=lambda _: None)
    assert not (tiny_project / "data" / "09_grid").exists()


def test_an_unreachable_scheduler_is_named_before_any_cell_starts(tiny_project):
    with pytest.raises(ClusterError, match=r"dask scheduler 'tcp://127\.0\.0\.1:9' unreachable"):
        run_grid(
            _spec(tiny_project / "grid.yml"),
            tiny_project,
            cluster="tcp://127.0.0.1:9",
            echo=lambda _: None,
        )
    assert not (tiny_project / "data" / "09_grid" / "test" / "cells").exists()
    with pytest.raises(FileNotFoundError, match=r"grid spec '.*missing\.yml': no such file"):
        run_grid(tiny_project / "missing.yml", tiny_project, echo=lambda _: None)


def _metrics(folder: Path, attack: str = "badnets") -> dict:
    """The newest defense_metrics of ``folder``'s project, without the wall-clock seconds."""
    metrics = json.loads(
        max(
            (folder / f"data/08_reporting/embedded/{attack}/defense_metrics.json").rglob("*.json")
        ).read_text()
    )
    return {
        defense: {k: v for k, v in values.items() if k != "seconds"}
        for defense, values in metrics.items()
    }


@pytest.mark.slow
def test_a_grid_on_two_workers_isolates_failures_resumes_and_equals_single_runs(tiny_project):
    spec_path = _spec(
        tiny_project / "grid.yml", seeds=[0, 1], sweep={"{attack}.attack.ratio": [0.1, 0.2]}
    )
    cells = expand_cells(load_spec(spec_path))
    root = tiny_project / "data" / "09_grid" / "test"
    broken = root / "cells" / cells[3].id
    broken.mkdir(parents=True)
    # this cell cannot save anything: it must fail alone
    (broken / "data").write_text("not a folder")

    lines = []
    result = run_grid(spec_path, tiny_project, cluster="local", workers=2, echo=lines.append)
    assert [r["status"] for r in sorted(result.ran, key=lambda r: r["id"])].count("complete") == 3
    assert result.failed == [cells[3].id] and f"1 cell(s) failed: {cells[3].id}" in lines[-1]
    assert len({r["worker"] for r in result.ran}) == 2  # both workers ran cells
    # the first cell of each seed went first (each fills the shared model
    # cache for its seed's other cells)
    started = sorted(
        cells,
        key=lambda c: json.loads((root / "cells" / c.id / "cell.json").read_text())["started"],
    )
    assert {started[0].id, started[1].id} == {cells[0].id, cells[2].id}
    summary = result.summary
    cgd = summary[(summary["defense"] == "cgd") & (summary["{attack}.attack.ratio"] == 0.1)].iloc[0]
    # mean ± std over the two seeds
    assert cgd["n_seeds"] == 2 and 0 <= cgd["asr_mean"] <= 1 and cgd["asr_std"] >= 0
    # seed 1 of ratio 0.2 failed
    assert summary[summary["{attack}.attack.ratio"] == 0.2]["n_seeds"].max() == 1
    assert (root / "grid_report.html").read_text().count("<img") == 1 and (
        root / "grid_summary.csv"
    ).is_file()
    # Two seeds never share a file: every cell has its own outputs
    victims = [
        next(
            (
                root / "cells" / c.id / "data/06_models/embedded/badnets/victim_model.safetensors"
            ).rglob("*.safetensors")
        )
        for c in cells[:3]
    ]
    assert len({v.resolve() for v in victims}) == 3 and len({v.read_bytes() for v in victims}) == 3
    # The grid is an MLflow run; each cell's run is its child, named
    # after the cell, with its metrics
    client, grid_run = _grid_run(root)
    assert grid_run.info.status == "FAILED" and grid_run.data.tags["cgd.grid"] == "test"
    assert {a.path for a in client.list_artifacts(grid_run.info.run_id)} >= {
        "grid_summary.csv",
        "grid_report.html",
    }
    children = _children(client, grid_run)
    assert {r.info.run_name: r.info.status for r in children} == {
        c.id: "FAILED" if c is cells[3] else "FINISHED" for c in cells
    }
    child = next(r for r in children if r.info.run_name == cells[0].id)
    assert child.data.metrics["badnets/defense/cgd/asr"] == pytest.approx(
        _metrics(root / "cells" / cells[0].id)["cgd"]["asr"]
    )

    # The same cell run alone with kedro run gives exactly the same metrics (same seed, CPU)
    alone = subprocess.run(
        [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--pipelines",
            ",".join(PIPELINES),
            "--namespaces",
            "dataset,clip,badnets",
            "--params",
            "runtime.seed=1,badnets.attack.ratio=0.1",
        ],
        cwd=tiny_project,
        capture_output=True,
        text=True,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "1"},
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    same = next(c for c in cells if c.seed == 1 and c.sweep_values["{attack}.attack.ratio"] == 0.1)
    assert _metrics(tiny_project) == _metrics(root / "cells" / same.id)

    # Resume: nothing complete runs again; --rerun-failed retries only the failed cell
    before = {c.id: (root / "cells" / c.id / "cell.json").read_text() for c in cells[:3]}
    again = run_grid(spec_path, tiny_project, cluster="local", workers=2, echo=lambda _: None)
    assert (
        again.ran == []
        and sorted(again.skipped) == sorted(c.id for c in cells[:3])
        and again.failed == [cells[3].id]
    )
    (broken / "data").unlink()
    retried = run_grid(
        spec_path, tiny_project, cluster="local", workers=2, rerun_failed=True, echo=lambda _: None
    )
    assert (
        [r["id"] for r in retried.ran] == [cells[3].id]
        and retried.ran[0]["status"] == "complete"
        and not retried.failed
    )
    assert {c.id: (root / "cells" / c.id / "cell.json").read_text() for c in cells[:3]} == before
    assert retried.summary["n_seeds"].min() == 2
    # the same grid run, reopened, now finished; one more child
    client, resumed_run = _grid_run(root)
    assert resumed_run.info.run_id == grid_run.info.run_id and resumed_run.info.status == "FINISHED"
    assert len(_children(client, resumed_run)) == 5


def _grid_run(root: Path):
    from mlflow import MlflowClient

    info = json.loads((root / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    return client, client.get_run(info["run_id"])


def _children(client, parent) -> list:
    return client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )


@pytest.mark.slow
def test_a_killed_grid_resumes_with_only_the_missing_cells(tiny_project):
    spec_path = _spec(tiny_project / "grid.yml", seeds=[0, 1, 2])
    root = tiny_project / "data" / "09_grid" / "test"
    command = [
        sys.executable,
        "-m",
        "kedro",
        "grid",
        "--spec",
        str(spec_path),
        "--cluster",
        "local",
        "--workers",
        "1",
    ]
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1"}
    grid = subprocess.Popen(
        command,
        cwd=tiny_project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and not any(
        json.loads(p.read_text()).get("status") == "complete"
        for p in root.glob("cells/*/cell.json")
    ):
        time.sleep(1)
    os.killpg(grid.pid, signal.SIGKILL)  # the grid and its cluster, mid-way through the second cell
    grid.wait()
    states = {
        p.parent.name: json.loads(p.read_text())["status"] for p in root.glob("cells/*/cell.json")
    }
    done = {name for name, status in states.items() if status == "complete"}
    assert 1 <= len(done) < 3
    cells = expand_cells(load_spec(spec_path))
    todo, complete, failed = plan(cells, root, rerun_failed=False)
    assert (
        set(complete) == done
        and {c.id for c in todo} == {c.id for c in cells} - done
        and not failed
    )
    resumed = subprocess.run(command, cwd=tiny_project, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(done)} complete, 0 failed before, {3 - len(done)} to run" in resumed.stdout
    assert all(
        json.loads(p.read_text())["status"] == "complete" for p in root.glob("cells/*/cell.json")
    )


def test_the_default_spec_is_valid(tmp_project):
    from cgd_kedro.grid.spec import check_spec

    spec = load_spec(Path(__file__).parents[2] / "conf" / "base" / "grid.yml")
    cells = expand_cells(spec)
    check_spec(spec, tmp_project, cells)
    assert spec.name == "default" and len(cells) == 4 and {c.seed for c in cells} == {0, 1}
