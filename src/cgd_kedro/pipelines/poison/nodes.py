"""Nodes of the ``poison`` pipeline: thin adapters from parameters and catalog data to the torch core."""

from __future__ import annotations

import logging
import time

from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.sources import DatasetConfig, load_classification_data
from cgd_kedro.metrics import evaluate_backdoor
from cgd_kedro.models.classifier import build_classifier, from_checkpoint, to_checkpoint
from cgd_kedro.parameters import RuntimeConfig, VictimConfig
from cgd_kedro.runtime import derive_seed, seed_everything
from cgd_kedro.training.classifier import train_classifier

log = logging.getLogger(__name__)


def load_dataset(dataset: dict) -> tuple[ImageSet, ImageSet, dict]:
    """Generate the embedded world or read the configured real dataset.

    Returns the train set, the test set and ``dataset_info`` (name, class names, normalisation),
    which every later node reads instead of re-deriving it.
    """
    config = DatasetConfig.from_params(dataset)
    train_set, test_set, class_names = load_classification_data(config)
    info = {
        "name": config.name,
        "class_names": class_names,
        "num_classes": len(class_names),
        "image_size": int(train_set["images"].shape[-1]),
        "n_train": int(train_set["labels"].shape[0]),
        "n_test": int(test_set["labels"].shape[0]),
        "mean": list(config.mean),
        "std": list(config.std),
    }
    log.info("dataset %s: %d train / %d test images, %d classes", config.name, info["n_train"], info["n_test"], info["num_classes"])
    return train_set, test_set, info


def poison_train_set(train_set: ImageSet, dataset_info: dict, attack: dict, runtime: dict) -> ImageSet:
    """Poison ``attack.ratio`` of the training set; ground-truth flags are kept for evaluation."""
    config = AttackConfig.from_params(attack, dataset_info["num_classes"], dataset_info["image_size"])
    generator = seed_everything(derive_seed(RuntimeConfig.from_params(runtime).seed, f"poison/{config.name}"))
    return poison_training_set(train_set, config, dataset_info["num_classes"], generator)


def build_backdoor_test_set(test_set: ImageSet, dataset_info: dict, attack: dict) -> ImageSet:
    """Every non-target test image with the trigger, labelled with the attacker's label."""
    config = AttackConfig.from_params(attack, dataset_info["num_classes"], dataset_info["image_size"])
    return make_backdoor_test_set(test_set, config, dataset_info["num_classes"])


def train_victim(poisoned_train: ImageSet, dataset_info: dict, victim: dict, runtime: dict) -> tuple[dict, list[dict]]:
    """Train the victim classifier on the poisoned set; returns its checkpoint and per-epoch history."""
    config = VictimConfig.from_params(victim)
    run = RuntimeConfig.from_params(runtime)
    generator = seed_everything(derive_seed(run.seed, "victim"))
    model = build_classifier(config.architecture, dataset_info["num_classes"], dataset_info["mean"], dataset_info["std"])
    start = time.perf_counter()
    history = train_classifier(
        model, poisoned_train["images"], poisoned_train["labels"], config.training,
        device=run.torch_device, generator=generator, description="victim",
    )  # fmt: skip
    history[-1]["seconds"] = time.perf_counter() - start
    return to_checkpoint(model, config.architecture, dataset_info["num_classes"]), history


def evaluate_victim(
    victim_model: dict, test_set: ImageSet, backdoor_test: ImageSet, poisoned_train: ImageSet, runtime: dict
) -> dict:
    """CA, ASR and RA of the victim (fractions), with the poison count for the record."""
    run = RuntimeConfig.from_params(runtime)
    model = from_checkpoint(victim_model, run.torch_device, source="victim_model")
    metrics = evaluate_backdoor(model, test_set, backdoor_test, device=run.torch_device)
    metrics.update(
        poison_count=int(poisoned_train["poison"].sum()),
        cover_count=int(poisoned_train["cover"].sum()),
        n_train=int(poisoned_train["labels"].shape[0]),
        n_backdoor_test=int(backdoor_test["labels"].shape[0]),
    )
    log.info("victim: clean_acc %.4f, asr %.4f, ra %.4f", metrics["clean_acc"], metrics["asr"], metrics["ra"])
    return metrics
