"""The defense registry: the recipe of README's "Add a defense", proven with a toy defense."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from kedro.io import MemoryDataset
from kedro.runner import SequentialRunner
from pydantic import Field
from test_cgd_unlearn_pipeline import _run_upstream, keep_outputs

from cgd_kedro.config import ParameterError, ParameterModel
from cgd_kedro.defenses.registry import (
    DEFENSE_REGISTRY,
    get_defense,
    list_defenses,
    register_defense,
)
from cgd_kedro.models.classifier import last_linear
from cgd_kedro.parameters import check_run_parameters, parameter_reference
from cgd_kedro.pipelines.cgd_unlearn.pipeline import create_defense_pipeline
from cgd_kedro.pipelines.reporting.nodes import make_defense_report
from cgd_kedro.pipelines.tags import tags_of


class ToyConfig(ParameterModel):
    """The ``toy`` parameters."""

    SECTION: ClassVar[str] = "toy"
    scale: float = Field(1.0, gt=0, le=10, description="factor on the last layer's weights")


def toy_defense(model, images, labels, config, *, device, generator) -> dict:
    with torch.no_grad():  # logits times a positive factor: same predictions, same CA and ASR
        last_linear(model).weight.mul_(config.scale)
        last_linear(model).bias.mul_(config.scale)
    return {"images_seen": int(labels.shape[0])}


@pytest.fixture
def toy():
    register_defense("toy", config=ToyConfig, node_name="toy_repair", description="a toy defense")(
        toy_defense
    )
    yield get_defense("toy")
    DEFENSE_REGISTRY.pop("toy")


def test_the_built_in_defenses_are_registered_in_order():
    assert [(d.name, d.section, d.node_name) for d in list_defenses()] == [
        ("fp", "fine_pruning", "fine_prune"),
        ("anp", "anp", "adversarial_neuron_pruning"),
        ("mcr", "mcr", "mode_connectivity_repair"),
        ("ibau", "ibau", "implicit_backdoor_unlearning"),
    ]
    with pytest.raises(
        ValueError, match=r"unknown clean-data defense 'nope'; available: \['anp', 'fp'"
    ):
        get_defense("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_defense("fp", config=ToyConfig, node_name="x", description="x")(toy_defense)
    with pytest.raises(ValueError, match="not a built-in row name"):
        register_defense("cgd", config=ToyConfig, node_name="x", description="x")


def test_a_registered_toy_defense_gets_parameters_nodes_tags_and_a_defense_report_row(toy):
    # its parameter section is checked like every other (and documented in the reference)
    assert "| `toy.scale` | `1.0` |" in parameter_reference()
    with pytest.raises(
        ParameterError, match=r"toy\.scale = 20\.0: must be less than or equal to 10"
    ):
        check_run_parameters({"toy": {"scale": 20.0}})

    pipeline = create_defense_pipeline("badnets", ("cgd", "toy_cgd", "toy_oracle"))
    names = {n.name for n in pipeline.nodes}
    assert {"badnets.toy_repair_cgd", "badnets.toy_repair_oracle"} <= names
    assert "params:toy" in pipeline.inputs() and tags_of("badnets.toy_repair_cgd") == {
        "training",
        "gpu-heavy",
    }

    # run it on a tiny upstream (poison + split) and see its rows in defense_report
    catalog = _run_upstream(("cgd", "oracle_fraction"))
    catalog["params:toy"] = MemoryDataset({"scale": 2.0})
    keep_outputs(catalog, pipeline)
    SequentialRunner().run(pipeline, catalog)
    metrics = catalog.load("badnets.defense_metrics")
    assert catalog.load("badnets.toy_oracle_report")["images_seen"] == 30  # 10% of 300
    assert catalog.load("badnets.toy_cgd_report")["images_seen"] > 100  # CGD's clean subset
    for source in ("cgd", "oracle"):  # scaling the logits changes no prediction
        assert metrics[f"toy_{source}"]["asr"] == metrics["none"]["asr"]
    info = catalog.load("dataset_info")
    report = make_defense_report(info, {"seed": 0}, None, defense__badnets=metrics)
    assert {"none", "cgd", "toy_cgd", "toy_oracle"} == set(report["defense"])
