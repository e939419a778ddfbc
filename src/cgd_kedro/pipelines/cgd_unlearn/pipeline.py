"""The ``cgd_unlearn`` pipeline: one namespaced copy of the defense template per attack.

It reads each attack's latest ``victim_model``, ``poisoned_train``, ``cgd_split`` and
``clip_logits``, so ``kedro run --pipelines cgd_unlearn`` defends without re-running ``poison``
or ``clip_split``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cgd_kedro.defenses.registry import CleanDataDefense, list_defenses
from cgd_kedro.pipelines.cgd_unlearn import nodes
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES

SHARED_INPUTS = {"train_set", "test_set", "dataset_info"}
# The clean-data defenses are those of the registry (`cgd_kedro.defenses.registry`: Fine-Pruning,
# ANP, MCR, I-BAU, and any defense registered before the pipelines are built), read when a
# pipeline is built.


def shared_parameters() -> set[str]:
    return {
        "params:cgd",
        "params:abl",
        *(f"params:{d.section}" for d in list_defenses()),
        "params:oracle_fraction",
        "params:victim",
        "params:runtime",
    }


def all_defenses() -> tuple[str, ...]:
    """Every defense whose model and report go into ``<attack>.defense_metrics``, by row name."""
    return ("cgd", "retrain", "abl", *clean_data_peers()[1:])


def clean_data_peers() -> tuple[str, ...]:
    """CGD and every clean-data defense, CGD-fed and oracle, without the peers that train from
    scratch: ``kedro run --pipelines cgd_unlearn_clean_data`` checks CGD's claim that its clean
    subset can stand in for clean data."""
    return ("cgd", *(row for d in list_defenses() for row in d.rows()))


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

# MCR's node has its own adapter: CGD's triggered subset as its ASR proxy, and a third output, its
# curve of models (``mcr_<source>_curve``), which the evaluation measures along t.
CURVE_DEFENSES = {"mcr": nodes.mode_connectivity_repair_victim}


def clean_data_node_function(defense: CleanDataDefense):
    """The node function of a clean-data defense: its own adapter, else the generic one."""
    return CURVE_DEFENSES.get(defense.name) or nodes.clean_data_node(defense)


def create_defense_template(defenses: Sequence[str] | None = None) -> Pipeline:
    """CGD unlearning and those of its peers named in ``defenses`` (default: all; retraining, ABL,
    the clean-data defenses fed by CGD or by oracle clean data), then one evaluation of them all."""
    known = all_defenses()
    defenses = known if defenses is None else defenses
    unknown = set(defenses) - set(known)
    if "cgd" not in defenses or unknown:
        raise ValueError(
            f"defenses {sorted(defenses)}: must include 'cgd' and name only {list(known)}"
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
        (d, source)
        for d in list_defenses()
        for source in ("cgd", "oracle")
        if f"{d.name}_{source}" in defenses
    ]
    sources = {source for _, source in clean_data}
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
            clean_data_node_function(d),
            ["victim_model", f"{source}_clean_data", f"params:{d.section}", "params:runtime"],
            [f"{d.name}_{source}_model", f"{d.name}_{source}_report"]
            + ([f"{d.name}_{source}_curve"] if d.name in CURVE_DEFENSES else []),
            name=f"{d.node_name}_{source}",
        )
        for d, source in clean_data
    ]
    # MCR's curve is measured on the test sets along t here, for the report
    # only (its t is already chosen).
    with_curve = [(d.name, source) for d, source in clean_data if d.name in CURVE_DEFENSES]
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
                for d in known
                if d in defenses
                for part in ("model", "report")
            }
            | curves,
            "defense_metrics",
            name="evaluate_defenses",
        )
    )
    return Pipeline(nodes_)


def create_defense_pipeline(name: str, defenses: Sequence[str] | None = None) -> Pipeline:
    template = create_defense_template(defenses)
    used = template.inputs()  # a template without some peers reads fewer shared inputs
    return Pipeline(
        template, namespace=name, inputs=SHARED_INPUTS & used, parameters=shared_parameters() & used
    )


def create_pipeline(
    attacks: Sequence[str] = ATTACK_NAMESPACES,
    peer_attacks: Sequence[str] | None = None,
    peers: Sequence[str] | None = None,
    **kwargs,
) -> Pipeline:
    """The defenses ``peers`` (default: all) for each of ``attacks``; with ``peer_attacks``, only
    for those, CGD alone for the rest (the default run keeps its ten minutes that way)."""
    with_peers = set(attacks if peer_attacks is None else peer_attacks)
    return sum(
        (create_defense_pipeline(a, peers if a in with_peers else ("cgd",)) for a in attacks),
        Pipeline([]),
    )
