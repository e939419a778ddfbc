"""The ``clip_split`` pipeline: one namespaced copy of the split template per attack.

It reads each attack's latest ``poisoned_train`` and the latest ``reference_clip``, so
``kedro run --pipelines clip_split`` re-scores without re-running ``poison`` or ``reference_clip``.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.clip_split import nodes
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES

SHARED_INPUTS = {"reference_clip", "dataset_info"}
SHARED_PARAMETERS = {"params:clip", "params:suspicious", "params:split", "params:runtime"}


def create_split_template() -> Pipeline:
    """Score with CLIP and the suspicious models, split, evaluate against ground truth, export."""
    return Pipeline(
        [
            node(
                nodes.score_with_clip,
                [
                    "poisoned_train",
                    "reference_clip",
                    "dataset_info",
                    "params:clip",
                    "params:runtime",
                ],
                "clip_logits",
                name="score_with_clip",
            ),
            node(
                nodes.train_suspicious_models,
                ["poisoned_train", "dataset_info", "params:suspicious", "params:runtime"],
                ["suspicious_logits", "suspicious_history"],
                name="train_suspicious_models",
            ),
            node(
                nodes.split_training_set,
                [
                    "poisoned_train",
                    "clip_logits",
                    "suspicious_logits",
                    "params:split",
                    "params:runtime",
                ],
                "cgd_split",
                name="split_training_set",
            ),
            node(
                nodes.evaluate_split,
                ["cgd_split", "poisoned_train", "params:split"],
                ["split_metrics", "entropy_scores", "entropy_map"],
                name="evaluate_split",
            ),
            node(
                nodes.export_reference_files,
                ["cgd_split", "clip_logits", "suspicious_logits", "poisoned_train", "dataset_info"],
                ["cgd_clean_indices_json", "cgd_entropy_score_json", "cgd_logits_pt"],
                name="export_reference_files",
            ),
        ]
    )


def create_split_pipeline(name: str) -> Pipeline:
    return Pipeline(
        create_split_template(), namespace=name, inputs=SHARED_INPUTS, parameters=SHARED_PARAMETERS
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_split_pipeline(n) for n in ATTACK_NAMESPACES), Pipeline([]))
