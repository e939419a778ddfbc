"""Supervised training of a classifier on an image set, with the BackdoorBench recipe as defaults."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.accelerate import autocast, compiled_forward, grad_scaler, optimiser_step, prepare_model, to_device
from cgd_kedro.config import positive_int, require, section_from_params
from cgd_kedro.runtime import log_time_estimate
from cgd_kedro.training.augment import crop_and_flip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of ``train_classifier``; defaults are BackdoorBench's CIFAR-10 recipe.

    Attributes:
        epochs: passes over the training set (BackdoorBench: 100; the embedded default uses fewer).
        batch_size: images per SGD step.
        lr: initial learning rate of SGD, decayed to 0 by a per-step cosine schedule.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        augment: random crop (``crop_padding``) and, with ``flip``, horizontal flip, on the device.
        crop_padding: zero padding of the random crop in pixels.
        flip: mirror half the images (only where the dataset allows it: not GTSRB).
        optimizer: ``sgd`` (with ``momentum``) or ``adam`` (``momentum`` unused; CGD's suspicious model).
        schedule: ``cosine`` (per step, down to 0) or ``constant``.
        warmup: share of the steps over which the learning rate first rises linearly from 0
            (0: none, BackdoorBench; fast few-epoch recipes such as airbench's warm up).
        label_smoothing: cross-entropy label smoothing (0: none, BackdoorBench; airbench: 0.2).
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    crop_padding: int = 4
    flip: bool = True
    optimizer: str = "sgd"
    schedule: str = "cosine"
    warmup: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "epochs": positive_int(self.epochs),
            "batch_size": positive_int(self.batch_size),
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "crop_padding": isinstance(self.crop_padding, int) and self.crop_padding >= 0,
            "optimizer": self.optimizer in ("sgd", "adam"),
            "schedule": self.schedule in ("cosine", "constant"),
            "warmup": isinstance(self.warmup, (int, float)) and 0 <= self.warmup < 1,
            "label_smoothing": isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
        }
        require("training", self, checks)

    @classmethod
    def from_params(cls, params: dict, section: str = "training") -> TrainingConfig:
        """Build from a parameters dict, rejecting unknown keys by name (catches typos in YAML)."""
        return section_from_params(cls, params, section)

    def as_dict(self) -> dict:
        return asdict(self)


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
    images, labels = to_device(images, device), to_device(labels, device)  # once: batches are sliced on the device
    forward, scaler = compiled_forward(model, device, long_loop=True), grad_scaler(device)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
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
                loss = F.cross_entropy(logits.float(), labels[batch], label_smoothing=config.label_smoothing)
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
        log.info("%s epoch %d/%d: loss %.4f, train acc %.4f", description, epoch + 1, config.epochs, record["loss"], record["train_acc"])
    progress.close()
    model.eval()
    return history
