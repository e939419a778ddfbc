"""Nodes of the ``cgd_unlearn`` pipeline:
thin adapters to ``cgd_kedro.cgd.unlearn`` and ``cgd_kedro.defenses``.

The defenses see the training images, their *given* labels, the CGD split, CLIP's logits and (for
the oracle variants) a genuinely clean slice of the unpoisoned training set. The test sets reach
``unlearn_with_cgd`` only to record per-epoch test CA/ASR for the report; they never steer it (a
test checks that garbage test data gives the same model). Every defense returns its model and a
report ``{seconds, ...}``; ``evaluate_defenses`` measures them all on the test sets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from cgd_kedro.cgd.unlearn import UnlearnConfig, cgd_unlearn
from cgd_kedro.config import check_share
from cgd_kedro.data.imageset import ImageSet, subset
from cgd_kedro.defenses.abl import ABLConfig, anti_backdoor_learning
from cgd_kedro.defenses.mcr import (
    MCRConfig,
    curve_from_tensors,
    curve_to_tensors,
    measure_curve,
    mode_connectivity_repair,
)
from cgd_kedro.defenses.registry import CleanDataDefense
from cgd_kedro.metrics import defense_effectiveness_rating, evaluate_backdoor
from cgd_kedro.models.classifier import build_classifier, from_checkpoint, to_checkpoint
from cgd_kedro.parameters import RuntimeConfig, VictimConfig
from cgd_kedro.pipelines.poison.nodes import train_with_victim_recipe
from cgd_kedro.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)


def unlearn_with_cgd(
    victim_model: dict,
    poisoned_train: ImageSet,
    cgd_split: dict,
    clip_logits: dict,
    test_set: ImageSet,
    backdoor_test: ImageSet,
    cgd: dict,
    runtime: dict,
) -> tuple[dict, dict]:
    """CGD's unlearning of the victim: the defended checkpoint and ``{seconds, history}``
    (validation CA steers early stopping; test CA/ASR are recorded for the report only)."""
    config = UnlearnConfig.from_params(cgd)
    run = RuntimeConfig.from_params(runtime)
    model = from_checkpoint(victim_model, run.torch_device, source="victim_model")
    reporting_seconds = 0.0
    curve_generator = torch.Generator().manual_seed(derive_seed(run.seed, "cgd_curve"))
    curve_test, curve_backdoor = (
        sample_rows(s, config.curve_test_images, curve_generator) for s in (test_set, backdoor_test)
    )

    def test_figures(m: torch.nn.Module) -> dict:
        # Timed apart: the per-epoch test evaluation is for the report,
        # not part of the defense's cost.
        nonlocal reporting_seconds
        started = time.perf_counter()
        figures = evaluate_backdoor(m, curve_test, curve_backdoor, device=run.torch_device)
        reporting_seconds += time.perf_counter() - started
        return {f"test_{k}": v for k, v in figures.items()}

    start = time.perf_counter()
    history = cgd_unlearn(
        model,
        poisoned_train["images"],
        poisoned_train["labels"],
        cgd_split["clean_indices"],
        cgd_split["triggered"].nonzero().squeeze(1),
        clip_logits["logits"],
        config,
        device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, "cgd_unlearn")),
        on_epoch_end=test_figures,
    )
    report = {
        "seconds": time.perf_counter() - start - reporting_seconds,
        "reporting_seconds": reporting_seconds,
        "history": history,
    }
    return to_checkpoint(model, victim_model["architecture"], victim_model["num_classes"]), report


def sample_rows(image_set: ImageSet, n: int | None, generator: torch.Generator) -> ImageSet:
    """``n`` random rows of ``image_set`` (all of it for ``None`` or ``n`` >= its size)."""
    total = image_set["labels"].shape[0]
    if n is None or n >= total:
        return image_set
    return subset(image_set, torch.randperm(total, generator=generator)[:n])


def retrain_on_clean_subset(
    poisoned_train: ImageSet, cgd_split: dict, dataset_info: dict, victim: dict, runtime: dict
) -> tuple[dict, dict]:
    """A fresh model trained with the victim's recipe on CGD's (balanced) clean subset only."""
    indices = cgd_split["clean_indices"]
    checkpoint, history = train_with_victim_recipe(
        poisoned_train["images"][indices],
        poisoned_train["labels"][indices],
        dataset_info,
        victim,
        runtime,
        "retrain",
    )
    return checkpoint, {"seconds": history[-1]["seconds"], "history": history}


def anti_backdoor_learning_defense(
    poisoned_train: ImageSet, dataset_info: dict, abl: dict, victim: dict, runtime: dict
) -> tuple[dict, dict]:
    """ABL from scratch on the poisoned set (victim's architecture); the model and its report,
    including the indices ABL isolated as backdoor samples."""
    config = ABLConfig.from_params(abl)
    architecture = VictimConfig.from_params(victim).architecture
    run = RuntimeConfig.from_params(runtime)
    generator = seed_everything(derive_seed(run.seed, "abl"))
    model = build_classifier(
        architecture, dataset_info["num_classes"], dataset_info["mean"], dataset_info["std"]
    )
    start = time.perf_counter()
    result = anti_backdoor_learning(
        model,
        poisoned_train["images"],
        poisoned_train["labels"],
        config,
        device=run.torch_device,
        generator=generator,
    )
    report = {
        "seconds": time.perf_counter() - start,
        "isolated": result["isolated"].tolist(),
        "history": result["history"],
    }
    return to_checkpoint(model, architecture, dataset_info["num_classes"]), report


def cgd_clean_data(poisoned_train: ImageSet, cgd_split: dict) -> ImageSet:
    """CGD's clean subset (distinct samples, given labels) as the clean set of a clean-data defense,
    with CGD's triggered subset alongside (``triggered_images``/``triggered_labels``, training data:
    MCR's ASR proxy)."""
    indices = cgd_split["clean"].nonzero().squeeze(1)
    triggered = cgd_split["triggered"].nonzero().squeeze(1)
    return {
        "images": poisoned_train["images"][indices],
        "labels": poisoned_train["labels"][indices],
        "triggered_images": poisoned_train["images"][triggered],
        "triggered_labels": poisoned_train["labels"][triggered],
    }


def oracle_clean_data(train_set: ImageSet, oracle_fraction: float, runtime: dict) -> ImageSet:
    """A genuinely clean random slice (``oracle_fraction``, reference 5%) of the *unpoisoned*
    training set: what a clean-data defense is normally given."""
    check_share("oracle_fraction", oracle_fraction)
    n = train_set["labels"].shape[0]
    generator = seed_everything(
        derive_seed(RuntimeConfig.from_params(runtime).seed, "oracle_clean")
    )
    indices = torch.randperm(n, generator=generator)[: max(1, round(oracle_fraction * n))]
    return {"images": train_set["images"][indices], "labels": train_set["labels"][indices]}


def _defend_with_clean_data(
    victim_model: dict, clean_data: ImageSet, runtime: dict, defend, config, stream: str, **extra
) -> tuple[dict, dict]:
    """Run a clean-data defense
    ``defend(model, images, labels, config, device=, generator=, **extra)`` on a copy of the victim;
    the defended checkpoint and ``{seconds, clean_samples, ...}``."""
    run = RuntimeConfig.from_params(runtime)
    model = from_checkpoint(victim_model, run.torch_device, source="victim_model")
    start = time.perf_counter()
    result = defend(
        model,
        clean_data["images"],
        clean_data["labels"],
        config,
        device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, stream)),
        **extra,
    )
    report = {
        "seconds": time.perf_counter() - start,
        "clean_samples": int(clean_data["labels"].shape[0]),
    } | result
    return to_checkpoint(model, victim_model["architecture"], victim_model["num_classes"]), report


