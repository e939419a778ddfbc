"""kedro-viz builds the lineage offline,
with each attack as a namespace and every dataset in a layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cgd_kedro.pipelines.poison.pipeline import DEFAULT_ATTACKS


@pytest.mark.slow
def test_kedro_viz_build_shows_namespaces_and_layers(tmp_project):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=tmp_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lineage = json.loads((tmp_project / "build" / "api" / "main").read_text())

    # The landing view is the default run: the shared `dataset` group
    # and one group per default attack.
    assert {"dataset", "clip", *DEFAULT_ATTACKS} <= set(lineage["modular_pipelines"])
    # all five pipelines of the project (and the groupings built from them) are in the lineage
    pipelines = {
        "__default__",
        "full",
        "poison",
        "reference_clip",
        "clip_split",
        "cgd_unlearn",
        "cgd_robustness",
        "abd_defense",
        "reporting",
        "reporting_full",
    }
    assert pipelines <= {p["id"] for p in lineage["pipelines"]}
    # kedro-viz drops every layer when the layers' order has a cycle: all must be there, in order.
    layers = lineage["layers"]
    assert {
        "intermediate",
        "feature",
        "primary",
        "models",
        "model_output",
        "defended_models",
        "reporting",
    } <= set(layers)
    assert (
        layers.index("models")
        < layers.index("model_output")
        < layers.index("defended_models")
        < layers.index("reporting")
    )
    datasets = {n["name"]: n for n in lineage["nodes"] if n["type"] == "data"}
    assert {
        "badnets.attack_metrics",
        "badnets.split_metrics",
        "badnets.defense_metrics",
        "reference_clip",
        "abd_report",
        "defense_report",
        "split_report",
        "report_html",
    } <= set(datasets)
    assert all(node.get("layer") for node in datasets.values()), [
        k for k, v in datasets.items() if not v.get("layer")
    ]
    # ABD and CGD with a backdoored CLIP are not in the default run; the full grid's view has them
    full = json.loads((tmp_project / "build" / "api" / "pipelines" / "full").read_text())
    assert {"clip_badnet.backdoored_clip", "badnets.cgd_robustness"} <= {
        n["name"] for n in full["nodes"] if n["type"] == "data"
    }
    # Every pipeline's view keeps its layers (kedro-viz drops them all when a
    # view's layer order has a cycle).
    for pipeline in pipelines:
        view = json.loads((tmp_project / "build" / "api" / "pipelines" / pipeline).read_text())
        assert set(view["layers"]) >= {
            "intermediate",
            "feature",
            "primary",
            "models",
            "reporting",
        }, pipeline
