"""Zero-shot classification with a CLIP model, batched on the device.

Logits are cosine similarities between L2-normalised image and class-text embeddings, multiplied
by ``logit_scale`` (1.0 = the CGD reference, which uses no scale; open_clip's trained models use
about 100). Class texts are prompt templates filled with class names; several templates are
averaged (a template ensemble).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgd_kedro.accelerate import autocast, prepare_model, to_device


def clip_preprocess(
    images: Tensor, size: int, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """CLIP's eval transform on a batch: resize the shorter side to ``size`` (bicubic, antialiased),
    centre-crop ``size x size``, scale to [0, 1] and normalise with ``mean``/``std``."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        ).clamp(0, 1)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size]
    mean_t = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


@torch.no_grad()
def class_text_embeddings(
    model: nn.Module,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str],
    device: torch.device,
) -> Tensor:
    """``K x D`` unit vectors:
    per class, the normalised mean of its normalised template embeddings."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(
            "clip.templates: every prompt template needs a '{}' for the class name, "
            f"got {list(templates)}"
        )
    model.to(device).eval()
    texts = [template.format(name) for name in class_names for template in templates]
    embeddings = model.encode_text(tokenizer(texts).to(device), normalize=True).float()
    embeddings = embeddings.view(len(class_names), len(templates), -1).mean(1)
    return F.normalize(embeddings, dim=-1)


@torch.no_grad()
def image_embeddings(
    model: nn.Module, images: Tensor, preprocess: dict, device: torch.device, batch_size: int = 256
) -> Tensor:
    """``N x D`` unit image embeddings (returned on CPU)."""
    prepare_model(model, device).eval()
    with autocast(device):
        outputs = [
            model.encode_image(
                clip_preprocess(to_device(chunk, device), **preprocess), normalize=True
            )
            .float()
            .cpu()
            for chunk in images.split(batch_size)
        ]
    return torch.cat(outputs)


def zero_shot_logits(
    image_features: Tensor, class_features: Tensor, logit_scale: float = 1.0
) -> Tensor:
    """``N x K`` logits: ``logit_scale`` x cosine similarity."""
    return logit_scale * image_features @ class_features.to(image_features.device).T
