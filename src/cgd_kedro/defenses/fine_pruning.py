"""Fine-Pruning (Liu et al., RAID 2018), a defense that needs a small clean set.

Backdoor behaviour tends to live in channels of the last convolutional layer that stay dormant on
clean inputs. Fine-Pruning ranks those channels by their mean activation on the clean set, prunes
the least active ones for as long as the clean accuracy on a held-out part of the clean set stays
at least ``acc_ratio`` times the unpruned model's, then fine-tunes on the clean set with the
pruned channels kept at zero.

Every registered classifier ends in global pooling and one ``nn.Linear``, so the pooled features
entering that layer are exactly the last layer's channels: pruning channel ``c`` is zeroing
column ``c`` of the final layer's weight, which keeps the checkpoint format unchanged.

The functions here see the clean set only (CGD's clean subset, or an oracle clean slice): no test
data and no poison flags.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from cgd_kedro.accelerate import autocast, grad_scaler, optimiser_step
from cgd_kedro.config import MAX_BATCH_SIZE, MAX_EPOCHS, ParameterModel
from cgd_kedro.defenses.clean_set import split_clean_set
from cgd_kedro.defenses.registry import register_defense
from cgd_kedro.metrics import accuracy, predict_logits
from cgd_kedro.models.classifier import last_linear, penultimate_features
from cgd_kedro.training.augment import crop_and_flip
from cgd_kedro.training.classifier import to_unit_float

log = logging.getLogger(__name__)


class FinePruningConfig(ParameterModel):
    """The ``fine_pruning`` parameters
    (BackdoorBench's defaults, fine-tuning scaled to the embedded world)."""

    SECTION: ClassVar[str] = "fine_pruning"

    acc_ratio: float = Field(
        0.9,
        gt=0,
        le=1,
        description=(
            "keep pruning while held-out clean accuracy is at least this share of "
            "the unpruned model's"
        ),
    )
    prune_step: float = Field(
        0.05,
        gt=0,
        le=1,
        description="channels pruned between two accuracy checks, as a share of all channels",
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of the clean set held out to check accuracy while pruning",
    )
    epochs: int = Field(
        10, ge=0, le=MAX_EPOCHS, description="fine-tuning passes over the clean set"
    )
    lr: float = Field(0.01, gt=0, le=10, description="fine-tuning SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="fine-tuning SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="fine-tuning L2 penalty")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH_SIZE, description="fine-tuning images per step")
    augment: bool = Field(True, description="random crop and flip while fine-tuning")
    flip: bool = Field(True, description="only where the dataset allows it (not GTSRB)")


@torch.no_grad()
def channel_activations(
    model: nn.Module, images: Tensor, *, device: torch.device, batch_size: int = 512
) -> Tensor:
    """Mean pooled activation of every last-layer channel (the head's input) over ``images``."""
    model.to(device).eval()
    total = sum(
        penultimate_features(
            model,
            to_unit_float(chunk.to(device)).contiguous(memory_format=torch.channels_last),
            "fine_pruning",
        )
        .float()
        .sum(0)
        for chunk in images.split(batch_size)
    )
    return (total / images.shape[0]).cpu()


def prune_channels(model: nn.Module, channels: Tensor) -> None:
    """Zero the final layer's weight columns of ``channels`` (in place)."""
    weight = last_linear(model, "fine_pruning").weight
    with torch.no_grad():
        weight[:, channels.to(weight.device)] = 0


@register_defense(
    "fp", config=FinePruningConfig, node_name="fine_prune", description="Fine-Pruning"
)
def fine_prune(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: FinePruningConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> dict:
    """Prune, then fine-tune ``model`` in place on the clean set ``(images, labels)``.

    Returns ``{pruned, channels, val_acc_before, val_acc_pruned, history}``.
    """
    val, train = split_clean_set(
        images.shape[0], config.validation_fraction, generator, "fine_pruning"
    )

    def val_acc() -> float:
        return accuracy(predict_logits(model, images[val], device=device).argmax(1), labels[val])

    activations = channel_activations(model, images[train], device=device)
    ranking = torch.argsort(activations)  # least active on clean data first
    channels = ranking.numel()
    step = max(1, round(config.prune_step * channels))
    head = last_linear(model, "fine_pruning")
    original_weight = head.weight.detach().clone()
    before = val_acc()
    pruned = 0
    for k in range(step, channels, step):
        prune_channels(model, ranking[:k])
        if val_acc() < config.acc_ratio * before:
            break
        pruned = k
    with torch.no_grad():
        head.weight.copy_(original_weight)
    prune_channels(model, ranking[:pruned])
    after_pruning = val_acc()
    log.info(
        "fine_pruning: pruned %d of %d channels, held-out clean acc %.4f -> %.4f",
        pruned,
        channels,
        before,
        after_pruning,
    )

    mask = torch.ones_like(original_weight)
    mask[:, ranking[:pruned].to(mask.device)] = 0
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scaler = grad_scaler(device)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = 0.0
        permutation = train[torch.randperm(train.numel(), generator=generator)]
        for batch in permutation.split(config.batch_size):
            x = to_unit_float(images[batch].to(device))
            if config.augment:
                x = crop_and_flip(x, generator, 4, config.flip)
            with autocast(device):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), labels[batch].to(device))
            optimiser_step(loss, optimizer, scaler)
            with torch.no_grad():
                head.weight.mul_(mask)  # pruned channels stay pruned
            loss_sum += float(loss.detach()) * batch.numel()
        model.eval()
        history.append(
            {"epoch": epoch, "loss": loss_sum / max(1, train.numel()), "val_clean_acc": val_acc()}
        )
    return {
        "pruned": pruned,
        "channels": channels,
        "val_acc_before": before,
        "val_acc_pruned": after_pruning,
        "history": history,
    }
