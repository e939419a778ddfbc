"""Train-time augmentation as batched tensor ops (no per-image Python loop).

Both functions follow torchvision ``transforms.v2`` semantics, but draw an independent random
choice per image from an explicit generator so results are reproducible on a given device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad each side by ``padding`` and crop back to the original size
    at a random offset per image.

    Args:
        images: ``N x C x H x W`` tensor (any dtype, any device).
        padding: pixels of zero padding on every side (BackdoorBench uses 4 on CIFAR).
        generator: CPU generator for the offsets.
    """
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = (offsets[0].view(n, 1) + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = (offsets[1].view(n, 1) + torch.arange(w, device=images.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channels = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


def random_horizontal_flip(images: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def crop_and_flip(
    images: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> Tensor:
    """BackdoorBench's train transform: random crop with padding, then a random horizontal flip
    where the dataset allows it (``flip``: CIFAR-10 yes; GTSRB no, its
    signs change meaning mirrored)."""
    cropped = random_crop(images, padding, generator)
    return random_horizontal_flip(cropped, generator) if flip else cropped
