"""CGD's suspicious model: fresh classifiers trained briefly on the (possibly poisoned) training set.

A backdoor trigger is an easy shortcut, so a model trained for a few epochs without augmentation
already fits the poisoned samples' given labels, while many clean samples are still hard: poisoned
samples get a *low* NLL of their given label. The reference trains 3 such models (5 epochs, Adam
3e-4, weight decay 5e-4, batch 256, no augmentation) and averages their logits on the training set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from cgd_kedro.config import reject_unknown
from cgd_kedro.metrics import predict_logits
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.models.registry import check_architecture
from cgd_kedro.runtime import derive_seed, seed_everything
from cgd_kedro.training.classifier import TrainingConfig, train_classifier

REFERENCE_RECIPE = {"epochs": 5, "batch_size": 256, "lr": 3e-4, "weight_decay": 5e-4, "optimizer": "adam", "schedule": "constant", "augment": False}


@dataclass(frozen=True)
class SuspiciousConfig:
    """The ``suspicious`` parameters.

    Attributes:
        architecture: registered classifier (the reference uses the victim's, PreActResNet18).
        runs: models trained from different seeds; their logits are averaged.
        training: the recipe (``TrainingConfig`` keys); defaults are the reference's.
    """

    architecture: str = "compact_cnn"
    runs: int = 3
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(**REFERENCE_RECIPE))

    @classmethod
    def from_params(cls, params: dict) -> SuspiciousConfig:
        reject_unknown(cls, params, "suspicious")
        architecture = params.get("architecture", cls.architecture)
        check_architecture(architecture)
        runs = params.get("runs", cls.runs)
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
            raise ValueError(f"suspicious.runs: expected a positive integer, got {runs!r}")
        training = TrainingConfig.from_params(REFERENCE_RECIPE | dict(params.get("training") or {}), "suspicious.training")
        return cls(architecture, runs, training)


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
    """Mean logits (``N x K``, CPU) over ``config.runs`` fresh models trained on ``(images, labels)``
    and evaluated on the same images; also each run's training history."""
    total, histories = None, []
    for run in range(config.runs):
        generator = seed_everything(derive_seed(seed, f"suspicious/{run}"))
        model = build_classifier(config.architecture, num_classes, mean, std)
        histories.append(
            train_classifier(model, images, labels, config.training, device=device, generator=generator,
                             description=f"suspicious {run + 1}/{config.runs}")
        )  # fmt: skip
        logits = predict_logits(model, images, device=device).float().cpu()
        total = logits if total is None else total + logits
    return total / config.runs, histories
