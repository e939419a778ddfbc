"""Nodes of the ``poison`` pipeline:
thin adapters from parameters and catalog data to the torch core."""

from __future__ import annotations

import logging
import time

import torch

from cgd_kedro.attacks.base import AttackContext, State
from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set
from cgd_kedro.clip.reference import ClipConfig
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.sources import DatasetConfig, hold_out_clip_slice, read_source
from cgd_kedro.metrics import accuracy, evaluate_backdoor, predict_logits
from cgd_kedro.model_cache import cached_training
from cgd_kedro.models.classifier import build_classifier, from_checkpoint, to_checkpoint
from cgd_kedro.parameters import RuntimeConfig, VictimConfig
from cgd_kedro.runtime import derive_seed, seed_everything
from cgd_kedro.training.classifier import train_classifier

log = logging.getLogger(__name__)


def load_dataset(dataset: dict, clip: dict) -> tuple[ImageSet, ImageSet, dict, ImageSet]:
    """Generate the embedded world or read the configured real dataset (decoded once, then cached).

    Returns the train set, the test set, ``dataset_info`` (name, class names, normalisation),
    which every later node reads instead of re-deriving it, and the slice held out of the training
    set for the CLIP stand-in (empty unless a real dataset has no ``clip.weights``). The train set
    and the slice carry ``source_index``, each image's row in the dataset as read.
    """
    config = DatasetConfig.from_params(dataset)
    clip_weights = ClipConfig.from_params(clip).weights
    source_train, test_set, class_names = read_source(config)
    holdout = config.clip_holdout_size(clip_weights)
    train_set, clip_holdout_set = hold_out_clip_slice(
        source_train, holdout, len(class_names), config.clip_holdout.seed
    )
    info = {
        "name": config.name,
        "format": "generated" if config.name == "embedded" else config.resolved_format(),
        "class_names": class_names,
        "num_classes": len(class_names),
        "image_size": int(train_set["images"].shape[-1]),
        "n_train": int(train_set["labels"].shape[0]),
        "n_test": int(test_set["labels"].shape[0]),
        "n_clip_holdout": holdout,
        "mean": list(config.mean),
        "std": list(config.std),
    }
    log.info(
        "dataset %s: %d train / %d test images, %d classes%s",
        config.name,
        info["n_train"],
        info["n_test"],
        info["num_classes"],
        f"; {holdout} more held out for the CLIP stand-in" if holdout else "",
    )
    return train_set, test_set, info, clip_holdout_set


def train_with_victim_recipe(
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset_info: dict,
    victim: dict,
    runtime: dict,
    stream: str,
) -> tuple[dict, list[dict]]:
    """A fresh ``victim.architecture`` model trained with the victim's recipe, seeded by ``stream``;
    its checkpoint and per-epoch history (the last record carries the training ``seconds``)."""
    config = VictimConfig.from_params(victim)
    run = RuntimeConfig.from_params(runtime)
    generator = seed_everything(derive_seed(run.seed, stream))
    model = build_classifier(
        config.architecture, dataset_info["num_classes"], dataset_info["mean"], dataset_info["std"]
    )
    start = time.perf_counter()
    history = train_classifier(
        model,
        images,
        labels,
        config.training,
        device=run.torch_device,
        generator=generator,
        description=stream,
    )
    history[-1]["seconds"] = time.perf_counter() - start
    return to_checkpoint(model, config.architecture, dataset_info["num_classes"]), history


def train_clean_model(
    train_set: ImageSet, test_set: ImageSet, dataset_info: dict, victim: dict, runtime: dict
) -> tuple[dict, dict]:
    """The clean reference: the victim's recipe on the unpoisoned training set.

    It is the yardstick for each victim's clean accuracy and the surrogate that LC, LF and
    TrojanNN optimise their triggers against. Returns its checkpoint and ``{clean_acc, seconds}``.
    """
    run = RuntimeConfig.from_params(runtime)

    def train() -> tuple[dict, dict]:
        checkpoint, history = train_with_victim_recipe(
            train_set["images"], train_set["labels"], dataset_info, victim, runtime, "clean_model"
        )
        return checkpoint.pop("state_dict"), {"checkpoint": checkpoint, "history": history}

    settings = {
        "victim": VictimConfig.from_params(victim).model_dump(),
        "mean": dataset_info["mean"],
        "std": dataset_info["std"],
    }
    state_dict, trained, _ = cached_training(
        run.cache_dir,
        "clean_model",
        settings=settings,
        seed=run.seed,
        device=run.torch_device,
        data=[train_set["images"], train_set["labels"]],
        train=train,
    )
    checkpoint, history = trained["checkpoint"] | {"state_dict": state_dict}, trained["history"]
    model = from_checkpoint(checkpoint, run.torch_device, source="clean_model")
    predictions = predict_logits(model, test_set["images"], device=run.torch_device).argmax(1)
    metrics = {
        "clean_acc": accuracy(predictions, test_set["labels"]),
        "seconds": history[-1]["seconds"],
    }
    log.info("clean model: clean_acc %.4f", metrics["clean_acc"])
    return checkpoint, metrics


