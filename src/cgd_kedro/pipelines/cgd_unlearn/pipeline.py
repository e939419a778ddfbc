"""The ``cgd_unlearn`` pipeline: one namespaced copy of the defense template per attack.

It reads each attack's latest ``victim_model``, ``poisoned_train``, ``cgd_split`` and
``clip_logits``, so ``kedro run --pipelines cgd_unlearn`` defends without re-running ``poison``
or ``clip_split``.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.cgd_unlearn import nodes
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES

SHARED_INPUTS = {"train_set", "test_set", "dataset_info"}
SHARED_PARAMETERS = {
    "params:cgd", "params:abl", "params:fine_pruning", "params:anp", "params:oracle_fraction", "params:victim", "params:runtime",
}  # fmt: skip
# Defenses whose model and report go into `<attack>.defense_metrics`, by name.
DEFENSES: tuple[str, ...] = ("cgd", "retrain", "abl", "fp_cgd", "fp_oracle", "anp_cgd", "anp_oracle")


# Clean-data defenses, each run on CGD's clean subset and on oracle clean data:
# (defense-name prefix, node function, parameter section, node name).
CLEAN_DATA_DEFENSES = (
    ("fp", nodes.fine_prune_victim, "fine_pruning", "fine_prune"),
    ("anp", nodes.prune_neurons_victim, "anp", "adversarial_neuron_pruning"),
)


def create_defense_template() -> Pipeline:
    """CGD unlearning, its peers and the clean-data defenses fed by CGD or by oracle clean data."""
    return Pipeline(
        [
            node(
                nodes.unlearn_with_cgd,
                ["victim_model", "poisoned_train", "cgd_split", "clip_logits", "test_set", "backdoor_test",
                 "params:cgd", "params:runtime"],  # fmt: skip
                ["cgd_model", "cgd_report"],
                name="unlearn_with_cgd",
            ),
            node(
                nodes.retrain_on_clean_subset,
                ["poisoned_train", "cgd_split", "dataset_info", "params:victim", "params:runtime"],
                ["retrain_model", "retrain_report"],
                name="retrain_on_clean_subset",
            ),
            node(
                nodes.anti_backdoor_learning_defense,
                ["poisoned_train", "dataset_info", "params:abl", "params:victim", "params:runtime"],
                ["abl_model", "abl_report"],
                name="anti_backdoor_learning",
            ),
            node(nodes.cgd_clean_data, ["poisoned_train", "cgd_split"], "cgd_clean_data", name="cgd_clean_data"),
            node(
                nodes.oracle_clean_data,
                ["train_set", "params:oracle_fraction", "params:runtime"],
                "oracle_clean_data",
                name="oracle_clean_data",
            ),
            *(
                node(
                    function,
                    ["victim_model", f"{source}_clean_data", f"params:{section}", "params:runtime"],
                    [f"{prefix}_{source}_model", f"{prefix}_{source}_report"],
                    name=f"{name}_{source}",
                )
                for prefix, function, section, name in CLEAN_DATA_DEFENSES
                for source in ("cgd", "oracle")
            ),
            node(
                nodes.evaluate_defenses,
                {"attack_metrics": "attack_metrics", "test_set": "test_set", "backdoor_test": "backdoor_test",
                 "runtime": "params:runtime"}  # fmt: skip
                | {f"{d}_{part}": f"{d}_{part}" for d in DEFENSES for part in ("model", "report")},
                "defense_metrics",
                name="evaluate_defenses",
            ),
        ]
    )


def create_defense_pipeline(name: str) -> Pipeline:
    return Pipeline(create_defense_template(), namespace=name, inputs=SHARED_INPUTS, parameters=SHARED_PARAMETERS)


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_defense_pipeline(n) for n in ATTACK_NAMESPACES), Pipeline([]))
