"""The real-data path end to end, on real images: a slice of the shared CIFAR-10 JPEG export
(tests/fixtures/cifar10-jpg-slice.tar.gz, 800 images) read as an image folder by ``--env cifar10``,
with no CLIP weights file: the dataset and its CLIP holdout, a BadNets victim, the CLIP stand-in
pretrained on the holdout, the split, CGD. Tiny budgets; the CPU profile's
real ones are in conf/cifar10."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import latest_version
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from safetensors.torch import load_file

FIXTURE = Path(__file__).parents[1] / "fixtures" / "cifar10-jpg-slice.tar.gz"

TINY_REAL_BUDGETS = {
    "dataset.max_per_class": 50,  # 500 of the slice's 600 training images
    "dataset.max_test_per_class": 10,
    "dataset.clip_holdout.size": 150,  # 15 per class for the CLIP stand-in; the victim gets 350
    "victim.training.epochs": 4,
    "victim.training.batch_size": 64,
    "clip.pretrain.epochs": 3,
    "clip.pretrain.batch_size": 32,
    "clip.batch_size": 128,
    "suspicious.runs": 1,
    "suspicious.training.epochs": 6,
    "suspicious.training.batch_size": 32,
    "suspicious.training.lr": 1.0e-3,
    "badnets.attack.ratio": 0.2,
    "cgd.epochs": 2,
    "cgd.max_batches_per_epoch": 4,
    "cgd.batch_size": 64,
    "runtime.device": "cpu",
}


def _nested(flat: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``,
    as ``kedro run --params a.b=1`` passes it to the session."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


@pytest.fixture
def cifar10_slice(tmp_path) -> Path:
    with tarfile.open(FIXTURE) as archive:  # the "data" filter exists from Python 3.11.4 / 3.10.12
        archive.extractall(
            tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {})
        )
    return tmp_path / "cifar10-jpg-slice"


@pytest.mark.slow
def test_cifar10_env_runs_the_cgd_path_on_real_images_without_clip_weights(
    tmp_project, cifar10_slice
):
    params = _nested(TINY_REAL_BUDGETS | {"dataset.root": str(cifar10_slice)})
    bootstrap_project(tmp_project)

    def run(**selection) -> None:
        with KedroSession.create(
            project_path=tmp_project, env="cifar10", runtime_params=params
        ) as session:
            session.run(**selection)

    run(node_names=["dataset.load_dataset"])
    run(pipeline_names=["poison", "reference_clip", "clip_split"], namespaces=["badnets", "clip"])
    run(node_names=["badnets.unlearn_with_cgd"])

    info = json.loads(
        latest_version(tmp_project, "02_intermediate/cifar10/dataset_info.json").read_text()
    )
    assert (
        info["format"] == "image-folder"
        and info["n_train"] == 350
        and info["n_clip_holdout"] == 150
    )
    assert info["class_names"][:3] == ["airplane", "automobile", "bird"] and info["n_test"] == 100
    train = load_file(
        str(latest_version(tmp_project, "02_intermediate/cifar10/train_set.safetensors"))
    )
    holdout = load_file(
        str(latest_version(tmp_project, "02_intermediate/cifar10/clip_holdout_set.safetensors"))
    )
    assert train["images"].shape == (350, 3, 32, 32) and holdout["images"].shape == (150, 3, 32, 32)
    assert set(train["source_index"].tolist()).isdisjoint(holdout["source_index"].tolist())
    assert torch.bincount(holdout["labels"]).tolist() == [15] * 10
    # decoded once, cached
    assert len(list((tmp_project / "data/02_intermediate/cifar10/decoded").iterdir())) == 1

    clip = json.loads(
        latest_version(tmp_project, "08_reporting/cifar10/reference_clip_metrics.json").read_text()
    )
    assert (
        clip["source"] == "stand-in"
        and clip["model_name"] == "cgd-small-clip"
        and clip["weights"] is None
    )
    assert clip["pretraining"]["pairs"] == 150 and 0.0 <= clip["zero_shot_acc"] <= 1.0

    attack = json.loads(
        latest_version(tmp_project, "08_reporting/cifar10/badnets/attack_metrics.json").read_text()
    )
    assert attack["n_train"] == 350 and attack["poison_count"] == 70
    split = json.loads(
        latest_version(tmp_project, "08_reporting/cifar10/badnets/split_metrics.json").read_text()
    )
    poisoned_share = attack["poison_count"] / attack["n_train"]
    # the split's clean subset is cleaner than the set
    assert split["clean_poisoned_fraction"] < poisoned_share
    # and its triggered subset catches more than its share
    assert split["triggered_recall"] > poisoned_share

    scores = json.loads(
        latest_version(
            tmp_project, "07_model_output/cifar10/badnets/cgd_reference/entropy_score.json"
        ).read_text()
    )
    assert list(scores) == [str(i) for i in range(350)]
    logits = torch.load(
        latest_version(tmp_project, "07_model_output/cifar10/badnets/cgd_reference/logits.pt"),
        weights_only=True,
    )
    assert logits["logits_clip"].shape == (350, 10) and logits["num_classes"] == 10
    report = json.loads(
        latest_version(tmp_project, "07_model_output/cifar10/badnets/cgd_report.json").read_text()
    )
    assert report["history"][0]["epoch"] == 0 and report["seconds"] > 0
    cgd_model = load_file(
        str(latest_version(tmp_project, "06_models/cifar10/badnets/cgd_model.safetensors"))
    )
    # airbench_narrow, the CPU profile's victim
    assert any(key.endswith("head.weight") for key in cgd_model)