def clean_data_node(defense: CleanDataDefense) -> Callable[..., tuple[dict, dict]]:
    """The node function of a registered clean-data defense: its typed parameters, then
    ``_defend_with_clean_data`` (seeded by the defense's parameter section)."""

    def defend_victim(
        victim_model: dict, clean_data: ImageSet, params: dict, runtime: dict
    ) -> tuple[dict, dict]:
        config = defense.config.from_params(params)
        return _defend_with_clean_data(
            victim_model, clean_data, runtime, defense.defend, config, defense.section
        )

    defend_victim.__name__ = defend_victim.__qualname__ = f"{defense.node_name}_victim"
    defend_victim.__doc__ = (
        f"{defense.description} of the victim with the given clean set; the defended checkpoint "
        "and its report."
    )
    return defend_victim


def mode_connectivity_repair_victim(
    victim_model: dict, clean_data: ImageSet, mcr: dict, runtime: dict
) -> tuple[dict, dict, dict]:
    """MCR of the victim with the given clean set: the checkpoint at the chosen t, the report, and
    the curve (``curve_to_tensors``) for the evaluation's test figures along t. Fed CGD's subset,
    ``mcr.selection: proxy`` may use its triggered subset (oracle
    clean data has none: ``fixed``)."""
    config = MCRConfig.from_params(mcr)
    triggered = (
        (clean_data["triggered_images"], clean_data["triggered_labels"])
        if "triggered_images" in clean_data
        else None
    )
    if triggered is None and config.selection == "proxy":
        config = config.model_copy(update={"selection": "fixed"})
        log.info(
            "mcr: oracle clean data has no triggered subset; choosing t = %.2f (selection: fixed)",
            config.t,
        )
    checkpoint, report = _defend_with_clean_data(
        victim_model,
        clean_data,
        runtime,
        mode_connectivity_repair,
        config,
        "mcr",
        triggered=triggered,
    )
    curve = curve_to_tensors(report.pop("bends"), report.pop("batchnorm_indices"))
    return checkpoint, report, curve


