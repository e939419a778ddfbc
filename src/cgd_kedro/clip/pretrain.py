"""Contrastive (CLIP) training on image-caption pairs: pretraining the embedded CLIP, and plain
fine-tuning of any CLIP. The loss is open_clip's symmetric InfoNCE with a learnt temperature."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import open_clip
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.clip.zero_shot import clip_preprocess
from cgd_kedro.config import section_from_params
from cgd_kedro.training.augment import crop_and_flip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastiveConfig:
    """Hyper-parameters of ``train_contrastive``.

    Attributes:
        epochs: passes over the pairs.
        batch_size: pairs per step (the InfoNCE negatives are the rest of the batch).
        lr: peak AdamW learning rate (one-cycle: warm-up then cosine decay).
        weight_decay: AdamW weight decay (not applied to norms, biases and the logit scale).
        warmup: share of steps spent warming up.
        augment: random crop (pad 2) and horizontal flip of the images.
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: float = 0.1
    augment: bool = True

    def __post_init__(self) -> None:
        for name, ok in {
            "epochs": isinstance(self.epochs, int) and self.epochs >= 1,
            "batch_size": isinstance(self.batch_size, int) and self.batch_size >= 2,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup": 0 <= self.warmup < 1,
        }.items():
            if not ok:
                raise ValueError(f"clip.pretrain.{name}: invalid value {getattr(self, name)!r}")

    @classmethod
    def from_params(cls, params: dict) -> ContrastiveConfig:
        return section_from_params(cls, params, "clip.pretrain")

    def as_dict(self) -> dict:
        return asdict(self)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_scale" in name or "bias" in name or "ln" in name or "norm" in name
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_contrastive(
    model: nn.Module,
    tokenizer,
    images: Tensor,
    captions: Sequence[str],
    config: ContrastiveConfig,
    preprocess: dict,
    *,
    device: torch.device,
    generator: torch.Generator,
    description: str = "clip",
) -> list[dict]:
    """Train ``model`` in place on (image, caption) pairs; returns per-epoch ``{epoch, loss}``."""
    if images.shape[0] != len(captions) or images.shape[0] < 2:
        raise ValueError(f"{description}: need as many captions as images (at least two pairs)")
    model.to(device).train()
    tokens = tokenizer(list(captions))
    images = images.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = math.ceil(images.shape[0] / config.batch_size)
    total = config.epochs * steps_per_epoch
    warm = max(1, round(config.warmup * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
    )
    loss_fn = open_clip.ClipLoss()
    history, progress = [], tqdm(total=total, desc=description, unit="batch", disable=None, leave=False)
    for epoch in range(config.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        loss_sum = 0.0
        for batch in order.split(config.batch_size):
            if batch.numel() < 2:
                continue
            x = images[batch.to(device)]
            if config.augment:
                x = crop_and_flip(x, generator, padding=2)
            image_features = model.encode_image(clip_preprocess(x, **preprocess), normalize=True)
            text_features = model.encode_text(tokens[batch].to(device), normalize=True)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            loss_sum += float(loss.detach()) * batch.numel()
            progress.update()
        history.append({"epoch": epoch + 1, "loss": loss_sum / images.shape[0]})
        log.info("%s epoch %d/%d: loss %.4f", description, epoch + 1, config.epochs, history[-1]["loss"])
    progress.close()
    model.eval()
    return history
