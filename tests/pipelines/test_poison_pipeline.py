"""The ``poison`` pipeline: structure, an in-memory run, and full Kedro sessions with bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_parameters
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES, create_pipeline


class _KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test can inspect intermediate outputs."""

    def _release(self) -> None:
        pass


def _in_memory_catalog(params: dict) -> DataCatalog:
    entries = {
        "params:dataset": params["dataset"],
        "params:runtime": params["runtime"],
        "params:victim": params["victim"],
        "params:clip": {},
    }
    for name in ATTACK_NAMESPACES:
        entries[f"params:{name}.attack"] = params[name]["attack"]
    catalog = DataCatalog(
        {key: MemoryDataset(value, copy_mode="assign") for key, value in entries.items()}
    )
    for name in create_pipeline().all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")
    return catalog


def test_pipeline_has_one_namespace_per_attack_and_shared_data_node():
    pipeline = create_pipeline()
    assert {n.namespace for n in pipeline.nodes} == {"dataset", *ATTACK_NAMESPACES}
    names = {n.name for n in pipeline.nodes}
    assert {"dataset.load_dataset", "dataset.train_clean_model", "badnets.train_victim"} <= names
    # Shared nodes are grouped under `dataset` without renaming their datasets.
    assert {"train_set", "clean_model"} <= pipeline.all_outputs()
    assert {
        "params:dataset",
        "params:victim",
        "params:runtime",
        "params:badnets.attack",
    } <= pipeline.inputs()
    assert "badnets.attack_metrics" in pipeline.outputs()


def test_in_memory_run_poisons_trains_and_reports():
    params = tiny_parameters()
    catalog = _in_memory_catalog(params)
    SequentialRunner().run(create_pipeline(), catalog)

    poisoned = catalog.load("badnets.poisoned_train")
    assert int(poisoned["poison"].sum()) == round(0.1 * 300)
    assert torch.all(poisoned["labels"][poisoned["poison"]] == 0)
    assert torch.all(poisoned["images"][poisoned["poison"]][..., -3:, -3:] == 255)

    test_set, backdoor = catalog.load("test_set"), catalog.load("badnets.backdoor_test")
    assert backdoor["labels"].shape[0] == int((test_set["labels"] != 0).sum())

    metrics = catalog.load("badnets.attack_metrics")
    assert (
        metrics["poison_count"] == 30
        and metrics["n_train"] == 300
        and metrics["poison_ratio"] == 0.1
    )
    assert "clean_model_acc" not in metrics  # the victim's path does not wait for the clean model
    assert 0.0 <= catalog.load("clean_metrics")["clean_acc"] <= 1.0
    for key in ("clean_acc", "asr", "ra"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["asr"] + metrics["ra"] <= 1.0 + 1e-9

    model = catalog.load("badnets.victim_model")
    assert model["architecture"] == "compact_cnn" and model["num_classes"] == 10
    history = catalog.load("badnets.victim_history")
    assert len(history) == 1 and history[0]["epoch"] == 1


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (root / "data").rglob("*") if p.is_file()}


def _run(project: Path, env: str | None = None, **runtime_params) -> None:
    """``kedro run --pipelines poison --namespaces dataset,badnets`` in ``project``."""
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, env=env, runtime_params=runtime_params
    ) as session:
        session.run(pipeline_names=["poison"], namespaces=["dataset", "badnets"])


@pytest.mark.slow
def test_session_run_writes_versioned_artefacts_then_bad_inputs_leave_them_intact(tmp_project):
    _run(tmp_project, **tiny_parameters())
    metrics_dir = tmp_project / "data/08_reporting/embedded/badnets/attack_metrics.json"
    assert len(list(metrics_dir.iterdir())) == 1  # one version folder
    assert (
        len(
            list(
                (tmp_project / "data/06_models/embedded/badnets/victim_model.safetensors").iterdir()
            )
        )
        == 1
    )
    before = _files(tmp_project)

    bad_inputs = [
        ({"badnets": {"attack": {"ratio": 1.5}}}, ValueError, "badnets.attack.ratio"),
        ({"badnets": {"attack": {"ratio": 0.0}}}, ValueError, "badnets.attack.ratio"),
        ({"badnets": {"attack": {"target": 10}}}, ValueError, "badnets.attack.target"),
        ({"badnets": {"attack": {"name": "nosuchattack"}}}, ValueError, "attack.name"),
        ({"victim": {"architecture": "resnet9000"}}, ValueError, "architecture"),
        ({"dataset": {"name": "mnist"}}, ValueError, "dataset.name"),
        ({"runtime": {"device": "tpu"}}, ValueError, "device"),
    ]
    for override, error, message in bad_inputs:
        params = tiny_parameters()
        for section, value in override.items():
            _deep_update(params[section], value)
        with pytest.raises(error, match=message.replace(".", r"\.")):
            _run(tmp_project, **params)
    assert _files(tmp_project) == before


@pytest.mark.slow
def test_real_dataset_env_reports_missing_and_malformed_data_before_training(tmp_project):
    params = tiny_parameters()
    del params["dataset"]  # the cifar10 environment decides the dataset
    missing = tmp_project / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        _run(tmp_project, env="cifar10", **params, dataset={"root": str(missing)})

    root = tmp_project / "cifar"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    ):
        (root / "cifar-10-batches-py" / name).write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        _run(tmp_project, env="cifar10", **params, dataset={"root": str(root)})
    assert not (tmp_project / "data/06_models").exists()  # nothing was trained


def _deep_update(target: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
