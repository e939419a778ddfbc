"""The reference CLIP of CGD: which model, where its weights come from, and how it scores images.

Three sources, one code path:
- a real CLIP: an open_clip model name plus a *local* weights file (``clip.weights``), e.g.
  ``ViT-B-32`` with ``laion2b_s34b_b79k`` weights saved once with ``torch.save(model.state_dict())``
  or safetensors. Nothing is downloaded; a missing or unreadable file is an
  error naming ``clip.weights``.
- the embedded CLIP (``clip.weights: null``, embedded world): the project's small open_clip
  model, pretrained contrastively on the embedded world's caption corpus (disjoint from the
  victim's training images).
- a CLIP stand-in (``clip.weights: null``, real dataset): the project's small open_clip model,
  pretrained here on a "public" slice held out of the training set (``dataset.clip_holdout``),
  captioned from ``caption_templates`` and the class names. No victim, suspicious model or
  defense ever sees those images. It stands in for a public CLIP trained on other data, which
  no machine here can download; runs say so in their log and in ``reference_clip_metrics``.

Zero-shot logits are ``logit_scale * cos(image, class text)``. The CGD reference uses no scale
(``logit_scale = 1``); since the scores are ranks of the given label's NLL, the scale changes the
ranking only slightly (softmax is monotone per sample, not across samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from cgd_kedro.clip.factory import (
    EMBEDDED_CLIP,
    PRETRAINABLE_CLIPS,
    check_clip_name,
    create_clip,
    from_clip_checkpoint,
    get_tokenizer,
    load_clip,
    preprocess_config,
    resolve_weights_path,
    to_clip_checkpoint,
)
from cgd_kedro.clip.pretrain import ContrastiveConfig, train_contrastive
from cgd_kedro.clip.zero_shot import class_text_embeddings, image_embeddings, zero_shot_logits
from cgd_kedro.config import MAX_BATCH_SIZE, ParameterModel

# Captions of the CLIP stand-in's pretraining pairs: CLIP's own CIFAR prompt list (Radford et al.
# 2021), so that the text tower sees varied sentences rather than one template per class; without
# the final period, like the zero-shot prompts ("a photo of a {}").
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a blurry photo of a {}",
    "a black and white photo of a {}",
    "a low contrast photo of a {}",
    "a high contrast photo of a {}",
    "a bad photo of a {}",
    "a good photo of a {}",
    "a photo of a small {}",
    "a photo of a big {}",
    "a photo of the {}",
    "a blurry photo of the {}",
    "a black and white photo of the {}",
    "a low contrast photo of the {}",
    "a high contrast photo of the {}",
    "a bad photo of the {}",
    "a good photo of the {}",
    "a photo of the small {}",
    "a photo of the big {}",
)

# Prompt templates per dataset (REFERENCE.md §1.1); the embedded
# world's are two of its caption forms.
DEFAULT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "embedded": ("a photo of a {}", "a picture of a {}"),
    "cifar10": ("a photo of a {}",),
    "cifar100": ("a photo of a {}",),
    "tinyimagenet": ("a photo of a {}",),
    "gtsrb": ("a centered photo of a {} traffic sign",),
}


class ClipConfig(ParameterModel):
    """The ``clip`` parameters."""

    SECTION: ClassVar[str] = "clip"

    model_name: str = Field(
        EMBEDDED_CLIP,
        description=(
            "open_clip model name; cgd-embedded-clip and cgd-small-clip are the project's own "
            "configs, the ones pretrained here"
        ),
    )
    weights: str | None = Field(
        None,
        description=(
            "local open_clip weights file; null = pretrain model_name here (the embedded CLIP, or "
            "a real dataset's stand-in)"
        ),
    )
    templates: tuple[str, ...] | None = Field(
        None,
        strict=False,
        description=(
            "prompt templates with {} for the class name, averaged; null = the dataset's defaults"
        ),
    )
    caption_templates: tuple[str, ...] | None = Field(
        None,
        strict=False,
        description=(
            "captions of the stand-in's pretraining pairs, in turn; null = CLIP's CIFAR prompt list"
        ),
    )
    logit_scale: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="multiplies the cosine similarities (the reference: 1, i.e. none)",
    )
    batch_size: int = Field(
        256, ge=1, le=MAX_BATCH_SIZE, description="images per forward pass when scoring"
    )
    pretrain: ContrastiveConfig = Field(
        default_factory=ContrastiveConfig, description="contrastive pretraining of a CLIP made here"
    )

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, model_name: str) -> str:
        check_clip_name(model_name)
        return model_name

    @field_validator("templates", "caption_templates", mode="before")
    @classmethod
    def _none_if_empty(cls, templates: object) -> object:
        return templates or None

    @field_validator("templates", "caption_templates")
    @classmethod
    def _class_placeholder(cls, templates: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if templates and any("{}" not in t for t in templates):
            raise ValueError(
                f"every template needs '{{}}' for the class name, got {list(templates)}"
            )
        return templates

    def check_source(self, dataset_name: str, holdout_size: int = 0) -> None:
        """Cheap check, before any work, that the weights can come from somewhere.

        ``holdout_size``: images the dataset holds out for a stand-in
        (real datasets without weights).
        """
        if self.weights is None:
            if self.model_name not in PRETRAINABLE_CLIPS:
                raise ValueError(
                    "clip.model_name: without clip.weights the reference CLIP is pretrained here, "
                    f"which only the project's own configs {list(PRETRAINABLE_CLIPS)} are sized "
                    f"for; set clip.weights to a local file for {self.model_name!r}"
                )
            if dataset_name == "embedded" and self.model_name != EMBEDDED_CLIP:
                raise ValueError(
                    f"clip.model_name: the embedded world's CLIP is {EMBEDDED_CLIP!r}, "
                    f"got {self.model_name!r}"
                )
            if dataset_name != "embedded" and holdout_size < 2:
                raise ValueError(
                    f"dataset.clip_holdout.size: without clip.weights, dataset {dataset_name!r} "
                    "needs a slice of its training set to pretrain a CLIP stand-in on (got "
                    f"{holdout_size}); set it (auto: 10,000), or set clip.weights to a local "
                    "open_clip weights file"
                )
        elif not (Path(self.weights).is_file() or Path(self.weights).is_dir()):
            raise FileNotFoundError(
                f"clip.weights: CLIP weights file {str(Path(self.weights).resolve())!r} does not "
                "exist; save an open_clip state_dict there (nothing is downloaded)"
            )

    def templates_for(self, dataset_name: str) -> tuple[str, ...]:
        return self.templates or DEFAULT_TEMPLATES.get(dataset_name, ("a photo of a {}",))

    def captions_for(self, labels: Tensor, class_names: Sequence[str]) -> list[str]:
        """One caption per label for the stand-in's pretraining pairs (templates taken in turn)."""
        templates = self.caption_templates or CAPTION_TEMPLATES
        return [
            templates[i % len(templates)].format(class_names[y])
            for i, y in enumerate(labels.tolist())
        ]


