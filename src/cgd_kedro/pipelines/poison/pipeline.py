"""The ``poison`` pipeline.

A shared ``dataset`` group (load the data, train the clean reference model), then one namespaced
copy of the attack template per attack, as in kedro-viz's demo project: lineage groups each
attack, and ``kedro run --namespaces dataset,badnets`` runs one (the ``dataset`` group is needed
only the first time; later runs load its latest versioned outputs).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.attacks.registry import ATTACK_NAMES, attack_class
from cgd_kedro.pipelines.poison import nodes

# Attacks instantiated as namespaces; namespace = attack name, each with `<name>.attack` parameters.
ATTACK_NAMESPACES: tuple[str, ...] = ATTACK_NAMES
# The attacks of the default run (`kedro run`); `--pipelines full` runs every namespace.
DEFAULT_ATTACKS: tuple[str, ...] = ("badnets", "blended")

SHARED_INPUTS = {"train_set", "test_set", "dataset_info", "clean_model", "clean_metrics"}
SHARED_PARAMETERS = {"params:victim", "params:runtime"}


def create_load_dataset_pipeline() -> Pipeline:
    """Read (or generate) the data, grouped under the ``dataset`` namespace."""
    return Pipeline(
        [
            node(
                nodes.load_dataset,
                ["params:dataset", "params:clip"],
                ["train_set", "test_set", "dataset_info", "clip_holdout_set"],
                name="load_dataset",
            )
        ],
        namespace="dataset",
        prefix_datasets_with_namespace=False,
    )


def create_dataset_pipeline() -> Pipeline:
    """Nodes every attack shares, grouped (not prefixed) under the ``dataset`` namespace."""
    clean_model = Pipeline(
        [
            node(
                nodes.train_clean_model,
                ["train_set", "test_set", "dataset_info", "params:victim", "params:runtime"],
                ["clean_model", "clean_metrics"],
                name="train_clean_model",
            ),
        ],
        namespace="dataset",
        prefix_datasets_with_namespace=False,
    )
    return create_load_dataset_pipeline() + clean_model


def create_attack_template(needs_surrogate: bool = False) -> Pipeline:
    """Prepare the trigger, poison the training set, build the backdoor test set,
    train and evaluate the victim."""
    prepare_inputs = ["train_set", "dataset_info", "params:attack", "params:runtime"]
    if needs_surrogate:
        prepare_inputs.append("clean_model")
    return Pipeline(
        [
            node(nodes.prepare_attack, prepare_inputs, "attack_state", name="prepare_attack"),
            node(
                nodes.poison_train_set,
                ["train_set", "attack_state", "dataset_info", "params:attack", "params:runtime"],
                "poisoned_train",
                name="poison_train_set",
            ),
            node(
                nodes.build_backdoor_test_set,
                ["test_set", "attack_state", "dataset_info", "params:attack", "params:runtime"],
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


def create_attack_pipeline(name: str) -> Pipeline:
    template = create_attack_template(needs_surrogate=attack_class(name).needs_surrogate)
    inputs = {i for i in SHARED_INPUTS if i in template.inputs()}
    return Pipeline(template, namespace=name, inputs=inputs, parameters=SHARED_PARAMETERS)


def create_pipeline(**kwargs) -> Pipeline:
    return create_dataset_pipeline() + sum(
        (create_attack_pipeline(n) for n in ATTACK_NAMESPACES), Pipeline([])
    )
