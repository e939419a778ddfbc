"""``DaskRunner`` on a 2-worker LocalCluster: independent nodes run at once, in-memory data crosses
workers, a failing node stops the run with its error, and a real pipeline gives the same result as
the SequentialRunner."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from cgd_kedro.runner import DaskRunner

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _slow_square(x: int) -> dict:
    started = time.time()
    time.sleep(1.5)
    return {"value": x * x, "pid": os.getpid(), "span": (started, time.time())}


def _square_when_both_started(x: int, rendezvous: str) -> dict:
    """Announce this node's start in ``rendezvous`` and wait until the other node has started too:
    it returns only if the two nodes ran at the same time, wherever Dask first placed them (work
    stealing moves a task queued behind a waiting one to the idle worker)."""
    started = time.time()
    Path(rendezvous, str(x)).touch()
    while len(list(Path(rendezvous).iterdir())) < 2:
        if time.time() - started > 60:
            raise TimeoutError(f"node {x} waited 60 s alone: the nodes did not run side by side")
        time.sleep(0.05)
    return {"value": x * x, "pid": os.getpid(), "span": (started, time.time())}


def _add(a: dict, b: dict) -> int:
    return a["value"] + b["value"]


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise ValueError(f"node failed on purpose with {x}")


def _squares_and_sum() -> Pipeline:
    return Pipeline(
        [
            node(_slow_square, "params:a", "square_a", name="square_a"),
            node(_slow_square, "params:b", "square_b", name="square_b"),
            node(_add, ["square_a", "square_b"], "total", name="add"),
        ]
    )


def test_memory_data_crosses_workers_and_free_outputs_reach_the_caller(client):
    pipeline = _squares_and_sum()
    catalog = DataCatalog({"params:a": MemoryDataset(3), "params:b": MemoryDataset(4)})
    DaskRunner(client=client).run(pipeline, catalog)
    # both squares travelled from their workers to the adding one
    assert catalog.load("total") == 25
    # the free outputs of the run reach the caller
    assert set(
        DaskRunner(client=client).run(pipeline.only_nodes("square_a", "square_b"), catalog)
    ) == {"square_a", "square_b"}


def test_independent_nodes_run_at_the_same_time_in_two_processes(client, tmp_path):
    pipeline = Pipeline(
        [
            node(_square_when_both_started, ["params:a", "params:dir"], "square_a", name="a"),
            node(_square_when_both_started, ["params:b", "params:dir"], "square_b", name="b"),
        ]
    )
    catalog = DataCatalog(
        {
            "params:a": MemoryDataset(3),
            "params:b": MemoryDataset(4),
            "params:dir": MemoryDataset(str(tmp_path)),
        }
    )
    DaskRunner(client=client).run(pipeline, catalog)
    a, b = catalog.load("square_a"), catalog.load("square_b")
    assert (a["value"], b["value"]) == (9, 16)
    assert a["pid"] != b["pid"] and a["span"][0] < b["span"][1] and b["span"][0] < a["span"][1]


def test_running_the_same_nodes_again_computes_them_again(client):
    """Back-to-back runs of the same node objects on one client, with new inputs: every run returns
    its own outputs, never a previous run's (the tasks' keys must not repeat across runs)."""
    pipeline = Pipeline([node(_square, "params:a", "square", name="square")])
    for x in range(12):
        catalog = DataCatalog({"params:a": MemoryDataset(x)})
        DaskRunner(client=client).run(pipeline, catalog)
        assert catalog.load("square") == x * x, f"run {x} returned a previous run's output"


def test_a_failing_node_fails_the_run_with_its_error(client):
    pipeline = Pipeline(
        [
            node(_fail, "params:a", "out", name="fail"),
            node(_slow_square, "params:a", "square", name="square"),
        ]
    )
    with pytest.raises(ValueError, match="node failed on purpose with 3"):
        DaskRunner(client=client).run(pipeline, DataCatalog({"params:a": MemoryDataset(3)}))


def test_same_result_as_the_sequential_runner(client):
    pipeline = _squares_and_sum()
    results = []
    for runner in (SequentialRunner(), DaskRunner(client=client)):
        catalog = DataCatalog({"params:a": MemoryDataset(5), "params:b": MemoryDataset(6)})
        runner.run(pipeline, catalog)
        results.append(catalog.load("total"))
    assert results == [61, 61]


@pytest.mark.slow
def test_a_kedro_session_on_dask_writes_what_the_sequential_runner_writes(tmp_project, client):
    """``poison`` for two attacks with the DaskRunner: the two namespaces' nodes run on two workers,
    the world crosses workers in memory where the catalog keeps it there, and every metric equals
    the sequential run's (same seed, CPU)."""
    import json
    import sys
    from pathlib import Path

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
    from test_clip_split_pipeline import tiny_clip_parameters

    params = tiny_clip_parameters()
    bootstrap_project(tmp_project)
    metrics = []
    for runner in (SequentialRunner(), DaskRunner(client=client)):
        with KedroSession.create(project_path=tmp_project, runtime_params=params) as session:
            session.run(
                pipeline_names=["poison"],
                namespaces=["dataset", "badnets", "blended"],
                runner=runner,
            )
        metrics.append(
            {
                a: json.loads(
                    max(
                        (tmp_project / f"data/08_reporting/embedded/{a}/attack_metrics.json").rglob(
                            "*.json"
                        )
                    ).read_text()
                )
                for a in ("badnets", "blended")
            }
        )
    assert metrics[0] == metrics[1] and metrics[0]["badnets"]["n_train"] > 0
    records = sorted((tmp_project / "data/09_runs").glob("*.json"))
    assert [json.loads(r.read_text())["status"] for r in records] == ["complete", "complete"]
    # the workers wrote under the project (two versions of each victim: one per runner)
    assert (
        len(
            list(
                (tmp_project / "data/06_models/embedded/badnets/victim_model.safetensors").iterdir()
            )
        )
        == 2
    )
