"""The ``backdoorbench_import`` pipeline turns a record into the attack-namespace contract."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import latest_version
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cgd_kedro.datasets import ClassifierCheckpointDataset
from cgd_kedro.pipelines.backdoorbench_import.pipeline import create_pipeline

_spec = importlib.util.spec_from_file_location(
    "bb_fixtures", Path(__file__).parents[1] / "data" / "test_backdoorbench.py"
)
bb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bb)


class _Kept(MemoryDataset):
    def _release(self) -> None:
        pass


def _import_only():
    return create_pipeline().only_nodes("backdoorbench.import_record")


def _catalog(train, test, record_dir, holdout: int = 0) -> DataCatalog:
    """The clean sets as ``dataset.load_dataset`` leaves them:
    ``holdout`` training images set aside."""
    info = {
        "num_classes": bb.NUM_CLASSES,
        "mean": bb.CIFAR10_MEAN,
        "std": bb.CIFAR10_STD,
        "format": "cifar-pickle",
        "n_train": train["labels"].numel() - holdout,
        "n_clip_holdout": holdout,
    }
    source = train | {"source_index": torch.arange(train["labels"].numel())}
    public = torch.arange(holdout) * 2  # every other image from the start, as a stand-in slice
    kept = torch.tensor(
        [i for i in range(train["labels"].numel()) if i not in set(public.tolist())]
    )
    catalog = DataCatalog(
        {
            "train_set": MemoryDataset({k: v[kept] for k, v in source.items()}, copy_mode="assign"),
            "clip_holdout_set": MemoryDataset(
                {k: v[public] for k, v in source.items()}, copy_mode="assign"
            ),
            "test_set": MemoryDataset(test, copy_mode="assign"),
            "dataset_info": MemoryDataset(info),
            "params:backdoorbench.record": MemoryDataset(
                {"record_dir": str(record_dir) if record_dir else None}
            ),
            "params:runtime": MemoryDataset({"device": "cpu", "seed": 0}),
        }
    )
    for name in _import_only().all_outputs():
        catalog[name] = _Kept(copy_mode="assign")
    return catalog


def test_import_outputs_the_attack_namespace_contract(tmp_path):
    train, test = bb._clean_set(12, 0), bb._clean_set(6, 1)
    torch.manual_seed(0)
    state = {
        k: v.clone() for k, v in bb.build_model("compact_cnn", bb.NUM_CLASSES).state_dict().items()
    }
    record, *_ = bb.write_record(tmp_path, (train, test), state)
    # the stand-in's slice is put back in its place
    catalog = _catalog(train, test, record, holdout=3)
    SequentialRunner().run(_import_only(), catalog)

    poisoned = catalog.load("backdoorbench.poisoned_train")
    assert poisoned["poison"].nonzero().flatten().tolist() == [1, 4, 7]
    assert poisoned["cover"].nonzero().flatten().tolist() == [9]
    assert torch.all(poisoned["labels"][[1, 4, 7]] == bb.TARGET)
    metrics = catalog.load("backdoorbench.attack_metrics")
    assert (
        metrics["poison_count"] == 3
        and metrics["cover_count"] == 1
        and metrics["attack"] == "badnets"
    )
    assert metrics["n_backdoor_test"] == int((test["labels"] != bb.TARGET).sum())
    assert catalog.load("backdoorbench.victim_model")["architecture"] == "compact_cnn"


def test_missing_record_dir_parameter_is_named(tmp_path):
    train, test = bb._clean_set(12, 0), bb._clean_set(6, 1)
    with pytest.raises(Exception, match=r"backdoorbench\.record\.record_dir"):
        SequentialRunner().run(_import_only(), _catalog(train, test, None))


def test_an_image_folder_is_refused_because_its_order_is_not_backdoorbench_s(tmp_path):
    train, test = bb._clean_set(12, 0), bb._clean_set(6, 1)
    catalog = _catalog(train, test, tmp_path)
    catalog["dataset_info"] = MemoryDataset({"num_classes": 10, "format": "image-folder"})
    with pytest.raises(Exception, match=r"indexes the clean dataset in its loader's order"):
        SequentialRunner().run(_import_only(), catalog)


def test_the_victim_keeps_backdoorbench_s_normalisation(tmp_path):
    train, test = bb._clean_set(12, 0), bb._clean_set(6, 1)
    state = {
        k: v.clone() for k, v in bb.build_model("compact_cnn", bb.NUM_CLASSES).state_dict().items()
    }
    record, *_ = bb.write_record(tmp_path, (train, test), state)
    catalog = _catalog(train, test, record)
    catalog["dataset_info"] = MemoryDataset(
        {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3, "format": "cifar-pickle"}
    )
    SequentialRunner().run(_import_only(), catalog)
    victim = catalog.load("backdoorbench.victim_model")
    assert victim["mean"] == pytest.approx([0.4914, 0.4822, 0.4465]) and victim[
        "std"
    ] == pytest.approx([0.247, 0.243, 0.261])


@pytest.mark.slow
def test_one_command_from_a_fresh_checkout_reads_the_dataset_then_the_record(
    tmp_project, tmp_path, monkeypatch
):
    """``kedro run --env cifar10 --pipelines backdoorbench_import``: no earlier run, a CIFAR-10 in
    torchvision's layout (a 12 + 6 image fake) and a record made from exactly those images."""
    monkeypatch.setattr(bb, "SIZE", 32)  # the record's img_size: CIFAR's 32 x 32
    train, test = bb._clean_set(12, 0), bb._clean_set(6, 1)
    base = tmp_path / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)

    def dump(name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        (base / name).write_bytes(
            pickle.dumps(
                {b"data": images.reshape(len(labels), -1).numpy(), b"labels": labels.tolist()},
                protocol=2,
            )
        )

    for k, rows in enumerate(np.array_split(np.arange(12), 5), start=1):
        dump(f"data_batch_{k}", train["images"][rows], train["labels"][rows])
    dump("test_batch", test["images"], test["labels"])
    (base / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": [f"class{i}".encode() for i in range(10)]}, protocol=2)
    )
    torch.manual_seed(0)
    state = {
        k: v.clone() for k, v in bb.build_model("compact_cnn", bb.NUM_CLASSES).state_dict().items()
    }
    record, *_ = bb.write_record(tmp_path, (train, test), state)

    bootstrap_project(tmp_project)
    params = {
        "dataset": {"root": str(tmp_path / "cifar"), "clip_holdout": {"size": 0}},
        "runtime": {"device": "cpu"},
        "backdoorbench": {"record": {"record_dir": str(record)}},
    }
    with KedroSession.create(
        project_path=tmp_project, env="cifar10", runtime_params=params
    ) as session:
        session.run(pipeline_names=["backdoorbench_import"])

    metrics = json.loads(
        latest_version(
            tmp_project, "08_reporting/cifar10/backdoorbench/attack_metrics.json"
        ).read_text()
    )
    assert metrics["poison_count"] == 3 and metrics["cover_count"] == 1 and metrics["n_train"] == 12
    assert latest_version(
        tmp_project, "02_intermediate/cifar10/train_set.safetensors"
    ).is_file()  # the clean dataset, read by the same command
    victim = ClassifierCheckpointDataset(
        filepath=str(
            latest_version(tmp_project, "06_models/cifar10/backdoorbench/victim_model.safetensors")
        )
    ).load()
    # BackdoorBench's normalisation, not the env's
    assert victim["std"] == pytest.approx([0.247, 0.243, 0.261])
