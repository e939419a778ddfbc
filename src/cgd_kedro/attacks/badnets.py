"""BadNets (Gu et al., 2017): a small white square stamped in the bottom-right corner."""

from __future__ import annotations

import torch
from torch import Tensor

from cgd_kedro.attacks.base import Attack, State, check_range, register_attack


def stamp_patch(images: Tensor, *, patch_size: int = 3, value: float | None = None) -> Tensor:
    """Stamp a ``patch_size x patch_size`` square into the bottom-right corner of every image.

    ``x' = x * (1 - m) + v * m`` with ``m`` the corner mask.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        patch_size: side of the square in pixels (BackdoorBench: 3 on 32x32 images).
        value: the square's pixel value; defaults to white (255 for uint8, 1.0 for float).

    Returns:
        A new tensor of the same dtype and device; the input is not modified.
    """
    check_range("patch_size", patch_size, 1, min(images.shape[-2:]), integer=True)
    if value is None:
        value = 255 if images.dtype == torch.uint8 else 1.0
    out = images.clone()
    out[..., -patch_size:, -patch_size:] = value
    return out


@register_attack("badnets")
class BadNets(Attack):
    """All-to-one/all-to-all patch attack; ``patch_size`` is the side of the white square."""

    def __init__(self, patch_size: int = 3):
        check_range("patch_size", patch_size, 1, 64, integer=True)
        self.patch_size = patch_size

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return stamp_patch(images, patch_size=self.patch_size)
