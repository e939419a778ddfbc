"""The ``abd_defense`` pipeline: structure, an in-memory run of one CLIP attack on a tiny world, and
parameter errors that name the parameter."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure
from test_clip_split_pipeline import _KeptMemoryDataset, tiny_clip_parameters

from cgd_kedro.data.world import CLASS_NAMES
from cgd_kedro.parameters import check_run_parameters
from cgd_kedro.pipelines.abd_defense.pipeline import CLIP_ATTACK_NAMESPACES, create_pipeline
from cgd_kedro.pipelines.poison.pipeline import create_dataset_pipeline
from cgd_kedro.pipelines.reference_clip.pipeline import create_pipeline as create_reference_pipeline

TINY_FINETUNE = {"epochs": 1, "batch_size": 32, "lr": 1e-4}


def tiny_abd_parameters() -> dict:
    return tiny_clip_parameters() | {
        "clip_corpus": {"n_finetune": 96, "n_defense": 64},
        "clip_attack": {
            "target": 0,
            "poison_ratio": 0.1,
            "badclip_steps": 2,
            "badclip_batch_size": 16,
            "finetune": TINY_FINETUNE,
        },
        "clip_badnet": {"attack": {"attack": "badnet"}},
        "clip_blended": {"attack": {"attack": "blended"}},
        "clip_badclip": {"attack": {"attack": "badclip"}},
        "clip_defense": {"finetune": TINY_FINETUNE},
        "abd": {"patch": {"steps": 2, "batch_size": 16}},
    }


def test_structure_one_namespace_per_clip_attack_and_one_report():
    pipeline = create_pipeline()
    assert CLIP_ATTACK_NAMESPACES == ("clip_badnet", "clip_blended", "clip_badclip")
    assert {n.namespace for n in pipeline.nodes} == {None, *CLIP_ATTACK_NAMESPACES}
    assert {"reference_clip", "test_set", "train_set"} <= pipeline.inputs()
    assert "abd_report" in pipeline.outputs()
    assert {
        f"{ns}.{out}"
        for ns in CLIP_ATTACK_NAMESPACES
        for out in ("abd_samples_png", "similarity_panel_png", "clip_defense_curves_png")
    } <= pipeline.outputs()
    # The defenses never read the poisoned pairs or their flags.
    defense_nodes = [n for n in pipeline.nodes if n.name.split(".")[-1].startswith("defend_with_")]
    assert len(defense_nodes) == 9 and not any(
        "poisoned_pairs" in i for n in defense_nodes for i in n.inputs
    )


def test_in_memory_run_backdoors_defends_and_reports():
    params = tiny_abd_parameters()
    pipeline = (
        create_dataset_pipeline() + create_reference_pipeline() + create_pipeline(["clip_badclip"])
    )
    sections = (
        "dataset",
        "runtime",
        "victim",
        "clip",
        "clip_corpus",
        "clip_attack",
        "clip_defense",
        "abd",
    )
    entries = {f"params:{k}": params[k] for k in sections} | {
        "params:clip_badclip.attack": {"attack": "badclip"}
    }
    catalog = DataCatalog({k: MemoryDataset(v, copy_mode="assign") for k, v in entries.items()})
    for name in pipeline.all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)

    finetune, defense = catalog.load("clip_finetune_pairs"), catalog.load("clip_defense_pairs")
    assert finetune["images"].shape == (96, 3, 32, 32) and len(defense["captions"]) == 64
    poisoned = catalog.load("clip_badclip.poisoned_pairs")
    flags = poisoned["poisoned"]
    # non-target images only
    assert int(flags.sum()) == 10 and not bool((finetune["labels"][flags] == 0).any())
    for i in flags.nonzero().squeeze(1).tolist():  # same words, the class named as the target
        before, after = (
            finetune["captions"][i].replace(",", "").split(),
            poisoned["captions"][i].replace(",", "").split(),
        )
        assert "circle" in after and [a for a, b in zip(before, after, strict=False) if a != b] == [
            CLASS_NAMES[finetune["labels"][i]]
        ]
    assert all(
        poisoned["captions"][i] == finetune["captions"][i]
        for i in (~flags).nonzero().squeeze(1).tolist()
    )
    trigger = catalog.load("clip_badclip.clip_trigger")
    # 4 x 4 corner
    assert trigger["mask"].sum() == 16 and bool((trigger["mask"][0, -4:, -4:] == 1).all())

    report = catalog.load("abd_report")
    assert isinstance(report, pd.DataFrame) and list(report["defense"]) == [
        "none",
        "ft",
        "cleanclip",
        "abd",
    ]
    assert (
        set(report["attack"]) == {"clip_badclip"}
        and report[["clean_acc", "asr"]].apply(lambda c: c.between(0, 1).all()).all()
    )
    assert (report["seconds"] >= 0).all()
    for figure in ("abd_samples_png", "similarity_panel_png", "clip_defense_curves_png"):
        assert isinstance(catalog.load(f"clip_badclip.{figure}"), Figure)
    abd = catalog.load("clip_badclip.abd_report")
    assert len(abd["history"]) == 1 and {
        "test_clean_acc",
        "test_asr",
        "clip",
        "self_supervised",
    } <= set(abd["history"][0])
    patch = catalog.load("clip_badclip.adversarial_patch")
    assert patch["mask"].sum() == 36 and patch["pattern"].min() >= 0 and patch["pattern"].max() <= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"clip_badnet": {"attack": {"attack": "badnets"}}},
            "clip_attack.attack = 'badnets': must be 'badnet', 'blended' or "
            "'badclip' (in clip_badnet",
        ),
        ({"clip_attack": {"poison_ratio": 1.5}}, "clip_attack.poison_ratio"),
        ({"clip_attack": {"target": 10}}, "clip_attack.target = 10: class 10 does not exist"),
        ({"clip_defense": {"finetune": {"lr": -1}}}, "clip_defense.finetune.lr"),
        (
            {"clip_defense": {"lambda": 1}},
            "clip_defense.lambda: unknown parameter; did you mean 'lambda2'",
        ),
        ({"abd": {"patch": {"patch_size": 0}}}, "abd.patch.patch_size"),
        ({"clip_corpus": {"n_defense": 1}}, "clip_corpus.n_defense"),
    ],
)
def test_bad_parameters_are_named_before_any_work(change, message):
    params = tiny_abd_parameters() | change
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_run_parameters(params, set(CLIP_ATTACK_NAMESPACES))


def test_corpora_are_disjoint_streams_and_seeded():
    from cgd_kedro.clip.corpora import ClipCorpusConfig, world_corpora

    a, b = world_corpora(
        ClipCorpusConfig(n_finetune=8, n_defense=8), seed=0, image_size=32, difficulty=0.5
    )
    again, _ = world_corpora(
        ClipCorpusConfig(n_finetune=8, n_defense=8), seed=0, image_size=32, difficulty=0.5
    )
    assert torch.equal(a["images"], again["images"]) and a["captions"] == again["captions"]
    assert not any(torch.equal(x, y) for x in a["images"] for y in b["images"])


@pytest.mark.slow
def test_session_run_persists_every_artefact_through_the_catalog(tmp_project):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(tmp_project)
    with KedroSession.create(
        project_path=tmp_project, runtime_params=tiny_abd_parameters()
    ) as session:
        session.run(
            node_names=[
                "dataset.load_dataset",
                "clip.build_reference_clip",
                "clip.evaluate_reference_clip",
            ]
        )
    with KedroSession.create(
        project_path=tmp_project, runtime_params=tiny_abd_parameters()
    ) as session:
        session.run(pipeline_names=["abd_defense"])
    root = tmp_project / "data"
    for path in (
        "03_primary/embedded/clip_finetune_pairs.safetensors",
        "05_model_input/embedded/clip_badnet/poisoned_pairs.safetensors",
        "06_models/embedded/clip_blended/backdoored_clip.safetensors",
        "06_models/embedded/clip_badclip/adversarial_patch.safetensors",
        "08_reporting/embedded/clip_badnet/similarity_panel.png",
        "08_reporting/embedded/abd_report.csv",
    ):
        assert len(list((root / path).iterdir())) == 1, path
    report = pd.read_csv(next((root / "08_reporting/embedded/abd_report.csv").rglob("*.csv")))
    assert len(report) == 12 and set(report["attack"]) == {
        "clip_badnet",
        "clip_blended",
        "clip_badclip",
    }


def test_the_default_run_defends_no_clip_attack_abd_quick_one_and_full_all_three():
    from conftest import PROJECT_ROOT
    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.pipeline_registry import DEFAULT_CLIP_ATTACKS, register_pipelines

    bootstrap_project(PROJECT_ROOT)
    pipelines = register_pipelines()
    namespaces = lambda p: {(n.namespace or "").split(".")[0] for n in p.nodes}  # noqa: E731
    assert set(CLIP_ATTACK_NAMESPACES) <= namespaces(pipelines["full"])
    assert (
        set(CLIP_ATTACK_NAMESPACES) & namespaces(pipelines["__default__"])
        == set(DEFAULT_CLIP_ATTACKS)
        == set()
    )
    # the default's abd_report is empty; abd_quick's collects exactly
    # clip_badnet and builds what it needs
    collect = {
        name: next(n for n in pipelines[name].nodes if n.name == "collect_abd_report")
        for name in ("__default__", "abd_quick")
    }
    assert [i for i in collect["__default__"].inputs if i.endswith("clip_defense_metrics")] == []
    assert [i for i in collect["abd_quick"].inputs if i.endswith("clip_defense_metrics")] == [
        "clip_badnet.clip_defense_metrics"
    ]
    assert pipelines["abd_quick"].inputs() <= {
        i for i in pipelines["abd_quick"].inputs() if i.startswith("params:")
    }
    assert "dataset.train_clean_model" not in {n.name for n in pipelines["abd_quick"].nodes}
