"""``kedro run --env cifar10 --pipelines backdoorbench_import
--params backdoorbench.record.record_dir=...``

One command from a fresh checkout: it reads the clean dataset itself (``dataset.load_dataset``,
decoded once and cached), then the record on top of it. Outputs ``backdoorbench.poisoned_train``,
``.backdoor_test``, ``.victim_model`` and ``.attack_metrics``: the same contract as an attack
namespace of the ``poison`` pipeline. Not part of ``__default__`` or
``full`` (it needs a record on disk).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.backdoorbench_import import nodes
from cgd_kedro.pipelines.poison.pipeline import create_load_dataset_pipeline

NAMESPACE = "backdoorbench"


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(
                nodes.import_record,
                [
                    "train_set",
                    "clip_holdout_set",
                    "test_set",
                    "dataset_info",
                    "params:record",
                    "params:runtime",
                ],
                ["poisoned_train", "backdoor_test", "victim_model", "attack_metrics"],
                name="import_record",
            )
        ]
    )
    return create_load_dataset_pipeline() + Pipeline(
        template,
        namespace=NAMESPACE,
        inputs={"train_set", "clip_holdout_set", "test_set", "dataset_info"},
        parameters={"params:runtime"},
    )
