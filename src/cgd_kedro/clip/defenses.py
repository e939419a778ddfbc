"""Defenses of a backdoored CLIP, each a fine-tuning on clean image-caption pairs
(REFERENCE.md §3-4):

- ``ft``: plain contrastive fine-tuning (CLIP's InfoNCE only);
- ``cleanclip``: ``lambda1 * L_CLIP + lambda2 * L_SS`` with an AutoAugment image view and an EDA
  caption view;
- ``abd``: the same objective with the adversarially *patched* image (``adversarial_patch``) as the
  image view and the EDA caption as the text view: the encoder learns that a patched image means
  what the clean image means, which is what undoes the trigger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from cgd_kedro.clip.eda import eda_batch
from cgd_kedro.clip.pretrain import ContrastiveConfig, Views, train_contrastive
from cgd_kedro.clip.triggers import ClipTrigger, apply_trigger
from cgd_kedro.config import MAX_BATCH_SIZE, ParameterModel

CLIP_DEFENSES = ("ft", "cleanclip", "abd")


class ClipDefenseConfig(ParameterModel):
    """The ``clip_defense`` parameters, shared by FT, CleanCLIP and ABD so they are comparable."""

    SECTION: ClassVar[str] = "clip_defense"

    finetune: ContrastiveConfig = Field(
        default_factory=lambda: ContrastiveConfig(epochs=5, batch_size=128, lr=1e-4, augment=False),
        description="the fine-tuning recipe (epochs, batch size, lr, ...)",
    )
    lambda1: float = Field(1.0, ge=0, le=1000, description="weight of L_CLIP")
    lambda2: float = Field(
        1.0, ge=0, le=1000, description="weight of L_SS (CleanCLIP's in-modality term)"
    )
    eda_alpha: float = Field(
        0.1, ge=0, le=1, description="share of words each EDA operation changes"
    )
    autoaugment_group: int = Field(
        8, ge=1, le=MAX_BATCH_SIZE, description="images that share one AutoAugment draw"
    )


def autoaugment_view(images: Tensor, group: int) -> Tensor:
    """CleanCLIP's image view: AutoAugment (CIFAR-10 policy) on uint8 images,
    one draw per ``group`` images."""
    # imported here: torchvision takes seconds to import, and only this view needs it
    from torchvision.transforms import (
        v2,
    )

    augment = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    return torch.cat([augment(chunk) for chunk in images.split(group)])


def defense_views(
    defense: str, config: ClipDefenseConfig, patch: ClipTrigger | None
) -> Views | None:
    """The (image view, caption view) maker of ``defense``; ``None`` for plain fine-tuning."""
    if defense not in CLIP_DEFENSES:
        raise ValueError(
            f"clip_defense: unknown CLIP defense {defense!r}; expected one of {list(CLIP_DEFENSES)}"
        )
    if defense == "ft":
        return None
    if defense == "abd" and patch is None:
        raise ValueError("abd: the adversarial patch is missing")

    def views(
        images: Tensor, captions: list[str], generator: torch.Generator
    ) -> tuple[Tensor, list[str]]:
        image_view = (
            apply_trigger(images, patch)
            if defense == "abd"
            else autoaugment_view(images, config.autoaugment_group)
        )
        return image_view, eda_batch(captions, generator, alpha=config.eda_alpha)

    return views


def defend_clip(
    model: nn.Module,
    tokenizer,
    images: Tensor,
    captions: Sequence[str],
    defense: str,
    config: ClipDefenseConfig,
    preprocess: dict,
    *,
    patch: ClipTrigger | None = None,
    device: torch.device,
    generator: torch.Generator,
    on_epoch_end: Callable[[nn.Module], dict] | None = None,
) -> list[dict]:
    """Fine-tune the backdoored ``model`` in place on clean pairs with ``defense``;
    per-epoch history."""
    return train_contrastive(
        model,
        tokenizer,
        images,
        captions,
        config.finetune,
        preprocess,
        device=device,
        generator=generator,
        description=defense,
        views=defense_views(defense, config, patch),
        lambdas=(config.lambda1, config.lambda2),
        on_epoch_end=on_epoch_end,
    )