def pretrain_clip(
    images: Tensor,
    captions: Sequence[str],
    config: ClipConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> tuple[dict, list[dict]]:
    """Train ``config.model_name`` from scratch on (image, caption) pairs;
    its checkpoint and history."""
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))  # model initialisation
    model = create_clip(config.model_name)
    history = train_contrastive(
        model,
        get_tokenizer(config.model_name),
        images,
        captions,
        config.pretrain,
        preprocess_config(model),
        device=device,
        generator=generator,
        description="reference_clip",
    )
    return to_clip_checkpoint(model, config.model_name), history


def linked_checkpoint(config: ClipConfig) -> dict:
    """The checkpoint of a real CLIP:
    a link to ``clip.weights``, after checking the file loads into the model."""
    weights = resolve_weights_path(config.weights)
    load_clip(config.model_name, weights)
    return {"model_name": config.model_name, "weights": str(weights.resolve())}


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """The CLIP model of a reference checkpoint (weights stored in it, or linked)."""
    if checkpoint.get("weights"):
        return load_clip(checkpoint["model_name"], checkpoint["weights"])
    return from_clip_checkpoint(checkpoint, source="reference_clip")


@torch.no_grad()
def clip_logits(
    model: nn.Module,
    model_name: str,
    images: Tensor,
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    logit_scale: float = 1.0,
    batch_size: int = 256,
    device: torch.device,
    with_features: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``N x K`` zero-shot logits of uint8 ``images`` against the prompted ``class_names`` (on CPU);
    with ``with_features`` also the ``N x D`` unit image embeddings they were computed from."""
    text = class_text_embeddings(model, get_tokenizer(model_name), class_names, templates, device)
    features = image_embeddings(model, images, preprocess_config(model), device, batch_size)
    logits = zero_shot_logits(features, text.cpu(), logit_scale)
    return (logits, features) if with_features else logits
