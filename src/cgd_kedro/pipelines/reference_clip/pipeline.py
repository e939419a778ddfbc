"""The ``reference_clip`` pipeline:
build the reference CLIP once and measure its zero-shot accuracy.

Without ``clip.weights`` a real dataset's reference is a stand-in pretrained on
``clip_holdout_set``, the slice of the training set that ``dataset.load_dataset`` held out for it.

Its output ``reference_clip`` is a versioned artefact that every later ``clip_split`` run loads,
so the embedded CLIP is pretrained once, not once per attack or per run.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.reference_clip import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.build_reference_clip,
                [
                    "params:dataset",
                    "params:clip",
                    "params:runtime",
                    "dataset_info",
                    "clip_holdout_set",
                ],
                ["reference_clip", "reference_clip_history"],
                name="build_reference_clip",
            ),
            node(
                nodes.evaluate_reference_clip,
                [
                    "reference_clip",
                    "reference_clip_history",
                    "test_set",
                    "dataset_info",
                    "params:clip",
                    "params:runtime",
                ],
                "reference_clip_metrics",
                name="evaluate_reference_clip",
            ),
        ],
        namespace="clip",
        prefix_datasets_with_namespace=False,
    )