def prepare_attack(
    train_set: ImageSet,
    dataset_info: dict,
    attack: dict,
    runtime: dict,
    clean_model: dict | None = None,
) -> State:
    """Generate or learn what the trigger needs (pattern, perturbation, network weights) once."""
    config = AttackConfig.from_params(attack, dataset_info["num_classes"])
    run = RuntimeConfig.from_params(runtime)
    context = AttackContext(
        train_set={"images": train_set["images"], "labels": train_set["labels"]},
        num_classes=dataset_info["num_classes"],
        target=config.target,
        device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, f"prepare/{config.name}")),
        surrogate=from_checkpoint(clean_model, run.torch_device, source="clean_model")
        if clean_model
        else None,
    )
    return config.build().prepare(context)


def poison_train_set(
    train_set: ImageSet, attack_state: State, dataset_info: dict, attack: dict, runtime: dict
) -> ImageSet:
    """Poison ``attack.ratio`` of the training set; ground-truth flags are kept for evaluation."""
    config = AttackConfig.from_params(attack, dataset_info["num_classes"])
    generator = seed_everything(
        derive_seed(RuntimeConfig.from_params(runtime).seed, f"poison/{config.name}")
    )
    return poison_training_set(
        train_set, config.build(), attack_state, config, dataset_info["num_classes"], generator
    )


def build_backdoor_test_set(
    test_set: ImageSet, attack_state: State, dataset_info: dict, attack: dict, runtime: dict
) -> ImageSet:
    """Every test image the attack relabels, with the trigger,
    labelled with the attacker's label."""
    config = AttackConfig.from_params(attack, dataset_info["num_classes"])
    generator = seed_everything(
        derive_seed(RuntimeConfig.from_params(runtime).seed, f"test/{config.name}")
    )
    return make_backdoor_test_set(
        test_set, config.build(), attack_state, config, dataset_info["num_classes"], generator
    )


def train_victim(
    poisoned_train: ImageSet, dataset_info: dict, victim: dict, runtime: dict
) -> tuple[dict, list[dict]]:
    """Train the victim classifier on the poisoned set;
    returns its checkpoint and per-epoch history."""
    return train_with_victim_recipe(
        poisoned_train["images"], poisoned_train["labels"], dataset_info, victim, runtime, "victim"
    )


def evaluate_victim(
    victim_model: dict,
    test_set: ImageSet,
    backdoor_test: ImageSet,
    poisoned_train: ImageSet,
    runtime: dict,
) -> dict:
    """CA, ASR and RA of the victim (fractions), with poison counts.

    The clean reference model's CA (``clean_metrics``) is not an input: the victim's path does not
    wait for a second full training (on real data, as long as the victim's own)."""
    run = RuntimeConfig.from_params(runtime)
    model = from_checkpoint(victim_model, run.torch_device, source="victim_model")
    metrics = evaluate_backdoor(model, test_set, backdoor_test, device=run.torch_device)
    n_train = int(poisoned_train["labels"].shape[0])
    metrics.update(
        poison_count=int(poisoned_train["poison"].sum()),
        poison_ratio=float(poisoned_train["poison"].sum()) / n_train,
        cover_count=int(poisoned_train["cover"].sum()),
        n_train=n_train,
        n_backdoor_test=int(backdoor_test["labels"].shape[0]),
    )
    log.info(
        "victim: clean_acc %.4f, asr %.4f, ra %.4f",
        metrics["clean_acc"],
        metrics["asr"],
        metrics["ra"],
    )
    return metrics
