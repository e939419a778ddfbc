"""The ``cgd_robustness`` pipeline: CGD with a compromised reference CLIP.

CGD trusts its public CLIP. This pipeline runs the split and the unlearning again for each attack
with the backdoored CLIP that ``abd_defense`` implants (``ROBUSTNESS_CLIP_ATTACK``) in place of the
reference CLIP, so the report can show both side by side (defense ``cgd_bdclip``). The suspicious
models are not retrained: their logits do not depend on CLIP. Its nodes sit in the attack's
namespace and its datasets are the attack's, prefixed ``bdclip_``; it reads the latest
``poisoned_train``, ``suspicious_logits``, ``victim_model``, ``attack_metrics`` and backdoored CLIP,
so ``kedro run --pipelines cgd_robustness`` recomputes nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.cgd_robustness import nodes
from cgd_kedro.pipelines.cgd_unlearn.nodes import unlearn_with_cgd
from cgd_kedro.pipelines.clip_split.nodes import evaluate_split, score_with_clip, split_training_set
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES

# The CLIP attack whose backdoored CLIP stands in for the reference (part of the default run's ABD).
ROBUSTNESS_CLIP_ATTACK = "clip_badnet"
# The attacks the default run repeats CGD on with that CLIP (every attack with --pipelines full).
DEFAULT_ROBUSTNESS_ATTACKS: tuple[
    str, ...
] = ()  # it needs a backdoored CLIP (ABD's clip_badnet): not in the default run
SHARED_INPUTS = {"test_set", "dataset_info"}
SHARED_PARAMETERS = {"params:clip", "params:split", "params:cgd", "params:runtime"}


def create_robustness_template(clip_attack: str = ROBUSTNESS_CLIP_ATTACK) -> Pipeline:
    """Score with the backdoored CLIP, split with the attack's suspicious logits, unlearn,
    evaluate."""
    evaluate = update_wrapper(
        partial(nodes.evaluate_robustness, clip_attack), nodes.evaluate_robustness
    )
    return Pipeline(
        [
            node(
                score_with_clip,
                [
                    "poisoned_train",
                    f"{clip_attack}.backdoored_clip",
                    "dataset_info",
                    "params:clip",
                    "params:runtime",
                ],
                "bdclip_logits",
                name="score_with_backdoored_clip",
            ),
            node(
                split_training_set,
                [
                    "poisoned_train",
                    "bdclip_logits",
                    "suspicious_logits",
                    "params:split",
                    "params:runtime",
                ],
                "bdclip_split",
                name="split_with_backdoored_clip",
            ),
            node(
                evaluate_split,
                ["bdclip_split", "poisoned_train", "params:split"],
                ["bdclip_split_metrics", "bdclip_entropy_scores", "bdclip_entropy_map"],
                name="evaluate_backdoored_clip_split",
            ),
            node(
                unlearn_with_cgd,
                [
                    "victim_model",
                    "poisoned_train",
                    "bdclip_split",
                    "bdclip_logits",
                    "test_set",
                    "backdoor_test",
                    "params:cgd",
                    "params:runtime",
                ],
                ["cgd_bdclip_model", "cgd_bdclip_report"],
                name="unlearn_with_backdoored_clip",
            ),
            node(
                evaluate,
                {
                    "attack_metrics": "attack_metrics",
                    "split_metrics": "bdclip_split_metrics",
                    "test_set": "test_set",
                    "backdoor_test": "backdoor_test",
                    "runtime": "params:runtime",
                    "cgd_model": "cgd_bdclip_model",
                    "cgd_report": "cgd_bdclip_report",
                },
                "cgd_robustness",
                name="evaluate_cgd_robustness",
            ),
        ]
    )


def create_robustness_pipeline(attack: str, clip_attack: str = ROBUSTNESS_CLIP_ATTACK) -> Pipeline:
    return Pipeline(
        create_robustness_template(clip_attack),
        namespace=attack,
        inputs=SHARED_INPUTS | {f"{clip_attack}.backdoored_clip"},
        parameters=SHARED_PARAMETERS,
    )


def create_pipeline(attacks: Sequence[str] = ATTACK_NAMESPACES, **kwargs) -> Pipeline:
    return sum((create_robustness_pipeline(a) for a in attacks), Pipeline([]))
