"""The image-caption corpora of the CLIP backdoor experiments: the pairs an attacker poisons (the
victim CLIP is fine-tuned on them) and the disjoint clean pairs a defender fine-tunes on.

- Embedded world: freshly rendered images from their own seed streams (no overlap with the
  classification sets or the reference CLIP's pretraining corpus), with the world's captions.
- Real datasets: two disjoint slices of the training set, captioned from the CLIP prompt templates.

A corpus is ``{"images": uint8 N x C x H x W, "labels": int64 N, "captions": list[str]}``; the
labels are the images' classes (used to pick non-target images to poison, and for figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field

from cgd_kedro.config import MAX_IMAGES, ParameterModel
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.world import captions_for, generate_images
from cgd_kedro.runtime import derive_seed


class ClipCorpusConfig(ParameterModel):
    """The ``clip_corpus`` parameters:
    the embedded world's image-caption pairs for ``abd_defense``."""

    SECTION: ClassVar[str] = "clip_corpus"

    n_finetune: int = Field(10000, ge=2, le=MAX_IMAGES, description="poisonable fine-tuning pairs")
    n_defense: int = Field(
        5000, ge=2, le=MAX_IMAGES, description="clean pairs the CLIP defenses fine-tune on"
    )


def world_corpora(
    config: ClipCorpusConfig, *, seed: int, image_size: int, difficulty: float
) -> tuple[dict, dict]:
    """(fine-tuning pairs, defense pairs) rendered from the embedded world's ``seed``."""
    corpora = []
    for stream, n in (("clip-finetune", config.n_finetune), ("clip-defense", config.n_defense)):
        images = generate_images(
            n, seed=derive_seed(seed, stream), image_size=image_size, difficulty=difficulty
        )
        captions = captions_for(images, seed=derive_seed(seed, stream + "-captions"))
        corpora.append(
            {"images": images["images"], "labels": images["labels"], "captions": captions}
        )
    return corpora[0], corpora[1]


def templated_corpora(
    config: ClipCorpusConfig,
    train_set: ImageSet,
    class_names: Sequence[str],
    templates: Sequence[str],
    generator: torch.Generator,
) -> tuple[dict, dict]:
    """(fine-tuning pairs, defense pairs):
    disjoint random slices of a labelled set, captioned from ``templates``."""
    total = train_set["labels"].shape[0]
    if config.n_finetune + config.n_defense > total:
        raise ValueError(
            f"clip_corpus: n_finetune + n_defense = {config.n_finetune + config.n_defense} exceeds "
            f"the {total} training images"
        )
    order = torch.randperm(total, generator=generator)
    corpora = []
    for indices in (
        order[: config.n_finetune],
        order[config.n_finetune : config.n_finetune + config.n_defense],
    ):
        labels = train_set["labels"][indices]
        captions = [
            templates[i % len(templates)].format(class_names[y])
            for i, y in enumerate(labels.tolist())
        ]
        corpora.append(
            {"images": train_set["images"][indices], "labels": labels, "captions": captions}
        )
    return corpora[0], corpora[1]
