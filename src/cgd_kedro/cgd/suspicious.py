"""CGD's suspicious model:
fresh classifiers trained briefly on the (possibly poisoned) training set.

A backdoor trigger is an easy shortcut, so a model trained for a few epochs without augmentation
already fits the poisoned samples' given labels, while many clean samples are still hard: poisoned
samples get a *low* NLL of their given label. The reference trains 3 such models (5 epochs, Adam
3e-4, weight decay 5e-4, batch 256, no augmentation) and averages their logits on the training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor

from cgd_kedro.config import ParameterModel
from cgd_kedro.metrics import predict_logits
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.models.registry import check_architecture
from cgd_kedro.runtime import derive_seed, seed_everything
from cgd_kedro.training.classifier import TrainingConfig, train_classifier

REFERENCE_RECIPE = {
    "epochs": 5,
    "batch_size": 256,
    "lr": 3e-4,
    "weight_decay": 5e-4,
    "optimizer": "adam",
    "schedule": "constant",
    "augment": False,
}


class SuspiciousConfig(ParameterModel):
    """The ``suspicious`` parameters; ``training`` keys override the reference's recipe."""

    SECTION: ClassVar[str] = "suspicious"

    architecture: str = Field(
        "compact_cnn",
        description="registered classifier (the reference: the victim's, PreActResNet18)",
    )
    runs: int = Field(
        3,
        ge=1,
        le=100,
        description="models trained from different seeds; their logits are averaged",
    )
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(**REFERENCE_RECIPE),
        description="the recipe (training keys); defaults: the reference's (Adam 3e-4, 5 epochs)",
    )

    @field_validator("architecture")
    @classmethod
    def _registered(cls, architecture: str) -> str:
        check_architecture(architecture)
        return architecture

    @field_validator("training", mode="before")
    @classmethod
    def _over_reference_recipe(cls, training: object) -> object:
        return REFERENCE_RECIPE | training if isinstance(training, dict) else training


def suspicious_logits(
    images: Tensor,
    labels: Tensor,
    config: SuspiciousConfig,
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    seed: int,
) -> tuple[Tensor, list[list[dict]]]:
    """Mean logits (``N x K``, CPU) over ``config.runs`` fresh models trained on
    ``(images, labels)`` and evaluated on the same images; also each run's training history."""
    total, histories = None, []
    for run in range(config.runs):
        generator = seed_everything(derive_seed(seed, f"suspicious/{run}"))
        model = build_classifier(config.architecture, num_classes, mean, std)
        histories.append(
            train_classifier(
                model,
                images,
                labels,
                config.training,
                device=device,
                generator=generator,
                description=f"suspicious {run + 1}/{config.runs}",
            )
        )
        logits = predict_logits(model, images, device=device).float().cpu()
        total = logits if total is None else total + logits
    return total / config.runs, histories
