"""The ``cgd_unlearn`` pipeline: structure, an in-memory run after poison and clip_split, and that
test data only feeds the report, never the defense."""

from __future__ import annotations

import json

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from test_clip_split_pipeline import tiny_clip_parameters

from cgd_kedro.pipelines.cgd_unlearn.nodes import unlearn_with_cgd
from cgd_kedro.pipelines.cgd_unlearn.pipeline import create_defense_pipeline, create_pipeline
from cgd_kedro.pipelines.clip_split.pipeline import create_split_pipeline
from cgd_kedro.pipelines.poison.pipeline import create_attack_pipeline, create_dataset_pipeline
from cgd_kedro.pipelines.reference_clip.pipeline import create_pipeline as create_reference_pipeline

TINY_CGD = {"epochs": 2, "batch_size": 64, "max_batches_per_epoch": 3}
TINY_FP = {"epochs": 1, "batch_size": 64, "prune_step": 0.1}
TINY_ANP = {"nb_iter": 3, "batch_size": 32}
TINY_ABL = {"isolation_epochs": 1, "finetune_epochs": 1, "unlearning_epochs": 1, "batch_size": 64}
TINY_MCR = {"ft_epochs": 1, "curve_epochs": 1, "batch_size": 8, "ts": [0.25, 0.5]}
TINY_IBAU = {"n_rounds": 1, "K": 2, "batch_size": 32}
TINY_DEFENSES = {
    "cgd": TINY_CGD,
    "fine_pruning": TINY_FP,
    "abl": TINY_ABL,
    "anp": TINY_ANP,
    "mcr": TINY_MCR,
    "ibau": TINY_IBAU,
}


class _KeptMemoryDataset(MemoryDataset):
    def _release(self) -> None:
        pass


def test_structure_reads_latest_upstream_outputs():
    pipeline = create_pipeline()
    assert {
        "badnets.victim_model",
        "badnets.cgd_split",
        "badnets.clip_logits",
        "test_set",
    } <= pipeline.inputs()
    assert "badnets.defense_metrics" in pipeline.outputs() and "params:cgd" in pipeline.inputs()


def test_test_sets_reach_only_the_evaluation_and_cgd_reporting():
    readers = {
        n.name.split(".")[-1]
        for n in create_defense_pipeline("badnets").nodes
        if {"test_set", "badnets.backdoor_test"} & set(n.inputs)
    }
    # unlearn_with_cgd records test CA/ASR per epoch for the report; the garbage-test-set run below
    # shows they never steer it.
    assert readers == {"evaluate_defenses", "unlearn_with_cgd"}


def _run_upstream(sections=()) -> DataCatalog:
    """The world, BadNets, the reference CLIP and the split, in memory, with the parameters of
    ``sections`` (defense sections) in the catalog."""
    params = tiny_clip_parameters() | TINY_DEFENSES | {"oracle_fraction": 0.1}
    pipeline = (
        create_dataset_pipeline()
        + create_attack_pipeline("badnets")
        + create_reference_pipeline()
        + create_split_pipeline("badnets")
    )
    shared = ("dataset", "runtime", "victim", "clip", "suspicious", "split", *sections)
    entries = {f"params:{k}": params[k] for k in shared}
    entries["params:badnets.attack"] = params["badnets"]["attack"]
    catalog = DataCatalog({k: MemoryDataset(v, copy_mode="assign") for k, v in entries.items()})
    keep_outputs(catalog, pipeline)
    SequentialRunner().run(pipeline, catalog)
    return catalog


def keep_outputs(catalog: DataCatalog, pipeline) -> None:
    """Every output of ``pipeline`` stays in ``catalog`` after the run (for the assertions)."""
    for name in pipeline.all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")


