"""The ``abd_defense`` pipeline: one namespaced copy of the CLIP-backdoor template per CLIP attack.

Shared: the two image-caption corpora (poisonable fine-tuning pairs, clean defense pairs) and the
latest ``reference_clip``. Per attack namespace (``clip_badnet``, ``clip_blended``,
``clip_badclip``): trigger -> poisoned pairs -> backdoored CLIP -> ABD's adversarial patch -> FT /
CleanCLIP / ABD -> metrics and figures. ``abd_report`` collects every
namespace's metrics into one table.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cgd_kedro.clip.triggers import CLIP_ATTACK_NAMESPACES
from cgd_kedro.pipelines.abd_defense import nodes

# The CLIP attacks `kedro run` defends: none. ABD's three CLIP fine-tunings (FT, CleanCLIP, ABD) and
# the backdoor implant take about 5 min per CLIP attack on 2 CPU cores, which does not fit the
# default run's ten minutes; `kedro run --pipelines abd_quick` runs one (clip_badnet),
# `--pipelines abd_defense` all three.
DEFAULT_CLIP_ATTACKS: tuple[str, ...] = ()
QUICK_CLIP_ATTACKS: tuple[str, ...] = ("clip_badnet",)
SHARED_INPUTS = {
    "reference_clip",
    "clip_finetune_pairs",
    "clip_defense_pairs",
    "test_set",
    "dataset_info",
}
SHARED_PARAMETERS = {
    "params:clip_attack",
    "params:clip_defense",
    "params:clip",
    "params:abd",
    "params:runtime",
}
ATTACK = [
    "params:clip_attack",
    "params:attack",
]  # shared defaults, then the namespace's own section
DEFENSE_INPUTS = [
    "backdoored_clip",
    "clip_defense_pairs",
    "clip_trigger",
    "test_set",
    "dataset_info",
    "params:clip_defense",
    "params:clip",
    *ATTACK,
    "params:runtime",
]


def create_corpora_pipeline() -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.build_clip_corpora,
                [
                    "params:dataset",
                    "train_set",
                    "dataset_info",
                    "params:clip_corpus",
                    "params:clip",
                    "params:runtime",
                ],
                ["clip_finetune_pairs", "clip_defense_pairs"],
                name="build_clip_corpora",
            )
        ]
    )


def create_clip_attack_template() -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.make_clip_trigger,
                [
                    "reference_clip",
                    "clip_finetune_pairs",
                    "dataset_info",
                    *ATTACK,
                    "params:runtime",
                ],
                "clip_trigger",
                name="make_clip_trigger",
            ),
            node(
                nodes.poison_clip_pairs,
                ["clip_finetune_pairs", "clip_trigger", "dataset_info", *ATTACK, "params:runtime"],
                "poisoned_pairs",
                name="poison_clip_pairs",
            ),
            node(
                nodes.implant_clip_backdoor,
                ["reference_clip", "poisoned_pairs", *ATTACK, "params:runtime"],
                ["backdoored_clip", "backdoor_report"],
                name="implant_clip_backdoor",
            ),
            node(
                nodes.craft_adversarial_patch,
                ["backdoored_clip", "clip_defense_pairs", "params:abd", "params:runtime"],
                ["adversarial_patch", "patch_report"],
                name="craft_adversarial_patch",
            ),
            node(nodes.defend_with_ft, DEFENSE_INPUTS, "ft_report", name="defend_with_ft"),
            node(
                nodes.defend_with_cleanclip,
                DEFENSE_INPUTS,
                "cleanclip_report",
                name="defend_with_cleanclip",
            ),
            node(
                nodes.defend_with_abd,
                [*DEFENSE_INPUTS, "adversarial_patch"],
                "abd_report",
                name="defend_with_abd",
            ),
            node(
                nodes.evaluate_clip_defenses,
                [
                    "backdoored_clip",
                    "backdoor_report",
                    "clip_trigger",
                    "test_set",
                    "dataset_info",
                    "params:clip",
                    *ATTACK,
                    "params:runtime",
                    "ft_report",
                    "cleanclip_report",
                    "abd_report",
                    "patch_report",
                ],
                "clip_defense_metrics",
                name="evaluate_clip_defenses",
            ),
            node(
                nodes.plot_abd_samples,
                ["clip_defense_pairs", "clip_trigger", "adversarial_patch", *ATTACK],
                "abd_samples_png",
                name="plot_abd_samples",
            ),
            node(
                nodes.plot_similarity,
                [
                    "backdoored_clip",
                    "clip_defense_pairs",
                    "clip_trigger",
                    "adversarial_patch",
                    "dataset_info",
                    *ATTACK,
                    "params:runtime",
                ],
                "similarity_panel_png",
                name="plot_similarity",
            ),
            node(
                nodes.plot_clip_defense_curves,
                ["clip_defense_metrics", "ft_report", "cleanclip_report", "abd_report"],
                "clip_defense_curves_png",
                name="plot_clip_defense_curves",
            ),
        ]
    )


def create_clip_attack_pipeline(namespace: str) -> Pipeline:
    return Pipeline(
        create_clip_attack_template(),
        namespace=namespace,
        inputs=SHARED_INPUTS,
        parameters=SHARED_PARAMETERS,
    )


def create_report_pipeline(namespaces: list[str]) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.collect_abd_report,
                {"dataset_info": "dataset_info", "runtime": "params:runtime"}
                | {f"{ns}_metrics": f"{ns}.clip_defense_metrics" for ns in namespaces},
                "abd_report",
                name="collect_abd_report",
            )
        ]
    )


def create_pipeline(namespaces: Sequence[str] | None = None, **kwargs) -> Pipeline:
    """The corpora, the CLIP attacks ``namespaces`` (``None``: all) and ``abd_report``
    (empty without any)."""
    namespaces = list(CLIP_ATTACK_NAMESPACES if namespaces is None else namespaces)
    return (
        create_corpora_pipeline()
        + sum((create_clip_attack_pipeline(ns) for ns in namespaces), Pipeline([]))
        + create_report_pipeline(namespaces)
    )
