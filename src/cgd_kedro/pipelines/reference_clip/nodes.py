"""Nodes of the ``reference_clip`` pipeline."""

from __future__ import annotations

import logging
import time


from cgd_kedro.clip.reference import ClipConfig, clip_logits, linked_checkpoint, model_from_checkpoint, pretrain_embedded_clip
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.sources import DatasetConfig
from cgd_kedro.data.world import generate_caption_corpus
from cgd_kedro.metrics import accuracy
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)


def build_reference_clip(dataset: dict, clip: dict, runtime: dict) -> tuple[dict, dict]:
    """The reference CLIP checkpoint and how it was obtained.

    With ``clip.weights`` set: a link to that local file, after checking that it loads into
    ``clip.model_name``. Otherwise (embedded dataset only): the embedded CLIP, pretrained on the
    world's caption corpus, which shares no image with the classification sets.
    """
    config = ClipConfig.from_params(clip)
    data = DatasetConfig.from_params(dataset)
    config.check_source(data.name)
    if config.weights:
        log.info("reference CLIP: %s with local weights %s", config.model_name, config.weights)
        return linked_checkpoint(config), {"source": "weights", "weights": config.weights, "epochs": []}
    run = RuntimeConfig.from_params(runtime)
    w = data.world
    corpus, captions = generate_caption_corpus(
        seed=w.seed, n_captions=w.n_captions, image_size=w.image_size, difficulty=w.difficulty
    )
    start = time.perf_counter()
    checkpoint, history = pretrain_embedded_clip(
        corpus["images"], captions, config, device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, "reference_clip")),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    log.info("reference CLIP: pretrained %s on %d captions in %.0f s", config.model_name, len(captions), seconds)
    return checkpoint, {"source": "pretrained", "pairs": len(captions), "seconds": seconds, "epochs": history}


def evaluate_reference_clip(
    reference_clip: dict, reference_clip_history: dict, test_set: ImageSet, dataset_info: dict, clip: dict, runtime: dict
) -> dict:
    """Zero-shot accuracy of the reference CLIP on the (clean) test set, with the prompts used."""
    config = ClipConfig.from_params(clip)
    run = RuntimeConfig.from_params(runtime)
    model = model_from_checkpoint(reference_clip)
    templates = config.templates_for(dataset_info["name"])
    start = time.perf_counter()
    logits = clip_logits(
        model, reference_clip["model_name"], test_set["images"], dataset_info["class_names"], templates,
        logit_scale=config.logit_scale, batch_size=config.batch_size, device=run.torch_device,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    metrics = {
        "model_name": reference_clip["model_name"],
        "weights": reference_clip.get("weights"),
        "templates": list(templates),
        "logit_scale": config.logit_scale,
        "zero_shot_acc": accuracy(logits.argmax(1), test_set["labels"]),
        "n_test": int(test_set["labels"].shape[0]),
        "scoring_images_per_second": test_set["labels"].shape[0] / seconds,
        "pretraining": reference_clip_history,
    }
    log.info("reference CLIP %s: zero-shot accuracy %.4f", metrics["model_name"], metrics["zero_shot_acc"])
    return metrics
