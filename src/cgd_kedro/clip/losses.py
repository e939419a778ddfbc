"""Contrastive losses of CLIP training and of its defenses, on L2-normalised features.

    info_nce(a, b)    = 1/2 [CE(s * a b^T, I) + CE(s * b a^T, I)]      s = logit scale
    clip_loss(I, T)   = info_nce(I, T)                                  the CLIP objective
    cleanclip_loss    = lambda1 * info_nce(I, T) + lambda2 * 1/2 [info_nce(I, I') + info_nce(T, T')]

where row ``i`` of each argument is one pair and the other rows of the batch are the negatives.
``I'``, ``T'`` are the augmented views: CleanCLIP's augmented image and EDA text (REFERENCE.md §4),
or ABD's adversarially patched image and EDA text (REFERENCE.md §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE between matching rows of ``a`` and ``b`` (both ``B x D``, unit rows)."""
    if a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(
            f"info_nce: expected two B x D feature batches with B >= 2, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    logits = logit_scale * a @ b.T
    targets = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's objective: InfoNCE between images and their captions."""
    return info_nce(image_features, text_features, logit_scale)


def cleanclip_loss(
    image_features: Tensor,
    text_features: Tensor,
    image_view_features: Tensor,
    text_view_features: Tensor,
    logit_scale: Tensor | float,
    *,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """CleanCLIP's (and ABD's) objective; the loss and its two terms as floats."""
    multimodal = info_nce(image_features, text_features, logit_scale)
    unimodal = (
        info_nce(image_features, image_view_features, logit_scale)
        + info_nce(text_features, text_view_features, logit_scale)
    ) / 2
    loss = lambda1 * multimodal + lambda2 * unimodal
    return loss, {"clip": float(multimodal.detach()), "self_supervised": float(unimodal.detach())}
