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
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgd_kedro.accelerate import autocast, grad_scaler, optimiser_step
from cgd_kedro.config import positive_int, require, section_from_params
from cgd_kedro.defenses.clean_set import split_clean_set
from cgd_kedro.metrics import accuracy, predict_logits
from cgd_kedro.models.classifier import last_linear, penultimate_features
from cgd_kedro.training.augment import crop_and_flip
from cgd_kedro.training.classifier import to_unit_float

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinePruningConfig:
    """The ``fine_pruning`` parameters (BackdoorBench's defaults, fine-tuning scaled to the embedded world).

    Attributes:
        acc_ratio: keep pruning while the held-out clean accuracy is at least this share of the
            unpruned model's (0.9).
        prune_step: channels pruned between two accuracy checks, as a share of all channels (0.05).
        validation_fraction: share of the clean set held out to check accuracy while pruning (0.2).
        epochs, lr, momentum, weight_decay, batch_size, augment: the fine-tuning on the clean set.
    """

    acc_ratio: float = 0.9
    prune_step: float = 0.05
    validation_fraction: float = 0.2
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True
    flip: bool = True  # only where the dataset allows it (not GTSRB)

    def __post_init__(self) -> None:
        checks = {
            "acc_ratio": 0 < self.acc_ratio <= 1,
            "prune_step": 0 < self.prune_step <= 1,
            "validation_fraction": 0 < self.validation_fraction < 1,
            "epochs": isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 0,
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": positive_int(self.batch_size),
        }
        require("fine_pruning", self, checks)

    @classmethod
    def from_params(cls, params: dict) -> FinePruningConfig:
        return section_from_params(cls, params, "fine_pruning")

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def channel_activations(model: nn.Module, images: Tensor, *, device: torch.device, batch_size: int = 512) -> Tensor:
    """Mean pooled activation of every last-layer channel (the head's input) over ``images``."""
    model.to(device).eval()
    total = sum(
        penultimate_features(model, to_unit_float(chunk.to(device)).contiguous(memory_format=torch.channels_last), "fine_pruning")
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


def fine_prune(
    model: nn.Module, images: Tensor, labels: Tensor, config: FinePruningConfig, *, device: torch.device, generator: torch.Generator
) -> dict:
    """Prune, then fine-tune ``model`` in place on the clean set ``(images, labels)``.

    Returns ``{pruned, channels, val_acc_before, val_acc_pruned, history}``.
    """
    val, train = split_clean_set(images.shape[0], config.validation_fraction, generator, "fine_pruning")

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
    log.info("fine_pruning: pruned %d of %d channels, held-out clean acc %.4f -> %.4f", pruned, channels, before, after_pruning)

    mask = torch.ones_like(original_weight)
    mask[:, ranking[:pruned].to(mask.device)] = 0
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
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
        history.append({"epoch": epoch, "loss": loss_sum / max(1, train.numel()), "val_clean_acc": val_acc()})
    return {"pruned": pruned, "channels": channels, "val_acc_before": before, "val_acc_pruned": after_pruning, "history": history}
