"""BadNets (Gu et al., 2017): a small white square stamped in the bottom-right corner."""

from __future__ import annotations

import torch
from torch import Tensor


def badnets(images: Tensor, *, patch_size: int = 3, value: float | None = None) -> Tensor:
    """Stamp a ``patch_size x patch_size`` square into the bottom-right corner of every image.

    ``x' = x * (1 - m) + v * m`` with ``m`` the corner mask.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        patch_size: side of the square in pixels (BackdoorBench: 3 on 32x32 images).
        value: the square's pixel value; defaults to white (255 for uint8, 1.0 for float).

    Returns:
        A new tensor of the same dtype and device; the input is not modified.
    """
    if not isinstance(patch_size, int) or not 1 <= patch_size <= min(images.shape[-2:]):
        raise ValueError(f"attack.trigger.patch_size: expected 1..{min(images.shape[-2:])}, got {patch_size!r}")
    if value is None:
        value = 255 if images.dtype == torch.uint8 else 1.0
    out = images.clone()
    out[..., -patch_size:, -patch_size:] = value
    return out
