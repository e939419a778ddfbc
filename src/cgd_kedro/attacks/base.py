"""The attack interface shared by every backdoor attack in the library.

An attack is a small class registered by name. Its trigger maths lives in plain batched tensor
functions (torchvision ``transforms.v2`` style) in the same module; the class only wires them:

- ``__init__(**trigger)``: the trigger parameters, named and defaulted as in REFERENCE.md §2,
  validated with errors that start with ``attack.trigger.<name>``.
- ``prepare(context) -> state``: anything the trigger needs that is generated or learnt once
  (a blend pattern, a universal perturbation, an encoder's weights), as a ``dict[str, Tensor]``
  so the catalog stores it as safetensors. Static triggers return ``{}`` or a pattern.
- ``apply(images, state, generator, phase) -> images``: the triggered images, same dtype and
  device as the input (uint8 in [0, 255] or float in [0, 1]). ``phase`` is ``"train"`` or
  ``"test"`` for attacks whose trigger strength differs between poisoning and testing.
- ``cover(images, state, generator) -> images``: for attacks with cover/noise samples, which are
  modified but keep their true labels (``cover_ratio`` x poison count of them).
- ``candidates(image_set) -> bool mask``: images an attack may use (the clean-image attack only
  uses images that naturally show its feature); all images by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from cgd_kedro.data.imageset import ImageSet

State = dict[str, Tensor]


@dataclass
class AttackContext:
    """What ``Attack.prepare`` may use. ``surrogate`` is a clean-trained classifier (taking [0, 1]
    images) for attacks with ``needs_surrogate``; ground-truth flags are never part of it."""

    train_set: ImageSet
    num_classes: int
    target: int
    device: torch.device
    generator: torch.Generator
    surrogate: nn.Module | None = None


class Attack:
    name: ClassVar[str] = ""
    clean_label: ClassVar[bool] = (
        False  # poisons target-class images only and never changes a label
    )
    needs_surrogate: ClassVar[bool] = False  # prepare() needs a clean-trained classifier
    supports_all_to_all: ClassVar[bool] = True
    cover_ratio: float = 0.0  # cover samples per poisoned sample

    def prepare(self, context: AttackContext) -> State:
        return {}

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        raise NotImplementedError

    def cover(self, images: Tensor, state: State, generator: torch.Generator) -> Tensor:
        raise NotImplementedError(f"attack {self.name!r} has no cover samples")

    def candidates(self, image_set: ImageSet) -> Tensor:
        return torch.ones_like(image_set["labels"], dtype=torch.bool)


ATTACK_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    def decorate(cls: type[Attack]) -> type[Attack]:
        if name in ATTACK_REGISTRY:
            raise ValueError(f"attack {name!r} is already registered")
        cls.name = name
        ATTACK_REGISTRY[name] = cls
        return cls

    return decorate


# --- helpers shared by the trigger functions ----------------------------------------------------


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] images as float32 in [0, 1]."""
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


def like(result: Tensor, reference: Tensor) -> Tensor:
    """Clamp a float [0, 1] result and return it in ``reference``'s dtype (rounded for uint8)."""
    result = result.clamp(0, 1)
    if reference.dtype == torch.uint8:
        return (result * 255).round().to(torch.uint8)
    return result.to(reference.dtype)


# Images per pass in ``pixel_affine``: one chunk's float intermediates stay in the CPU cache, which
# makes dense static triggers 10-15x faster on a CPU than one pass over a whole large batch.
AFFINE_CHUNK = 512


def pixel_affine(images: Tensor, scale: Tensor | float, offset: Tensor) -> Tensor:
    """``clip(scale * x + offset)`` per pixel, the form of every static dense trigger (blend,
    additive signal, masked stamp). ``scale`` and ``offset`` broadcast to ``C x H x W`` and are on
    the [0, 1] scale of the images (``offset`` is scaled by 255 for uint8).

    uint8 images are computed on the 0-255 scale in place, chunk by chunk, and rounded; float
    images in one pass. Returns a new tensor of ``images``' dtype.
    """
    if images.dtype != torch.uint8:
        return like(scale * to_float(images) + offset.to(images.device), images)
    scale = scale.to(images.device).unsqueeze(0) if isinstance(scale, Tensor) else scale
    offset = (offset.to(device=images.device, dtype=torch.float32) * 255).unsqueeze(0)
    out = torch.empty_like(images)
    for chunk, target in zip(images.split(AFFINE_CHUNK), out.split(AFFINE_CHUNK), strict=True):
        target.copy_(chunk.float().mul_(scale).add_(offset).round_().clamp_(0, 255))
    return out


def check_range(
    name: str, value: object, low: float, high: float, *, integer: bool = False
) -> None:
    """Raise ``ValueError('attack.trigger.<name>: ...')`` unless ``low <= value <= high``."""
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ValueError(
            f"attack.trigger.{name}: expected {kind} in [{low}, {high}], got {value!r}"
        )
