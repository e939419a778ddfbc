"""Node tags (``kedro run --tags ...``): every node of every registered pipeline has known tags."""

from __future__ import annotations

from pathlib import Path

from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

from cgd_kedro.pipelines.tags import TAGS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_every_node_has_known_tags_and_each_tag_selects_its_kind_of_work():
    bootstrap_project(PROJECT_ROOT)
    full = pipelines["full"]
    assert all(
        node.tags and node.tags <= set(TAGS) for name in pipelines for node in pipelines[name].nodes
    )
    by_tag = {
        tag: {n.name.split(".")[-1] for n in full.only_nodes_with_tags(tag).nodes} for tag in TAGS
    }
    assert by_tag["report"] >= {"make_defense_report", "render_report", "export_reference_files"}
    assert "train_victim" not in by_tag["report"] | by_tag["evaluation"]
    assert {
        "train_victim",
        "unlearn_with_cgd",
        "fine_prune_cgd",
        "implicit_backdoor_unlearning_oracle",
    } <= by_tag["training"]
    assert (
        by_tag["training"] <= by_tag["gpu-heavy"]
        and "score_with_clip" in by_tag["gpu-heavy"] & by_tag["clip"]
    )
    assert {"evaluate_defenses", "evaluate_split", "evaluate_victim"} <= by_tag["evaluation"]
    assert {"load_dataset", "poison_train_set", "cgd_clean_data"} <= by_tag["data"]
