"""Nodes of the ``reference_clip`` pipeline."""

from __future__ import annotations

import logging
import time

from cgd_kedro.clip.reference import (
    ClipConfig,
    clip_logits,
    linked_checkpoint,
    model_from_checkpoint,
    pretrain_clip,
)
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.sources import DatasetConfig
from cgd_kedro.data.world import generate_caption_corpus
from cgd_kedro.metrics import accuracy
from cgd_kedro.model_cache import cached_training
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)


def build_reference_clip(
    dataset: dict, clip: dict, runtime: dict, dataset_info: dict, clip_holdout_set: ImageSet
) -> tuple[dict, dict]:
    """The reference CLIP checkpoint and how it was obtained.

    - ``clip.weights`` set: a link to that local file, after checking that it loads into
      ``clip.model_name``.
    - embedded world: the embedded CLIP, pretrained on the world's caption corpus, which shares
      no image with the classification sets.
    - real dataset without weights: a stand-in, ``clip.model_name`` pretrained on
      ``clip_holdout_set`` (the slice ``load_dataset`` held out of the training set), captioned
      from ``clip.caption_templates`` and the class names.
    """
    config = ClipConfig.from_params(clip)
    data = DatasetConfig.from_params(dataset)
    config.check_source(data.name, int(clip_holdout_set["labels"].shape[0]))
    if config.weights:
        log.info("reference CLIP: %s with local weights %s", config.model_name, config.weights)
        return linked_checkpoint(config), {
            "source": "weights",
            "weights": config.weights,
            "epochs": [],
        }
    run = RuntimeConfig.from_params(runtime)
    if data.name == "embedded":
        w = data.world
        images, captions = generate_caption_corpus(
            seed=w.seed, n_captions=w.n_captions, image_size=w.image_size, difficulty=w.difficulty
        )
        images, source = images["images"], "pretrained"
    else:
        images, source = clip_holdout_set["images"], "stand-in"
        captions = config.captions_for(clip_holdout_set["labels"], dataset_info["class_names"])
        log.warning(
            "reference CLIP: a STAND-IN. No clip.weights are set, so %s is pretrained here on %d "
            "images held out of the %s training set (no victim, suspicious model or defense sees "
            "them). CGD's reference uses a public CLIP trained on other data; set clip.weights "
            "(and clip.model_name) to use one.",
            config.model_name,
            len(captions),
            data.name,
        )

    def pretrain() -> tuple[dict, dict]:
        start = time.perf_counter()
        checkpoint, history = pretrain_clip(
            images,
            captions,
            config,
            device=run.torch_device,
            generator=seed_everything(derive_seed(run.seed, "reference_clip")),
        )
        seconds = time.perf_counter() - start
        log.info(
            "reference CLIP: pretrained %s on %d pairs in %.0f s",
            config.model_name,
            len(captions),
            seconds,
        )
        return checkpoint["state_dict"], {"seconds": seconds, "epochs": history}

    state_dict, trained, reused = cached_training(
        run.cache_dir,
        "reference_clip",
        settings={"model_name": config.model_name, "pretrain": config.pretrain.as_dict()},
        seed=run.seed,
        device=run.torch_device,
        data=[images, captions],
        train=pretrain,
    )
    history = {
        "source": source,
        "pairs": len(captions),
        "seconds": trained["seconds"],
        "epochs": trained["epochs"],
        "reused": reused,
    }
    return {"model_name": config.model_name, "state_dict": state_dict}, history


def evaluate_reference_clip(
    reference_clip: dict,
    reference_clip_history: dict,
    test_set: ImageSet,
    dataset_info: dict,
    clip: dict,
    runtime: dict,
) -> dict:
    """Zero-shot accuracy of the reference CLIP on the (clean) test set, with the prompts used."""
    config = ClipConfig.from_params(clip)
    run = RuntimeConfig.from_params(runtime)
    model = model_from_checkpoint(reference_clip)
    templates = config.templates_for(dataset_info["name"])
    start = time.perf_counter()
    logits = clip_logits(
        model,
        reference_clip["model_name"],
        test_set["images"],
        dataset_info["class_names"],
        templates,
        logit_scale=config.logit_scale,
        batch_size=config.batch_size,
        device=run.torch_device,
    )
    seconds = time.perf_counter() - start
    metrics = {
        "source": reference_clip_history["source"],
        "model_name": reference_clip["model_name"],
        "weights": reference_clip.get("weights"),
        "templates": list(templates),
        "logit_scale": config.logit_scale,
        "zero_shot_acc": accuracy(logits.argmax(1), test_set["labels"]),
        "n_test": int(test_set["labels"].shape[0]),
        "scoring_images_per_second": test_set["labels"].shape[0] / seconds,
        "pretraining": reference_clip_history,
    }
    log.info(
        "reference CLIP %s: zero-shot accuracy %.4f",
        metrics["model_name"],
        metrics["zero_shot_acc"],
    )
    return metrics
