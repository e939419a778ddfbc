"""Anti-Backdoor Learning (ABL; Li et al., NeurIPS 2021), a peer of CGD that needs no clean data.

1. Isolation: train a fresh model on the poisoned set with the local gradient ascent (LGA) loss
   ``sign(CE - gamma) * CE`` (flooding at ``gamma``): samples whose loss falls below ``gamma``
   are pushed back up, and backdoor samples, learnt fastest, still end with the lowest losses.
2. The ``isolation_ratio`` (1%) of samples with the lowest loss are isolated as "backdoor".
3. Fine-tuning: the model keeps training on the rest with plain cross-entropy.
4. Unlearning: gradient *ascent* on the isolated samples (loss ``-CE``) with a small learning rate.

Defaults are BackdoorBench's (isolation 1%, gamma 0.5, 5 unlearning epochs at lr 5e-4) with the
training epochs scaled to the embedded world (the victim trains 8 epochs here instead of 100).
The defense sees the training images and their given labels only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgd_kedro.accelerate import autocast, grad_scaler, optimiser_step, prepare_model, to_device
from cgd_kedro.config import positive_int, require, section_from_params
from cgd_kedro.training.augment import crop_and_flip
from cgd_kedro.training.classifier import to_unit_float

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ABLConfig:
    """The ``abl`` parameters.

    Attributes:
        isolation_ratio: share of the training set isolated as backdoor samples (0.01).
        gamma: flooding level of the LGA loss (0.5).
        isolation_epochs: epochs of LGA training before isolating (BackdoorBench: 20; here 5: with 2
            the trigger is not learnt yet and BadNets' isolation precision was 0.0, with 5 it is 0.985).
        finetune_epochs: epochs of plain training on the non-isolated samples (BackdoorBench: 60; here 5).
        unlearning_epochs: epochs of gradient ascent on the isolated samples (5).
        lr: SGD learning rate of isolation and fine-tuning (cosine over both; 0.05 like the victim here).
        lr_unlearning: SGD learning rate of the unlearning phase (5e-4).
        momentum, weight_decay, batch_size, augment: as for the victim.
    """

    isolation_ratio: float = 0.01
    gamma: float = 0.5
    isolation_epochs: int = 5
    finetune_epochs: int = 5
    unlearning_epochs: int = 5
    lr: float = 0.05
    lr_unlearning: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True
    flip: bool = True  # only where the dataset allows it (not GTSRB)

    def __post_init__(self) -> None:
        require("abl", self, {
            "isolation_ratio": 0 < self.isolation_ratio < 1,
            "gamma": self.gamma >= 0,
            "isolation_epochs": positive_int(self.isolation_epochs),
            "finetune_epochs": isinstance(self.finetune_epochs, int) and self.finetune_epochs >= 0,
            "unlearning_epochs": isinstance(self.unlearning_epochs, int) and self.unlearning_epochs >= 0,
            "lr": self.lr > 0,
            "lr_unlearning": self.lr_unlearning > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": positive_int(self.batch_size),
        })  # fmt: skip

    @classmethod
    def from_params(cls, params: dict) -> ABLConfig:
        return section_from_params(cls, params, "abl")

    def as_dict(self) -> dict:
        return asdict(self)


def lga_loss(logits: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """``sign(CE - gamma) * CE`` with the batch-mean cross-entropy (ABL's flooding form)."""
    ce = F.cross_entropy(logits, labels)
    return torch.sign(ce - gamma) * ce


@torch.no_grad()
def per_sample_loss(model: nn.Module, images: Tensor, labels: Tensor, *, device: torch.device, batch_size: int = 512) -> Tensor:
    model.to(device).eval()
    losses = [
        F.cross_entropy(model(to_unit_float(x.to(device)).contiguous(memory_format=torch.channels_last)), y.to(device), reduction="none").cpu()
        for x, y in zip(images.split(batch_size), labels.split(batch_size))
    ]
    return torch.cat(losses)


def _epoch(model, images, labels, indices, loss_fn, optimizer, scheduler, scaler, config, generator, device) -> float:
    model.train()
    total = 0.0
    for batch in indices[torch.randperm(indices.numel(), generator=generator)].split(config.batch_size):
        x = to_unit_float(images[batch])
        if config.augment:
            x = crop_and_flip(x, generator, 4, config.flip)
        with autocast(device):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(logits.float(), labels[batch])
        optimiser_step(loss, optimizer, scaler)
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * batch.numel()
    model.eval()
    return total / max(1, indices.numel())


def anti_backdoor_learning(
    model: nn.Module, images: Tensor, labels: Tensor, config: ABLConfig, *, device: torch.device, generator: torch.Generator
) -> dict:
    """Train ``model`` (fresh) on the poisoned set with ABL, in place.

    Returns ``{isolated: indices, history: [...]}``; the isolated indices are the defense's guess
    at the poisoned samples (evaluated against ground truth elsewhere, never here).
    """
    n = images.shape[0]
    prepare_model(model, device)
    images, labels = to_device(images, device), to_device(labels, device)  # once: batches are sliced on the device
    scaler = grad_scaler(device)  # one for the whole training: its fp16 loss scale carries over between epochs
    everything = torch.arange(n)
    steps = (config.isolation_epochs + config.finetune_epochs) * -(-n // config.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    for epoch in range(config.isolation_epochs):
        loss = _epoch(model, images, labels, everything, lambda z, y: lga_loss(z, y, config.gamma), optimizer, scheduler, scaler, config, generator, device)
        history.append({"phase": "isolation", "epoch": epoch + 1, "loss": loss})
    losses = per_sample_loss(model, images, labels, device=device)
    n_isolated = max(1, round(config.isolation_ratio * n))
    isolated = torch.argsort(losses, stable=True)[:n_isolated].sort().values
    kept = everything[~torch.isin(everything, isolated)]
    log.info("abl: isolated %d samples with the lowest LGA loss", n_isolated)
    for epoch in range(config.finetune_epochs):
        loss = _epoch(model, images, labels, kept, F.cross_entropy, optimizer, scheduler, scaler, config, generator, device)
        history.append({"phase": "finetune", "epoch": epoch + 1, "loss": loss})
    ascent = torch.optim.SGD(model.parameters(), lr=config.lr_unlearning, momentum=config.momentum, weight_decay=config.weight_decay)
    for epoch in range(config.unlearning_epochs):
        loss = _epoch(model, images, labels, isolated, lambda z, y: -F.cross_entropy(z, y), ascent, None, scaler, config, generator, device)
        history.append({"phase": "unlearning", "epoch": epoch + 1, "loss": loss})
    return {"isolated": isolated, "history": history}
