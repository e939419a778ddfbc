"""The ``reference_clip`` and ``clip_split`` pipelines: an in-memory run, then Kedro sessions with
the embedded CLIP, with a real-weights file the test writes, and with missing or foreign weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_parameters
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure
from safetensors.torch import save_file

from cgd_kedro.clip.factory import EMBEDDED_CLIP, create_clip
from cgd_kedro.pipelines.clip_split.pipeline import create_pipeline as create_split_pipeline
from cgd_kedro.pipelines.clip_split.pipeline import create_split_pipeline as split_for
from cgd_kedro.pipelines.poison.pipeline import create_attack_pipeline, create_dataset_pipeline
from cgd_kedro.pipelines.reference_clip.pipeline import create_pipeline as create_reference_pipeline

SPLIT_KEYS = {
    "clean_size",
    "clean_poisoned_fraction",
    "triggered_size",
    "triggered_recall",
    "triggered_precision",
    "auroc_clip",
    "auroc_sus",
    "auroc_combined",
}


def tiny_clip_parameters(**clip) -> dict:
    params = tiny_parameters()
    params["dataset"]["world"]["n_captions"] = 96
    return params | {
        "clip": {"pretrain": {"epochs": 1, "batch_size": 32}, "batch_size": 64} | clip,
        "suspicious": {"runs": 2, "training": {"epochs": 1, "batch_size": 64}},
        "split": {"sigma1": 0.2, "sigma2": 0.1, "balance": True},
    }


class _KeptMemoryDataset(MemoryDataset):
    def _release(self) -> None:
        pass


def test_structure_one_split_namespace_per_attack_and_shared_reference_clip():
    split = create_split_pipeline()
    assert "reference_clip" in split.inputs() and "badnets.poisoned_train" in split.inputs()
    assert {
        "badnets.split_metrics",
        "badnets.entropy_map",
        "badnets.cgd_clean_indices_json",
    } <= split.outputs()
    assert {"params:clip", "params:suspicious", "params:split", "params:runtime"} <= split.inputs()
    reference = create_reference_pipeline()
    assert (
        reference.outputs() == {"reference_clip_metrics"}
        and "reference_clip" in reference.all_outputs()
    )
    assert {n.namespace for n in reference.nodes} == {"clip"}


def test_in_memory_run_scores_splits_and_exports_reference_files():
    params = tiny_clip_parameters()
    pipeline = (
        create_dataset_pipeline()
        + create_attack_pipeline("badnets")
        + create_reference_pipeline()
        + split_for("badnets")
    )
    entries = {
        f"params:{k}": params[k]
        for k in ("dataset", "runtime", "victim", "clip", "suspicious", "split")
    }
    entries["params:badnets.attack"] = params["badnets"]["attack"]
    catalog = DataCatalog({k: MemoryDataset(v, copy_mode="assign") for k, v in entries.items()})
    for name in pipeline.all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)

    poisoned = catalog.load("badnets.poisoned_train")
    assert catalog.load("badnets.clip_logits")["logits"].shape == (300, 10)
    assert catalog.load("badnets.suspicious_logits")["logits"].shape == (300, 10)
    assert len(catalog.load("badnets.suspicious_history")) == 2

    split = catalog.load("badnets.cgd_split")
    assert not bool((split["clean"] & split["triggered"]).any())
    # sigma1 = 0.2 on both axes leaves at most 0.8 * 0.8 of the samples clean, at least 0.6 * 0.8.
    assert 0.6 * 0.8 * 300 - 1 <= int(split["clean"].sum()) <= 0.8 * 300
    assert int(split["triggered"].sum()) >= 0.1 * 300  # the lowest 10% of r_sus alone
    counts = torch.bincount(split["labels"][split["clean_indices"]], minlength=10)
    assert len(set(counts[counts > 0].tolist())) == 1  # balanced

    metrics = catalog.load("badnets.split_metrics")
    assert set(metrics) >= SPLIT_KEYS and metrics["poison_count"] == 30
    assert metrics["clean_size"] == split["clean_indices"].numel()
    table = catalog.load("badnets.entropy_scores")
    assert (
        list(table.columns[:4]) == ["r_clip", "r_sus", "given_label", "is_poisoned"]
        and len(table) == 300
    )
    assert int(table["is_poisoned"].sum()) == 30
    assert (
        isinstance(catalog.load("badnets.entropy_map"), Figure)
        and len(catalog.load("badnets.entropy_map").axes) == 3
    )

    indices = catalog.load("badnets.cgd_clean_indices_json")
    assert indices == split["clean_indices"].tolist() and all(isinstance(i, int) for i in indices)
    scores = catalog.load("badnets.cgd_entropy_score_json")
    assert isinstance(scores, dict) and list(scores) == [str(i) for i in range(300)]
    assert scores["5"][:2] == [float(split["r_clip"][5]), float(split["r_sus"][5])]
    assert sum(scores[str(i)][2] for i in range(300)) == 30 and all(
        isinstance(v[2], bool) for v in scores.values()
    )
    logits = catalog.load("badnets.cgd_logits_pt")
    assert (
        torch.equal(logits["logits_clip"], catalog.load("badnets.clip_logits")["logits"])
        and logits["num_classes"] == 10
    )
    assert torch.equal(logits["logits_kfold"], catalog.load("badnets.suspicious_logits")["logits"])
    assert torch.equal(logits["poisoned_indices"], poisoned["poison"].nonzero().squeeze(1))
    assert torch.equal(logits["poison_labels"], poisoned["labels"]) and torch.equal(
        logits["clean_labels"], poisoned["original_labels"]
    )
    assert logits["image_features"].shape[0] == 300
    assert catalog.load("reference_clip")["model_name"] == EMBEDDED_CLIP
    zero_shot = catalog.load("reference_clip_metrics")
    assert 0.0 <= zero_shot["zero_shot_acc"] <= 1.0 and zero_shot["templates"] == [
        "a photo of a {}",
        "a picture of a {}",
    ]
    assert poisoned["labels"].shape == (300,)


def _session(
    project: Path,
    pipelines: list[str],
    namespaces: list[str] | None = None,
    env: str | None = None,
    **params,
) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        session.run(pipeline_names=pipelines, namespaces=namespaces)


def _files(root: Path) -> dict[str, float]:
    """Every artefact under data/ with its modification time (run records aside: a run that fails
    in a node leaves a record saying so, and nothing else)."""
    return {
        str(p): p.stat().st_mtime
        for p in (root / "data").rglob("*")
        if p.is_file() and "09_runs" not in p.parts
    }


def _run_statuses(root: Path) -> list[str]:
    import json

    return [
        json.loads(p.read_text())["status"]
        for p in sorted((root / "data" / "09_runs").glob("*.json"))
    ]


@pytest.mark.slow
def test_session_runs_clip_split_on_latest_poison_outputs_without_rerunning_them(tmp_project):
    params = tiny_clip_parameters()
    _session(tmp_project, ["poison"], ["dataset", "badnets"], **params)
    _session(tmp_project, ["reference_clip"], **params)
    upstream = _files(tmp_project)
    _session(tmp_project, ["clip_split"], ["badnets"], **params)
    after = _files(tmp_project)
    assert {
        k: v for k, v in after.items() if k in upstream
    } == upstream  # poison and CLIP not re-run

    out = tmp_project / "data"
    for relative in (
        "08_reporting/embedded/badnets/split_metrics.json",
        "08_reporting/embedded/badnets/entropy_map.png",
        "08_reporting/embedded/badnets/entropy_scores.csv",
        "07_model_output/embedded/badnets/cgd_reference/clean_indices.json",
        "07_model_output/embedded/badnets/cgd_reference/entropy_score.json",
        "07_model_output/embedded/badnets/cgd_reference/logits.pt",
    ):
        versions = list((out / relative).iterdir())
        assert len(versions) == 1, relative
        assert (versions[0] / Path(relative).name).stat().st_size > 0
    # Read back exactly as the reference's unlearning script reads
    # record/<attack>/AWC/ (REFERENCE.md §1.2).
    reference_dir = next(
        (out / "07_model_output/embedded/badnets/cgd_reference/logits.pt").iterdir()
    ).parent.parent
    version = next((reference_dir / "logits.pt").iterdir()).name
    data = torch.load(reference_dir / "logits.pt" / version / "logits.pt", weights_only=True)
    logits_clip, num_classes = data["logits_clip"], data["num_classes"]
    assert logits_clip.shape == (300, num_classes) and num_classes == 10
    entropy = json.loads(
        (reference_dir / "entropy_score.json" / version / "entropy_score.json").read_text()
    )
    clean_indices = json.loads(
        (reference_dir / "clean_indices.json" / version / "clean_indices.json").read_text()
    )
    for i in range(300):
        r_clip, r_sus, is_poisoned = entropy[str(i)]
        assert 0 < r_clip <= 1 and 0 < r_sus <= 1 and isinstance(is_poisoned, bool)
    assert all(isinstance(i, int) and str(i) in entropy for i in clean_indices)
    png = next((out / "08_reporting/embedded/badnets/entropy_map.png").rglob("*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_weights(path: Path) -> Path:
    """A small open_clip checkpoint, saved the way a user saves real weights (``torch.save``)."""
    torch.manual_seed(0)
    torch.save(create_clip(EMBEDDED_CLIP).state_dict(), path)
    return path


@pytest.mark.slow
def test_real_weights_path_end_to_end_with_a_checkpoint_file_the_test_writes(tmp_project):
    weights = _write_weights(tmp_project / "my_clip.pt")
    params = tiny_clip_parameters(weights=str(weights))
    _session(tmp_project, ["poison"], ["dataset", "badnets"], **params)
    _session(tmp_project, ["reference_clip", "clip_split"], ["clip", "badnets"], **params)
    stored = next(
        (tmp_project / "data/06_models/embedded/reference_clip.safetensors").rglob("*.safetensors")
    )
    assert stored.stat().st_size < 10_000  # a link to the weights file, not a copy
    metrics_file = next(
        (tmp_project / "data/08_reporting/embedded/reference_clip_metrics.json").rglob("*.json")
    )
    assert str(weights.resolve()) in metrics_file.read_text()
    assert (
        next(
            (tmp_project / "data/08_reporting/embedded/badnets/split_metrics.json").rglob("*.json")
        )
        .stat()
        .st_size
        > 0
    )


@pytest.mark.slow
def test_missing_foreign_or_mismatched_weights_stop_the_run_and_leave_outputs_intact(tmp_project):
    params = tiny_clip_parameters()
    _session(tmp_project, ["poison"], ["dataset", "badnets"], **params)
    before = _files(tmp_project)
    missing = tmp_project / "nowhere" / "clip.pt"
    with pytest.raises(
        FileNotFoundError, match=r"clip\.weights: .*nowhere/clip\.pt.*does not exist"
    ):
        _session(tmp_project, ["reference_clip"], **tiny_clip_parameters(weights=str(missing)))
    foreign = tmp_project / "foreign.pt"
    torch.save({"optimizer": [1, 2, 3]}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt.*state_dict"):
        _session(tmp_project, ["reference_clip"], **tiny_clip_parameters(weights=str(foreign)))
    corrupt = tmp_project / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"corrupt\.safetensors.*not a readable CLIP checkpoint"):
        _session(tmp_project, ["reference_clip"], **tiny_clip_parameters(weights=str(corrupt)))
    partial = {
        k: v.contiguous()
        for k, v in create_clip(EMBEDDED_CLIP).state_dict().items()
        if "transformer" not in k
    }
    save_file(partial, str(tmp_project / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"partial\.safetensors.*do not fit"):
        _session(
            tmp_project,
            ["reference_clip"],
            **tiny_clip_parameters(weights=str(tmp_project / "partial.safetensors")),
        )
    with pytest.raises(ValueError, match=r"split\.sigma2"):
        _session(
            tmp_project,
            ["clip_split"],
            ["badnets"],
            **tiny_clip_parameters() | {"split": {"sigma1": 0.1, "sigma2": 0.3}},
        )
    with pytest.raises(ValueError, match=r"clip\.model_name"):
        _session(
            tmp_project, ["reference_clip"], **tiny_clip_parameters(model_name="ViT-Huge-9000")
        )
    assert _files(tmp_project) == before
    # the weights files failed inside the node (three records say
    # "failed"); the bad parameters before any
    assert _run_statuses(tmp_project) == ["complete", "failed", "failed", "failed"]


def test_split_node_ignores_ground_truth_flags():
    from cgd_kedro.pipelines.clip_split.nodes import split_training_set

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (200,), generator=g)
    flags = torch.rand(200, generator=g) < 0.1
    clip_logits, sus_logits = (
        {"logits": torch.randn(200, 10, generator=g)},
        {"logits": torch.randn(200, 10, generator=g)},
    )
    split = {"sigma1": 0.2, "sigma2": 0.1, "balance": True}
    runtime = {"device": "cpu", "seed": 0}
    with_flags = split_training_set(
        {"labels": labels, "poison": flags}, clip_logits, sus_logits, split, runtime
    )
    flipped = split_training_set(
        {"labels": labels, "poison": ~flags}, clip_logits, sus_logits, split, runtime
    )
    without = split_training_set({"labels": labels}, clip_logits, sus_logits, split, runtime)
    for key in with_flags:
        assert torch.equal(with_flags[key], flipped[key]) and torch.equal(
            with_flags[key], without[key]
        ), key
