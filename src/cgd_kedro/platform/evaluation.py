"""Evaluating (and optionally defending) a submitted classifier against every attack on disk."""

from __future__ import annotations

from collections.abc import Callable

from cgd_kedro.metrics import defense_effectiveness_rating, evaluate_backdoor
from cgd_kedro.models.classifier import from_checkpoint
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.pipelines.cgd_unlearn.nodes import unlearn_with_cgd
from cgd_kedro.platform.project import ProjectView


def evaluate_submission(
    view: ProjectView, checkpoint: dict, defend: bool, log: Callable[[str], None]
) -> dict:
    """``{attack: {clean_acc, asr, ra}}`` of the submitted model on each attack's latest test sets;
    with ``defend``, also ``cgd`` results after CGD unlearning with that attack's latest split and
    CLIP logits (as ``cgd_unlearn`` does it, with the env's ``cgd`` parameters)."""
    test_set = view.load("test_set")
    if test_set is None:
        raise ValueError(
            f"no test_set saved for dataset {view.dataset!r}: run the poison pipeline first"
        )
    runtime = view.params["runtime"]
    device = RuntimeConfig.from_params(runtime).torch_device
    model = from_checkpoint(checkpoint, device, source="submitted model")
    results: dict[str, dict] = {}
    for experiment in (e for e in view.experiments() if e.model == "classifier"):
        attack = experiment.attack
        backdoor_test = view.load(f"{attack}.backdoor_test")
        if backdoor_test is None:
            continue
        before = evaluate_backdoor(model, test_set, backdoor_test, device=device)
        results[attack] = {"submitted": before}
        log(
            f"{attack}: clean_acc {before['clean_acc']:.4f}, asr {before['asr']:.4f}, "
            f"ra {before['ra']:.4f}"
        )
        if not defend:
            continue
        inputs = [
            view.load(f"{attack}.{name}") for name in ("poisoned_train", "cgd_split", "clip_logits")
        ]
        if any(value is None for value in inputs):
            log(f"{attack}: no CGD split on disk, not defended (run the split pipeline first)")
            continue
        poisoned_train, split, clip_logits = inputs
        defended, report = unlearn_with_cgd(
            checkpoint,
            poisoned_train,
            split,
            clip_logits,
            test_set,
            backdoor_test,
            view.params["cgd"],
            runtime,
        )
        after = evaluate_backdoor(
            from_checkpoint(defended, device), test_set, backdoor_test, device=device
        )
        results[attack]["cgd"] = after | {
            "der": defense_effectiveness_rating(before, after),
            "seconds": report["seconds"],
        }
        log(
            f"{attack} after CGD: clean_acc {after['clean_acc']:.4f}, asr {after['asr']:.4f} "
            f"({report['seconds']:.0f} s)"
        )
    if not results:
        raise ValueError(
            f"no attack results on disk for dataset {view.dataset!r}: run the poison pipeline first"
        )
    return results