def curve_with_test_figures(
    victim_model: dict,
    curve: dict,
    clean_data: ImageSet,
    report: dict,
    test_set: ImageSet,
    backdoor_test: ImageSet,
    device: torch.device,
) -> list[dict]:
    """MCR's validation figures along t (from its ``report``) joined with test CA / ASR / RA at the
    same points, BatchNorm re-estimated on the same clean samples as the defense did. For the report
    only: the defense chose its t before any of this was measured."""
    bends, batchnorm_indices = curve_from_tensors(curve)
    model = from_checkpoint(victim_model, device, source="victim_model")

    def on_test(m: torch.nn.Module) -> dict:
        return {
            f"test_{k}": v
            for k, v in evaluate_backdoor(m, test_set, backdoor_test, device=device).items()
        }

    points = measure_curve(
        model,
        bends,
        clean_data["images"][batchnorm_indices],
        [p["t"] for p in report["curve"]],
        on_test,
        device=device,
    )
    return [validation | test for validation, test in zip(report["curve"], points, strict=True)]


def evaluate_defenses(
    attack_metrics: dict,
    test_set: ImageSet,
    backdoor_test: ImageSet,
    runtime: dict,
    victim_model: dict | None = None,
    **defended,
) -> dict:
    """``{defense: {clean_acc, asr, ra, der, seconds[, pruned][, t, curve]}}`` on the test sets, DER
    against the undefended victim (``none``, taken from its ``attack_metrics``, measured on the same
    test sets). ``defended`` holds ``<defense>_model`` checkpoints and ``<defense>_report`` dicts,
    and for MCR ``mcr_<source>_curve`` with the clean set ``<source>_clean_data`` it used: their
    rows get the chosen ``t`` and the ``curve`` (validation and test
    figures at every measured t)."""
    device = RuntimeConfig.from_params(runtime).torch_device
    before = {key: attack_metrics[key] for key in ("clean_acc", "asr", "ra")}
    metrics = {"none": before | {"der": 0.5, "seconds": 0.0}}
    for key in sorted(k for k in defended if k.endswith("_model")):
        name = key.removesuffix("_model")
        model = from_checkpoint(defended[key], device, source=key)
        after = evaluate_backdoor(model, test_set, backdoor_test, device=device)
        report = defended[f"{name}_report"]
        metrics[name] = after | {
            "der": defense_effectiveness_rating(before, after),
            "seconds": report["seconds"],
        }
        if "pruned" in report:  # pruning defenses: how many channels (0 = the undefended model)
            metrics[name]["pruned"] = int(report["pruned"])
        if f"{name}_curve" in defended:
            source = name.rpartition("_")[2]
            curve = curve_with_test_figures(
                victim_model,
                defended[f"{name}_curve"],
                defended[f"{source}_clean_data"],
                report,
                test_set,
                backdoor_test,
                device,
            )
            metrics[name] |= {"t": report["t"], "curve": curve}
        log.info(
            "%s: clean_acc %.4f, asr %.4f, ra %.4f, %.0f s",
            name,
            after["clean_acc"],
            after["asr"],
            after["ra"],
            metrics[name]["seconds"],
        )
    return metrics
