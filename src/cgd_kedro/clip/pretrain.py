"""Contrastive (CLIP) training on image-caption pairs: pretraining the embedded CLIP, implanting a
backdoor by fine-tuning, and the CLIP defenses' fine-tuning (plain, CleanCLIP, ABD), all one loop.
The loss is the symmetric InfoNCE with a learnt temperature (``cgd_kedro.clip.losses``), plus
CleanCLIP's self-supervised term when augmented views are given."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.accelerate import autocast, grad_scaler, optimiser_step, prepare_model, to_device
from cgd_kedro.clip.losses import cleanclip_loss, clip_loss
from cgd_kedro.clip.zero_shot import clip_preprocess
from cgd_kedro.config import MAX_BATCH_SIZE, MAX_EPOCHS, ParameterModel
from cgd_kedro.runtime import log_time_estimate
from cgd_kedro.training.augment import crop_and_flip

log = logging.getLogger(__name__)


class ContrastiveConfig(ParameterModel):
    """Hyper-parameters of ``train_contrastive`` (the same recipe serves pretraining, backdoor
    implanting and the CLIP defenses)."""

    SECTION: ClassVar[str] = "clip.pretrain"

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="passes over the pairs")
    batch_size: int = Field(
        256,
        ge=2,
        le=MAX_BATCH_SIZE,
        description="pairs per step (the InfoNCE negatives are the rest of the batch)",
    )
    lr: float = Field(
        2e-3, gt=0, le=10, description="peak AdamW learning rate (warm-up then cosine decay)"
    )
    weight_decay: float = Field(
        0.1,
        ge=0,
        le=10,
        description="AdamW weight decay (not on norms, biases and the logit scale)",
    )
    warmup: float = Field(0.1, ge=0, lt=1, description="share of steps spent warming up")
    augment: bool = Field(True, description="random crop (pad 2) and horizontal flip of the images")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = (
            parameter.ndim < 2
            or "logit_scale" in name
            or "bias" in name
            or "ln" in name
            or "norm" in name
        )
        (no_decay if exempt else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


Views = Callable[[Tensor, list[str], torch.Generator], tuple[Tensor, list[str]]]


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
    views: Views | None = None,
    lambdas: tuple[float, float] = (1.0, 1.0),
    on_epoch_end: Callable[[nn.Module], dict] | None = None,
) -> list[dict]:
    """Train ``model`` in place on (image, caption) pairs; returns per-epoch ``{epoch, loss, ...}``.

    Without ``views`` the loss is CLIP's InfoNCE. With ``views(images, captions, generator) ->
    (image_view, caption_view)`` it is CleanCLIP's ``lambda1 * L_CLIP + lambda2 * L_SS`` with those
    views (``lambdas``). ``on_epoch_end(model)`` may add figures to each epoch's record (reporting
    only; nothing here reads them).
    """
    if images.shape[0] != len(captions) or images.shape[0] < 2:
        raise ValueError(f"{description}: need as many captions as images (at least two pairs)")
    prepare_model(model, device).train()
    scaler = grad_scaler(device)
    captions = list(captions)
    tokens = tokenizer(captions)
    images = to_device(images, device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = math.ceil(images.shape[0] / config.batch_size)
    total = config.epochs * steps_per_epoch
    warm = max(1, round(config.warmup * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
        ),
    )
    history, progress = (
        [],
        tqdm(total=total, desc=description, unit="batch", disable=None, leave=False),
    )
    for epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        order = torch.randperm(images.shape[0], generator=generator)
        sums: dict[str, float] = {}
        for batch in order.split(config.batch_size):
            if batch.numel() < 2:
                continue
            x = images[batch.to(device)]
            if config.augment:
                x = crop_and_flip(x, generator, padding=2)
            with autocast(device):  # the encoders in mixed precision on CUDA; the losses in fp32
                image_features = model.encode_image(
                    clip_preprocess(x, **preprocess), normalize=True
                ).float()
                text_features = model.encode_text(tokens[batch].to(device), normalize=True).float()
                if views is not None:
                    image_view, caption_view = views(
                        x, [captions[i] for i in batch.tolist()], generator
                    )
                    view_features = (
                        model.encode_image(
                            clip_preprocess(image_view, **preprocess), normalize=True
                        ).float(),
                        model.encode_text(
                            tokenizer(caption_view).to(device), normalize=True
                        ).float(),
                    )
            scale = model.logit_scale.exp()
            if views is None:
                loss, parts = clip_loss(image_features, text_features, scale), {}
            else:
                loss, parts = cleanclip_loss(
                    image_features,
                    text_features,
                    *view_features,
                    scale,
                    lambda1=lambdas[0],
                    lambda2=lambdas[1],
                )
            optimiser_step(loss, optimizer, scaler)
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            for key, value in ({"loss": float(loss.detach())} | parts).items():
                sums[key] = sums.get(key, 0.0) + value * batch.numel()
            progress.update()
        model.eval()
        record = {"epoch": epoch + 1} | {
            key: value / images.shape[0] for key, value in sums.items()
        }
        if on_epoch_end is not None:
            record |= on_epoch_end(model)
        history.append(record)
        if epoch == 0:
            log_time_estimate(log, description, time.perf_counter() - epoch_started, config.epochs)
        model.train()
        log.info(
            "%s epoch %d/%d: loss %.4f",
            description,
            epoch + 1,
            config.epochs,
            record.get("loss", float("nan")),
        )
    progress.close()
    model.eval()
    return history