def _run_all() -> DataCatalog:
    catalog = _run_upstream((*TINY_DEFENSES, "oracle_fraction"))
    pipeline = create_defense_pipeline("badnets")
    keep_outputs(catalog, pipeline)
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_in_memory_run_reports_every_defense_and_test_data_never_steers_cgd():
    catalog = _run_all()
    metrics = catalog.load("badnets.defense_metrics")
    assert set(metrics) == {
        "none",
        "cgd",
        "retrain",
        "abl",
        "fp_cgd",
        "fp_oracle",
        "anp_cgd",
        "anp_oracle",
        "mcr_cgd",
        "mcr_oracle",
        "ibau_cgd",
        "ibau_oracle",
    }
    # MCR fed CGD's subset chose t by the triggered-agreement proxy; the
    # oracle, without one, kept mcr.t
    assert (
        catalog.load("badnets.mcr_oracle_report")["t"] == 0.5
        and "triggered_agreement" not in catalog.load("badnets.mcr_oracle_report")["curve"][0]
    )
    assert "triggered_agreement" in catalog.load("badnets.mcr_cgd_report")["curve"][0]
    assert catalog.load("badnets.mcr_cgd_report")["t"] in (0.25, 0.5)
    assert len(catalog.load("badnets.abl_report")["isolated"]) == 3  # 1% of 300
    # MCR's rows carry its curve: the validation figures it chose t by, and test figures at the same
    # points measured afterwards by the evaluation (for the report's figure)
    for source in ("cgd", "oracle"):
        report, row = catalog.load(f"badnets.mcr_{source}_report"), metrics[f"mcr_{source}"]
        assert row["t"] == report["t"] and [p["t"] for p in row["curve"]] == [0.25, 0.5]
        assert all(
            p["val_clean_acc"] == v["val_clean_acc"]
            and {"test_clean_acc", "test_asr", "test_ra"} <= set(p)
            for p, v in zip(row["curve"], report["curve"], strict=True)
        )
        assert "bends" not in report and any(
            k.startswith("bend1.") for k in catalog.load(f"badnets.mcr_{source}_curve")
        )
    # the test figure at the chosen t is the defended model's own test figure
    # (same point, same BatchNorm data)
    chosen = next(p for p in metrics["mcr_cgd"]["curve"] if p["t"] == metrics["mcr_cgd"]["t"])
    assert (
        chosen["test_clean_acc"] == metrics["mcr_cgd"]["clean_acc"]
        and chosen["test_asr"] == metrics["mcr_cgd"]["asr"]
    )
    for name, row in metrics.items():
        # the pruning defenses also say how many channels they pruned
        # (0: the report marks "no effect")
        pruned = {"pruned"} if name.startswith(("fp_", "anp_")) else set()
        curve = {"t", "curve"} if name.startswith("mcr_") else set()
        assert set(row) == {"clean_acc", "asr", "ra", "der", "seconds"} | pruned | curve, name
        assert not pruned or row["pruned"] == catalog.load(f"badnets.{name}_report")["pruned"]
        assert 0 <= row["clean_acc"] <= 1 and 0 <= row["asr"] <= 1 and 0 <= row["der"] <= 1
    attack = catalog.load("badnets.attack_metrics")
    assert (
        metrics["none"]["clean_acc"] == attack["clean_acc"]
        and metrics["none"]["asr"] == attack["asr"]
    )
    # 10% of 300 genuinely clean images
    assert catalog.load("badnets.fp_oracle_report")["clean_samples"] == 30
    assert catalog.load("badnets.fp_cgd_report")["clean_samples"] == int(
        catalog.load("badnets.cgd_split")["clean"].sum()
    )
    history = catalog.load("badnets.cgd_report")["history"]
    assert history[0]["epoch"] == 0 and {"val_clean_acc", "test_clean_acc", "test_asr"} <= set(
        history[-1]
    )

    # Same inputs with garbage test sets: the defended model must be bit-identical.
    args = [
        catalog.load(n)
        for n in (
            "badnets.victim_model",
            "badnets.poisoned_train",
            "badnets.cgd_split",
            "badnets.clip_logits",
        )
    ]
    test_set, backdoor = catalog.load("test_set"), catalog.load("badnets.backdoor_test")
    garbage = {
        k: torch.zeros_like(v) if v.is_floating_point() or v.dtype == torch.uint8 else v
        for k, v in test_set.items()
    }
    garbage_bd = {k: torch.zeros_like(v) for k, v in backdoor.items()}
    runtime = {"device": "cpu", "seed": 0}
    model_a, _ = unlearn_with_cgd(*args, test_set, backdoor, TINY_CGD, runtime)
    model_b, report_b = unlearn_with_cgd(*args, garbage, garbage_bd, TINY_CGD, runtime)
    history_b = report_b["history"]
    assert all(torch.equal(model_a["state_dict"][k], v) for k, v in model_b["state_dict"].items())
    assert [h["val_clean_acc"] for h in history_b] == [h["val_clean_acc"] for h in history]


@pytest.mark.slow
def test_session_defends_on_latest_upstream_outputs_and_refuses_bad_parameters(tmp_project):
    from test_clip_split_pipeline import _files, _session

    params = tiny_clip_parameters() | TINY_DEFENSES
    _session(tmp_project, ["poison"], ["dataset", "badnets"], **params)
    _session(tmp_project, ["reference_clip", "clip_split"], ["clip", "badnets"], **params)
    upstream = _files(tmp_project)
    for bad, message in (
        ({"cgd": TINY_CGD | {"alpha": -1}}, r"cgd\.alpha"),
        (
            {"cgd": TINY_CGD | {"epoch": 3}},
            r"cgd\.epoch: unknown parameter; did you mean 'epochs'\?",
        ),
        ({"abl": TINY_ABL | {"isolation_ratio": 2}}, r"abl\.isolation_ratio"),
        ({"fine_pruning": TINY_FP | {"acc_ratio": 0}}, r"fine_pruning\.acc_ratio"),
        ({"oracle_fraction": 1.5}, r"oracle_fraction"),
        ({"anp": TINY_ANP | {"anp_eps": 2}}, r"anp\.anp_eps"),
    ):
        with pytest.raises(ValueError, match=message):
            _session(tmp_project, ["cgd_unlearn"], ["badnets"], **params | bad)
    assert _files(tmp_project) == upstream
    _session(tmp_project, ["cgd_unlearn"], ["badnets"], **params)
    after = _files(tmp_project)
    assert {k: v for k, v in after.items() if k in upstream} == upstream  # nothing upstream re-ran
    metrics = next(
        (tmp_project / "data/08_reporting/embedded/badnets/defense_metrics.json").rglob("*.json")
    )
    assert {"cgd", "abl", "retrain", "fp_cgd", "fp_oracle", "anp_cgd", "anp_oracle"} <= set(
        json.loads(metrics.read_text())
    )
