"""Nodes of the ``cgd_robustness`` pipeline. Scoring, splitting and unlearning reuse the nodes of
``clip_split`` and ``cgd_unlearn``; only the summary is new."""

from __future__ import annotations

from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.pipelines.cgd_unlearn.nodes import evaluate_defenses


def evaluate_robustness(
    reference: str,
    attack_metrics: dict,
    split_metrics: dict,
    test_set: ImageSet,
    backdoor_test: ImageSet,
    runtime: dict,
    cgd_model: dict,
    cgd_report: dict,
) -> dict:
    """``{reference, split, cgd}``: which backdoored CLIP was the reference, the split's quality
    against the ground truth, and the defended model's ``{clean_acc, asr, ra, der, seconds}``
    (DER against the victim's ``attack_metrics``, as in ``cgd_unlearn``)."""
    metrics = evaluate_defenses(
        attack_metrics, test_set, backdoor_test, runtime, cgd_model=cgd_model, cgd_report=cgd_report
    )
    return {"reference": reference, "split": split_metrics, "cgd": metrics["cgd"]}
