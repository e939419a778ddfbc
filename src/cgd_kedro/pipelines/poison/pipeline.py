"""The ``poison`` pipeline: one shared data-loading node, then one namespaced copy of the attack
template per attack (as in kedro-viz's demo project), so lineage groups each attack and
``kedro run --namespaces badnets`` runs one."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.poison import nodes

# Attacks instantiated as namespaces; each needs ``<name>.attack`` in parameters_poison.yml.
ATTACK_NAMESPACES: tuple[str, ...] = ("badnets",)

SHARED_INPUTS = {"train_set", "test_set", "dataset_info"}
SHARED_PARAMETERS = {"params:victim", "params:runtime"}


def create_data_pipeline() -> Pipeline:
    return Pipeline(
        [node(nodes.load_dataset, "params:dataset", ["train_set", "test_set", "dataset_info"], name="load_dataset")]
    )


def create_attack_template() -> Pipeline:
    """Poison the training set, build the backdoor test set, train and evaluate the victim."""
    return Pipeline(
        [
            node(
                nodes.poison_train_set,
                ["train_set", "dataset_info", "params:attack", "params:runtime"],
                "poisoned_train",
                name="poison_train_set",
            ),
            node(
                nodes.build_backdoor_test_set,
                ["test_set", "dataset_info", "params:attack"],
                "backdoor_test",
                name="build_backdoor_test_set",
            ),
            node(
                nodes.train_victim,
                ["poisoned_train", "dataset_info", "params:victim", "params:runtime"],
                ["victim_model", "victim_history"],
                name="train_victim",
            ),
            node(
                nodes.evaluate_victim,
                ["victim_model", "test_set", "backdoor_test", "poisoned_train", "params:runtime"],
                "attack_metrics",
                name="evaluate_victim",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    template = create_attack_template()
    attacks = [
        Pipeline(template, namespace=name, inputs=SHARED_INPUTS, parameters=SHARED_PARAMETERS)
        for name in ATTACK_NAMESPACES
    ]
    return create_data_pipeline() + sum(attacks, Pipeline([]))
