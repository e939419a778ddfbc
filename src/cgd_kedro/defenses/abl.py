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
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from cgd_kedro.accelerate import autocast, grad_scaler, optimiser_step, prepare_model, to_device
from cgd_kedro.config import MAX_BATCH_SIZE, MAX_EPOCHS, ParameterModel
from cgd_kedro.training.augment import crop_and_flip
from cgd_kedro.training.classifier import to_unit_float

log = logging.getLogger(__name__)


class ABLConfig(ParameterModel):
    """The ``abl`` parameters (BackdoorBench's, with shorter phases for the embedded world)."""

    SECTION: ClassVar[str] = "abl"

    isolation_ratio: float = Field(
        0.01, gt=0, lt=1, description="share of the training set isolated as backdoor samples"
    )
    gamma: float = Field(0.5, ge=0, le=100, description="flooding level of the LGA loss")
    isolation_epochs: int = Field(
        5,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs of LGA training before isolating (BackdoorBench: 20)",
    )
    finetune_epochs: int = Field(
        5,
        ge=0,
        le=MAX_EPOCHS,
        description="epochs of plain training on the non-isolated samples (BackdoorBench: 60)",
    )
    unlearning_epochs: int = Field(
        5, ge=0, le=MAX_EPOCHS, description="epochs of gradient ascent on the isolated samples"
    )
    lr: float = Field(
        0.05,
        gt=0,
        le=10,
        description="SGD learning rate of isolation and fine-tuning (cosine over both)",
    )
    lr_unlearning: float = Field(
        5e-4, gt=0, le=10, description="SGD learning rate of the unlearning phase"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 penalty")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH_SIZE, description="images per step")
    augment: bool = Field(True, description="random crop and flip, as for the victim")
    flip: bool = Field(True, description="only where the dataset allows it (not GTSRB)")


def lga_loss(logits: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """``sign(CE - gamma) * CE`` with the batch-mean cross-entropy (ABL's flooding form)."""
    ce = F.cross_entropy(logits, labels)
    return torch.sign(ce - gamma) * ce


@torch.no_grad()
def per_sample_loss(
    model: nn.Module, images: Tensor, labels: Tensor, *, device: torch.device, batch_size: int = 512
) -> Tensor:
    model.to(device).eval()
    losses = [
        F.cross_entropy(
            model(to_unit_float(x.to(device)).contiguous(memory_format=torch.channels_last)),
            y.to(device),
            reduction="none",
        ).cpu()
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    ]
    return torch.cat(losses)


def _epoch(
    model, images, labels, indices, loss_fn, optimizer, scheduler, scaler, config, generator, device
) -> float:
    model.train()
    total = 0.0
    for batch in indices[torch.randperm(indices.numel(), generator=generator)].split(
        config.batch_size
    ):
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
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: ABLConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> dict:
    """Train ``model`` (fresh) on the poisoned set with ABL, in place.

    Returns ``{isolated: indices, history: [...]}``; the isolated indices are the defense's guess
    at the poisoned samples (evaluated against ground truth elsewhere, never here).
    """
    n = images.shape[0]
    prepare_model(model, device)
    images, labels = (
        to_device(images, device),
        to_device(labels, device),
    )  # once: batches are sliced on the device
    # one for the whole training: its fp16 loss scale carries over between epochs
    scaler = grad_scaler(device)
    everything = torch.arange(n)
    steps = (config.isolation_epochs + config.finetune_epochs) * -(-n // config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    for epoch in range(config.isolation_epochs):
        loss = _epoch(
            model,
            images,
            labels,
            everything,
            lambda z, y: lga_loss(z, y, config.gamma),
            optimizer,
            scheduler,
            scaler,
            config,
            generator,
            device,
        )
        history.append({"phase": "isolation", "epoch": epoch + 1, "loss": loss})
    losses = per_sample_loss(model, images, labels, device=device)
    n_isolated = max(1, round(config.isolation_ratio * n))
    isolated = torch.argsort(losses, stable=True)[:n_isolated].sort().values
    kept = everything[~torch.isin(everything, isolated)]
    log.info("abl: isolated %d samples with the lowest LGA loss", n_isolated)
    for epoch in range(config.finetune_epochs):
        loss = _epoch(
            model,
            images,
            labels,
            kept,
            F.cross_entropy,
            optimizer,
            scheduler,
            scaler,
            config,
            generator,
            device,
        )
        history.append({"phase": "finetune", "epoch": epoch + 1, "loss": loss})
    ascent = torch.optim.SGD(
        model.parameters(),
        lr=config.lr_unlearning,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    for epoch in range(config.unlearning_epochs):
        loss = _epoch(
            model,
            images,
            labels,
            isolated,
            lambda z, y: -F.cross_entropy(z, y),
            ascent,
            None,
            scaler,
            config,
            generator,
            device,
        )
        history.append({"phase": "unlearning", "epoch": epoch + 1, "loss": loss})
    return {"isolated": isolated, "history": history}
