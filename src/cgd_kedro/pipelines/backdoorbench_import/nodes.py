"""Node of the ``backdoorbench_import`` pipeline: adapts ``cgd_kedro.data.backdoorbench``."""

from __future__ import annotations

import logging

from cgd_kedro.data.backdoorbench import load_backdoorbench_result
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.metrics import evaluate_backdoor
from cgd_kedro.models.classifier import from_checkpoint
from cgd_kedro.parameters import RuntimeConfig

log = logging.getLogger(__name__)


def import_record(
    train_set: ImageSet, test_set: ImageSet, dataset_info: dict, record: dict, runtime: dict
) -> tuple[ImageSet, ImageSet, dict, dict]:
    """Read the record at ``record.record_dir`` on top of the clean sets it was made from.

    Returns the poisoned training set (with ground-truth flags), the backdoor test set, the
    victim's checkpoint and its metrics, under the same names as an attack namespace, so every
    later pipeline can treat the import like any attack.
    """
    if not record.get("record_dir"):
        raise ValueError("backdoorbench.record.record_dir: set it to a BackdoorBench record folder (record/<name>)")
    result = load_backdoorbench_result(record["record_dir"], train_set, test_set, mean=dataset_info["mean"], std=dataset_info["std"])
    run = RuntimeConfig.from_params(runtime)
    model = from_checkpoint(result["victim_model"], run.torch_device, source=str(record["record_dir"]))
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
    log.info("imported %s: clean_acc %.4f, asr %.4f", result["info"]["attack"], metrics["clean_acc"], metrics["asr"])
    return poisoned, result["backdoor_test"], result["victim_model"], metrics
