"""Node of the ``backdoorbench_import`` pipeline: adapts ``cgd_kedro.data.backdoorbench``."""

from __future__ import annotations

import logging

import torch

from cgd_kedro.data.backdoorbench import load_backdoorbench_result
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.sources import IMAGE_FOLDER
from cgd_kedro.metrics import evaluate_backdoor
from cgd_kedro.models.classifier import from_checkpoint
from cgd_kedro.parameters import RuntimeConfig

log = logging.getLogger(__name__)


def full_training_set(train_set: ImageSet, clip_holdout_set: ImageSet) -> ImageSet:
    """The training set as read from disk, in its order: ``train_set`` and the CLIP holdout slice
    put back together by ``source_index``. A BackdoorBench record indexes the whole clean set."""
    parts = [train_set, clip_holdout_set] if clip_holdout_set["labels"].numel() else [train_set]
    index = torch.cat([part["source_index"] for part in parts])
    if not torch.equal(index.sort().values, torch.arange(index.numel())):
        raise ValueError(
            "backdoorbench_import: the training set is incomplete; it needs the whole dataset "
            "(dataset.max_per_class: null)"
        )
    order = index.argsort()
    return {key: torch.cat([part[key] for part in parts])[order] for key in ("images", "labels")}


def import_record(
    train_set: ImageSet,
    clip_holdout_set: ImageSet,
    test_set: ImageSet,
    dataset_info: dict,
    record: dict,
    runtime: dict,
) -> tuple[ImageSet, ImageSet, dict, dict]:
    """Read the record at ``record.record_dir`` on top of the clean sets it was made from.

    Returns the poisoned training set (with ground-truth flags), the backdoor test set, the
    victim's checkpoint and its metrics, under the same names as an attack namespace, so every
    later pipeline can treat the import like any attack. The victim keeps BackdoorBench's input
    normalisation for its dataset (e.g. CIFAR-10 std 0.247, 0.243, 0.261), the inputs it was
    trained on, not this project's.
    """
    if not record.get("record_dir"):
        raise ValueError(
            "backdoorbench.record.record_dir: set it to a BackdoorBench record "
            "folder (record/<name>)"
        )
    if dataset_info.get("format") == IMAGE_FOLDER:
        raise ValueError(
            "backdoorbench_import: a BackdoorBench record indexes the clean dataset in its "
            "loader's order (torchvision's for CIFAR); an image folder is read class by class, so "
            "its indices do not match. Point dataset.root at the dataset in its native layout "
            "(e.g. cifar-10-batches-py)"
        )
    if dataset_info.get("n_clip_holdout"):
        log.warning(
            "backdoorbench_import: the record's victim trained on all %d training images, "
            "including the %d that dataset.clip_holdout set aside for the CLIP stand-in; with "
            "clip.weights set nothing is held out",
            dataset_info["n_train"] + dataset_info["n_clip_holdout"],
            dataset_info["n_clip_holdout"],
        )
    result = load_backdoorbench_result(
        record["record_dir"], full_training_set(train_set, clip_holdout_set), test_set
    )
    run = RuntimeConfig.from_params(runtime)
    model = from_checkpoint(
        result["victim_model"], run.torch_device, source=str(record["record_dir"])
    )
    metrics = evaluate_backdoor(model, test_set, result["backdoor_test"], device=run.torch_device)
    poisoned = result["poisoned_train"]
    metrics.update(
        attack=result["info"]["attack"],
        poison_count=int(poisoned["poison"].sum()),
        poison_ratio=float(poisoned["poison"].float().mean()),
        cover_count=int(poisoned["cover"].sum()),
        n_train=int(poisoned["labels"].shape[0]),
        n_backdoor_test=int(result["backdoor_test"]["labels"].shape[0]),
    )
    log.info(
        "imported %s: clean_acc %.4f, asr %.4f",
        result["info"]["attack"],
        metrics["clean_acc"],
        metrics["asr"],
    )
    return poisoned, result["backdoor_test"], result["victim_model"], metrics
