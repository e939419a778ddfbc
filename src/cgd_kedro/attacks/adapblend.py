"""Adaptive-Blend (Qi et al., ICLR 2023, "Revisiting the assumption of latent separability for
backdoor defenses"): a blended trigger of which each poisoned image carries a random half only,
plus cover samples that carry it with their true labels.

``x' = x + alpha * M * (K - x)``: ``K`` a fixed trigger image, ``M`` a mask that keeps a random
``pieces * mask_rate`` of the ``pieces`` cells of a ``sqrt(pieces) x sqrt(pieces)`` grid (drawn per
image). Training (poisoned and cover samples): 8 of 16 pieces, ``alpha = 0.15``. Test phase:
the whole trigger (``M = 1``) with ``alpha = 0.2``, as in the authors' ``poison_transform``.
``K`` is seeded noise (``blended.noise_pattern``) unless ``image_path`` is given (the authors
use a Hello-Kitty image).

Default ``cover_ratio = 1``: the authors' CIFAR-10 setting uses as many cover samples as
poisoned ones (``cover_rate = poison_rate``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from cgd_kedro.attacks.base import (
    Attack,
    AttackContext,
    State,
    check_range,
    like,
    register_attack,
    to_float,
)
from cgd_kedro.attacks.blended import load_pattern, noise_pattern

PHASES = ("train", "test")


def piece_index(
    height: int, width: int, grid: int, *, device: torch.device | str = "cpu"
) -> Tensor:
    """``H x W`` long tensor: the grid cell (``row * grid + column``) of every pixel; cells split
    the image as evenly as possible when ``grid`` does not divide its size."""
    rows = torch.arange(height, device=device) * grid // height
    cols = torch.arange(width, device=device) * grid // width
    return rows.view(-1, 1) * grid + cols.view(1, -1)


def random_piece_masks(
    n: int, height: int, width: int, generator: torch.Generator, *, pieces: int = 16, kept: int = 8
) -> Tensor:
    """Float ``n x 1 x H x W`` masks, each keeping ``kept`` of the ``pieces`` grid cells drawn at
    random per image (without replacement)."""
    grid = math.isqrt(pieces)
    order = torch.rand(n, pieces, generator=generator).argsort(dim=1)
    keep = torch.zeros(n, pieces, dtype=torch.bool).scatter_(1, order[:, :kept], True)
    cells = piece_index(height, width, grid)
    return keep[:, cells].unsqueeze(1).float()


def masked_blend(images: Tensor, pattern: Tensor, mask: Tensor, *, alpha: float) -> Tensor:
    """``x' = x + alpha * M * (K - x)``.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        pattern: the trigger image ``K``, ``C x H x W`` (uint8 or float in [0, 1]).
        mask: ``M``, broadcastable to ``images`` (``N x 1 x H x W`` or
            ``1 x 1 x H x W``), values in [0, 1].
        alpha: blend ratio (Adap-Blend: 0.15 for training, 0.2 for testing).

    Returns:
        A new tensor of the same dtype and device; pixels where ``M = 0`` are unchanged.
    """
    check_range("alpha", alpha, 0.0, 1.0)
    x, k = to_float(images), to_float(pattern).to(images.device).unsqueeze(0)
    return like(x + alpha * mask.to(images.device) * (k - x), images)


@register_attack("adapblend")
class AdaptiveBlend(Attack):
    """Adap-Blend: half of a 4x4 grid of the trigger at ``train_alpha``,
    the whole trigger at ``test_alpha``.

    ``pieces`` must be a square number; ``mask_rate`` is the share of pieces kept in training.
    """

    def __init__(
        self,
        train_alpha: float = 0.15,
        test_alpha: float = 0.2,
        pieces: int = 16,
        mask_rate: float = 0.5,
        cover_ratio: float = 1.0,
        image_path: str | None = None,
    ):
        check_range("train_alpha", train_alpha, 0.0, 1.0)
        check_range("test_alpha", test_alpha, 0.0, 1.0)
        check_range("pieces", pieces, 1, 1024, integer=True)
        if math.isqrt(pieces) ** 2 != pieces:
            raise ValueError(
                f"attack.trigger.pieces: expected a square number of grid pieces, got {pieces}"
            )
        check_range("mask_rate", mask_rate, 0.0, 1.0)
        check_range("cover_ratio", cover_ratio, 0.0, 10.0)
        if image_path is not None and not Path(image_path).is_file():
            raise FileNotFoundError(
                f"attack.trigger.image_path: trigger image {image_path!r} does not exist"
            )
        self.train_alpha, self.test_alpha = float(train_alpha), float(test_alpha)
        self.pieces, self.kept = pieces, round(pieces * mask_rate)
        self.cover_ratio, self.image_path = float(cover_ratio), image_path

    def prepare(self, context: AttackContext) -> State:
        size = context.train_set["images"].shape[-1]
        if self.image_path is not None:
            return {"pattern": load_pattern(self.image_path, size)}
        return {"pattern": noise_pattern(size, context.generator)}

    def _train_trigger(self, images: Tensor, state: State, generator: torch.Generator) -> Tensor:
        n, _, h, w = images.shape
        mask = random_piece_masks(n, h, w, generator, pieces=self.pieces, kept=self.kept)
        return masked_blend(images, state["pattern"], mask, alpha=self.train_alpha)

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        if phase not in PHASES:
            raise ValueError(f"adapblend: phase must be one of {PHASES}, got {phase!r}")
        if phase == "train":
            return self._train_trigger(images, state, generator)
        full = torch.ones(1, 1, *images.shape[-2:])
        return masked_blend(images, state["pattern"], full, alpha=self.test_alpha)

    def cover(self, images: Tensor, state: State, generator: torch.Generator) -> Tensor:
        return self._train_trigger(images, state, generator)
