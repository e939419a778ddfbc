"""Blended (Chen et al., 2017): a fixed full-size trigger image blended into every image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cgd_kedro.attacks.base import (
    Attack,
    AttackContext,
    State,
    check_range,
    pixel_affine,
    register_attack,
    to_float,
)


def blend(images: Tensor, pattern: Tensor, *, alpha: float = 0.2) -> Tensor:
    """``x' = (1 - alpha) * x + alpha * K`` for every image.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        pattern: the trigger image ``K``, ``C x H x W`` (same scale convention as ``images``
            after conversion: uint8 or float in [0, 1]).
        alpha: blend ratio in [0, 1] (BackdoorBench: 0.2 for training and testing).

    Returns:
        A new tensor like ``images``; uint8 results are rounded to the nearest integer.
    """
    check_range("alpha", alpha, 0.0, 1.0)
    return pixel_affine(images, 1 - alpha, alpha * to_float(pattern).to(images.device))


def noise_pattern(size: int, generator: torch.Generator) -> Tensor:
    """A seeded uniform-noise RGB image (uint8 ``3 x size x size``), the default trigger image."""
    return torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)


def load_pattern(path: str | Path, size: int) -> Tensor:
    """A user's trigger image from ``path`` as uint8 ``3 x size x size`` (bilinear resize)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"attack.trigger.image_path: trigger image {str(path)!r} does not exist"
        )
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except OSError as error:
        raise ValueError(
            f"attack.trigger.image_path: {str(path)!r} is not a readable image ({error})"
        ) from error
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().unsqueeze(0)
    resized = F.interpolate(
        tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].round().clamp(0, 255).to(torch.uint8)


@register_attack("blended")
class Blended(Attack):
    """Blend a trigger image ``K`` with ratio ``alpha``;
    ``K`` is seeded noise unless ``image_path`` is set."""

    def __init__(self, alpha: float = 0.2, image_path: str | None = None):
        check_range("alpha", alpha, 0.0, 1.0)
        if image_path is not None and not Path(image_path).is_file():
            raise FileNotFoundError(
                f"attack.trigger.image_path: trigger image {image_path!r} does not exist"
            )
        self.alpha, self.image_path = alpha, image_path

    def prepare(self, context: AttackContext) -> State:
        size = context.train_set["images"].shape[-1]
        if self.image_path is not None:
            return {"pattern": load_pattern(self.image_path, size)}
        return {"pattern": noise_pattern(size, context.generator)}

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return blend(images, state["pattern"], alpha=self.alpha)
