"""Supervised training of a classifier on an image set,
with the BackdoorBench recipe as defaults."""

from __future__ import annotations

import logging
import math
import time
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.accelerate import (
    autocast,
    compiled_forward,
    grad_scaler,
    optimiser_step,
    prepare_model,
    to_device,
)
from cgd_kedro.config import MAX_BATCH_SIZE, MAX_EPOCHS, ParameterModel
from cgd_kedro.runtime import log_time_estimate
from cgd_kedro.training.augment import crop_and_flip

log = logging.getLogger(__name__)


class TrainingConfig(ParameterModel):
    """Hyper-parameters of ``train_classifier``; defaults are BackdoorBench's CIFAR-10 recipe."""

    SECTION: ClassVar[str] = "training"

    epochs: int = Field(
        100, ge=1, le=MAX_EPOCHS, description="passes over the training set (BackdoorBench: 100)"
    )
    batch_size: int = Field(128, ge=1, le=MAX_BATCH_SIZE, description="images per SGD step")
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate, decayed by `schedule`")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (unused by adam)")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 penalty")
    augment: bool = Field(
        True,
        description="random crop (`crop_padding`) and, with `flip`, horizontal flip, on the device",
    )
    crop_padding: int = Field(
        4, ge=0, le=64, description="zero padding of the random crop, in pixels"
    )
    flip: bool = Field(
        True, description="mirror half the images (only where the dataset allows it: not GTSRB)"
    )
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="sgd (with momentum) or adam (CGD's suspicious model)"
    )
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: per step, down to 0"
    )
    warmup: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the steps over which the lr first rises linearly from 0",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="cross-entropy label smoothing (BackdoorBench: 0)"
    )


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] to float32 in [0, 1] (the input convention of every model here)."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def lr_factor(config: TrainingConfig, total_steps: int):
    """The learning-rate multiplier per step of ``config``'s schedule (see ``schedule_factor``)."""
    return schedule_factor(config.schedule, total_steps, config.warmup)


def schedule_factor(schedule: str, total_steps: int, warmup: float = 0.0):
    """The learning-rate multiplier per step: linear warm-up over ``warmup`` of the steps, then
    ``cosine`` decay to 0 at ``total_steps`` (or ``constant``)."""
    warm = round(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    return factor


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: TrainingConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
    description: str = "train",
) -> list[dict]:
    """Train ``model`` in place with cross-entropy (SGD + cosine schedule by default).

    Args:
        model: a classifier taking [0, 1] float images.
        images: uint8 ``N x C x H x W``; moved to ``device`` once, batches are sliced there.
        labels: int64 ``N`` (the given labels: for a victim, the poisoned ones).
        config: hyper-parameters.
        device: where to train.
        generator: CPU generator for shuffling and augmentation (makes the run reproducible).
        description: label of the progress bar.

    Returns:
        One dict per epoch with ``epoch``, ``loss`` and ``train_acc`` (on the augmented batches).
    """
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"{description}: need as many labels as images and at least one image")
    prepare_model(model, device).train()
    images, labels = (
        to_device(images, device),
        to_device(labels, device),
    )  # once: batches are sliced on the device
    forward, scaler = compiled_forward(model, device, long_loop=True), grad_scaler(device)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    steps_per_epoch = math.ceil(images.shape[0] / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
    history = []
    progress = tqdm(total=total_steps, desc=description, unit="batch", disable=None, leave=False)
    for epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        order = torch.randperm(images.shape[0], generator=generator).to(device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for batch in order.split(config.batch_size):
            x = to_unit_float(images[batch])
            if config.augment:
                x = crop_and_flip(x, generator, config.crop_padding, config.flip)
            with autocast(device):
                logits = forward(x.contiguous(memory_format=torch.channels_last))
                loss = F.cross_entropy(
                    logits.float(), labels[batch], label_smoothing=config.label_smoothing
                )
            optimiser_step(loss, optimizer, scaler)
            scheduler.step()
            loss_sum += loss.detach() * batch.numel()
            correct += (logits.argmax(1) == labels[batch]).sum()
            progress.update()
        record = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / images.shape[0],
            "train_acc": float(correct) / images.shape[0],
        }
        history.append(record)
        if epoch == 0:
            log_time_estimate(log, description, time.perf_counter() - epoch_started, config.epochs)
        log.info(
            "%s epoch %d/%d: loss %.4f, train acc %.4f",
            description,
            epoch + 1,
            config.epochs,
            record["loss"],
            record["train_acc"],
        )
    progress.close()
    model.eval()
    return history
