"""``kedro run --env cifar10 --pipelines backdoorbench_import --params backdoorbench.record.record_dir=...``

Outputs ``backdoorbench.poisoned_train``, ``.backdoor_test``, ``.victim_model`` and
``.attack_metrics``: the same contract as an attack namespace of the ``poison`` pipeline.
Not part of ``__default__`` or ``full`` (it needs a record on disk).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.backdoorbench_import import nodes

NAMESPACE = "backdoorbench"


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            node(
                nodes.import_record,
                ["train_set", "test_set", "dataset_info", "params:record", "params:runtime"],
                ["poisoned_train", "backdoor_test", "victim_model", "attack_metrics"],
                name="import_record",
            )
        ]
    )
    return Pipeline(
        template,
        namespace=NAMESPACE,
        inputs={"train_set", "test_set", "dataset_info"},
        parameters={"params:runtime"},
    )
