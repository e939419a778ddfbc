"""The ``cgd_unlearn`` pipeline: one namespaced copy of the defense template per attack.

It reads each attack's latest ``victim_model``, ``poisoned_train``, ``cgd_split`` and
``clip_logits``, so ``kedro run --pipelines cgd_unlearn`` defends without re-running ``poison``
or ``clip_split``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.cgd_unlearn import nodes
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES

SHARED_INPUTS = {"train_set", "test_set", "dataset_info"}
SHARED_PARAMETERS = {
    "params:cgd",
    "params:abl",
    "params:fine_pruning",
    "params:anp",
    "params:mcr",
    "params:ibau",
    "params:oracle_fraction",
    "params:victim",
    "params:runtime",
}
# Defenses whose model and report go into `<attack>.defense_metrics`, by name.
DEFENSES: tuple[str, ...] = (
    "cgd",
    "retrain",
    "abl",
    "fp_cgd",
    "fp_oracle",
    "anp_cgd",
    "anp_oracle",
    "mcr_cgd",
    "mcr_oracle",
    "ibau_cgd",
    "ibau_oracle",
)
# The attacks the default run compares CGD's peers on (CGD itself runs on every default attack), and
# which peers: the clean-data defenses, CGD-fed vs oracle. Retraining and ABL train from scratch
# (ABL three times a victim's epochs) and do not fit the default run's ten minutes on 2 CPU cores;
# `kedro run --pipelines cgd_unlearn` and `full` run them.
DEFAULT_PEER_ATTACKS: tuple[str, ...] = ("badnets",)
DEFAULT_PEERS: tuple[str, ...] = ("cgd", "fp_cgd", "fp_oracle", "anp_cgd", "anp_oracle")


# Peers that need no clean data: defense name -> (node function, inputs, node name).
PEERS_WITHOUT_CLEAN_DATA = {
    "retrain": (
        nodes.retrain_on_clean_subset,
        ["poisoned_train", "cgd_split", "dataset_info", "params:victim", "params:runtime"],
        "retrain_on_clean_subset",
    ),
    "abl": (
        nodes.anti_backdoor_learning_defense,
        ["poisoned_train", "dataset_info", "params:abl", "params:victim", "params:runtime"],
        "anti_backdoor_learning",
    ),
}

# Clean-data defenses, each run on CGD's clean subset and on oracle clean data:
# (defense-name prefix, node function, parameter section, node name).
CLEAN_DATA_DEFENSES = (
    ("fp", nodes.fine_prune_victim, "fine_pruning", "fine_prune"),
    ("anp", nodes.prune_neurons_victim, "anp", "adversarial_neuron_pruning"),
    ("mcr", nodes.mode_connectivity_repair_victim, "mcr", "mode_connectivity_repair"),
    ("ibau", nodes.implicit_unlearning_victim, "ibau", "implicit_backdoor_unlearning"),
)
# CGD and every clean-data defense, CGD-fed and oracle, without the peers that train from scratch:
# `kedro run --pipelines cgd_unlearn_clean_data` checks CGD's claim that its clean
# subset can stand in for clean data.
CLEAN_DATA_PEERS: tuple[str, ...] = (
    "cgd",
    *(f"{prefix}_{source}" for prefix, *_ in CLEAN_DATA_DEFENSES for source in ("cgd", "oracle")),
)
# Clean-data defenses that also output a curve of models
# (``<prefix>_<source>_curve``) for the evaluation.
CURVE_DEFENSES = {"mcr"}


def create_defense_template(defenses: Sequence[str] = DEFENSES) -> Pipeline:
    """CGD unlearning and those of its peers named in ``defenses`` (retraining, ABL, the clean-data
    defenses fed by CGD or by oracle clean data), then one evaluation of them all."""
    unknown = set(defenses) - set(DEFENSES)
    if "cgd" not in defenses or unknown:
        raise ValueError(
            f"defenses {sorted(defenses)}: must include 'cgd' and name only {list(DEFENSES)}"
        )
    nodes_ = [
        node(
            nodes.unlearn_with_cgd,
            [
                "victim_model",
                "poisoned_train",
                "cgd_split",
                "clip_logits",
                "test_set",
                "backdoor_test",
                "params:cgd",
                "params:runtime",
            ],
            ["cgd_model", "cgd_report"],
            name="unlearn_with_cgd",
        )
    ]
    nodes_ += [
        node(function, inputs, [f"{defense}_model", f"{defense}_report"], name=name)
        for defense, (function, inputs, name) in PEERS_WITHOUT_CLEAN_DATA.items()
        if defense in defenses
    ]
    clean_data = [
        (p, f, section, name, source)
        for p, f, section, name in CLEAN_DATA_DEFENSES
        for source in ("cgd", "oracle")
        if f"{p}_{source}" in defenses
    ]
    sources = {source for *_, source in clean_data}
    if "cgd" in sources:
        nodes_.append(
            node(
                nodes.cgd_clean_data,
                ["poisoned_train", "cgd_split"],
                "cgd_clean_data",
                name="cgd_clean_data",
            )
        )
    if "oracle" in sources:
        nodes_.append(
            node(
                nodes.oracle_clean_data,
                ["train_set", "params:oracle_fraction", "params:runtime"],
                "oracle_clean_data",
                name="oracle_clean_data",
            )
        )
    nodes_ += [
        node(
            function,
            ["victim_model", f"{source}_clean_data", f"params:{section}", "params:runtime"],
            [f"{prefix}_{source}_model", f"{prefix}_{source}_report"]
            + ([f"{prefix}_{source}_curve"] if prefix in CURVE_DEFENSES else []),
            name=f"{name}_{source}",
        )
        for prefix, function, section, name, source in clean_data
    ]
    # MCR's curve is measured on the test sets along t here, for the report
    # only (its t is already chosen).
    with_curve = [(p, source) for p, *_, source in clean_data if p in CURVE_DEFENSES]
    curves = {
        name: name
        for p, source in with_curve
        for name in (f"{p}_{source}_curve", f"{source}_clean_data", "victim_model")
    }
    nodes_.append(
        node(
            nodes.evaluate_defenses,
            {
                "attack_metrics": "attack_metrics",
                "test_set": "test_set",
                "backdoor_test": "backdoor_test",
                "runtime": "params:runtime",
            }
            | {
                f"{d}_{part}": f"{d}_{part}"
                for d in DEFENSES
                if d in defenses
                for part in ("model", "report")
            }
            | curves,
            "defense_metrics",
            name="evaluate_defenses",
        )
    )
    return Pipeline(nodes_)


def create_defense_pipeline(name: str, defenses: Sequence[str] = DEFENSES) -> Pipeline:
    template = create_defense_template(defenses)
    used = template.inputs()  # a template without some peers reads fewer shared inputs
    return Pipeline(
        template, namespace=name, inputs=SHARED_INPUTS & used, parameters=SHARED_PARAMETERS & used
    )


def create_pipeline(
    attacks: Sequence[str] = ATTACK_NAMESPACES,
    peer_attacks: Sequence[str] | None = None,
    peers: Sequence[str] = DEFENSES,
    **kwargs,
) -> Pipeline:
    """The defenses ``peers`` (default: all) for each of ``attacks``; with ``peer_attacks``, only
    for those, CGD alone for the rest (the default run keeps its ten minutes that way)."""
    with_peers = set(attacks if peer_attacks is None else peer_attacks)
    return sum(
        (create_defense_pipeline(a, peers if a in with_peers else ("cgd",)) for a in attacks),
        Pipeline([]),
    )
