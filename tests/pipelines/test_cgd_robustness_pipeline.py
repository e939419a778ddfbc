"""The ``cgd_robustness`` pipeline: wiring, and an in-memory run whose "backdoored" CLIP is the
reference CLIP itself, so its split must equal the normal one."""

from __future__ import annotations

import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner
from test_cgd_unlearn_pipeline import TINY_CGD
from test_clip_split_pipeline import _KeptMemoryDataset, tiny_clip_parameters

from cgd_kedro.metrics import defense_effectiveness_rating
from cgd_kedro.pipeline_registry import register_pipelines
from cgd_kedro.pipelines.cgd_robustness.pipeline import (
    DEFAULT_ROBUSTNESS_ATTACKS,
    ROBUSTNESS_CLIP_ATTACK,
    create_pipeline,
    create_robustness_pipeline,
)
from cgd_kedro.pipelines.clip_split.pipeline import create_split_pipeline
from cgd_kedro.pipelines.poison.pipeline import (
    ATTACK_NAMESPACES,
    create_attack_pipeline,
    create_dataset_pipeline,
)
from cgd_kedro.pipelines.reference_clip.pipeline import create_pipeline as create_reference_pipeline


def test_structure_reuses_the_suspicious_logits_and_reads_abd_defenses_backdoored_clip():
    pipeline = create_pipeline()
    assert {f"{a}.cgd_robustness" for a in ATTACK_NAMESPACES} <= pipeline.outputs()
    assert {
        f"{ROBUSTNESS_CLIP_ATTACK}.backdoored_clip",
        "badnets.suspicious_logits",
        "badnets.victim_model",
    } <= pipeline.inputs()
    assert "reference_clip" not in pipeline.all_inputs()
    # the suspicious models are not retrained
    assert not any("suspicious" in n.name for n in pipeline.nodes)
    # in each attack's kedro-viz group
    assert {n.namespace for n in pipeline.nodes} == set(ATTACK_NAMESPACES)
    default = register_pipelines()["__default__"]
    # the default run has no backdoored CLIP to take as reference, so no cgd_robustness
    assert DEFAULT_ROBUSTNESS_ATTACKS == () and not any(
        o.endswith("cgd_robustness") for o in default.all_outputs()
    )


def _as_backdoored_clip(reference_clip: dict) -> dict:
    return reference_clip


def test_with_the_reference_clip_standing_in_the_split_is_the_normal_one():
    params = tiny_clip_parameters() | {"cgd": TINY_CGD}
    pipeline = (
        create_dataset_pipeline()
        + create_attack_pipeline("badnets")
        + create_reference_pipeline()
        + create_split_pipeline("badnets")
        + Pipeline(
            [
                node(
                    _as_backdoored_clip,
                    "reference_clip",
                    f"{ROBUSTNESS_CLIP_ATTACK}.backdoored_clip",
                    name="alias",
                )
            ]
        )
        + create_robustness_pipeline("badnets")
    )
    entries = {
        f"params:{k}": params[k]
        for k in ("dataset", "runtime", "victim", "clip", "suspicious", "split", "cgd")
    }
    entries["params:badnets.attack"] = params["badnets"]["attack"]
    catalog = DataCatalog({k: MemoryDataset(v, copy_mode="assign") for k, v in entries.items()})
    for name in pipeline.all_outputs():
        catalog[name] = _KeptMemoryDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)

    normal, variant = catalog.load("badnets.cgd_split"), catalog.load("badnets.bdclip_split")
    assert torch.equal(normal["clean_indices"], variant["clean_indices"]) and torch.equal(
        normal["triggered"], variant["triggered"]
    )
    result = catalog.load("badnets.cgd_robustness")
    assert result["reference"] == ROBUSTNESS_CLIP_ATTACK
    assert (
        result["split"]["auroc_combined"] == catalog.load("badnets.split_metrics")["auroc_combined"]
    )
    assert set(result["cgd"]) == {"clean_acc", "asr", "ra", "der", "seconds"}
    assert all(0 <= result["cgd"][k] <= 1 for k in ("clean_acc", "asr", "ra", "der"))
    assert result["cgd"]["der"] == defense_effectiveness_rating(
        catalog.load("badnets.attack_metrics"), result["cgd"]
    )
    assert len(catalog.load("badnets.cgd_bdclip_report")["history"]) >= 1
