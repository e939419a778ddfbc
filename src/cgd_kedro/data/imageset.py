"""The labelled image set that flows between nodes.

An image set is a plain ``dict[str, Tensor]`` so that the catalog can store it as one
safetensors file and load it without executing code:

- ``images``: ``uint8`` ``N x C x H x W``
- ``labels``: ``int64`` ``N``, the *given* labels (possibly poisoned)
- optional ``original_labels`` (``int64``), ``poison`` and ``cover`` (``bool``) flags.
  Flags are ground truth for evaluation only and are never passed to a defense.
- optional per-image attributes of the embedded world (``attr_*``, ``int64``).
"""

from __future__ import annotations

import torch
from torch import Tensor

ImageSet = dict[str, Tensor]

_FLAG_KEYS = ("poison", "cover")


def make_image_set(images: Tensor, labels: Tensor, **extra: Tensor) -> ImageSet:
    """Build and validate an image set from images, labels and optional extra columns."""
    image_set = {"images": images, "labels": labels, **extra}
    validate_image_set(image_set)
    return image_set


def validate_image_set(image_set: ImageSet, name: str = "image set") -> None:
    """Raise ``ValueError`` naming ``name`` if ``image_set`` breaks the contract above."""
    if not isinstance(image_set, dict) or "images" not in image_set or "labels" not in image_set:
        raise ValueError(f"{name}: expected a dict with 'images' and 'labels' tensors")
    images, labels = image_set["images"], image_set["labels"]
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"{name}: 'images' must be uint8 N x C x H x W, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"{name}: 'labels' must be int64 of shape ({images.shape[0]},), "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    for key, value in image_set.items():
        if value.shape[:1] != (images.shape[0],):
            raise ValueError(
                f"{name}: column '{key}' has {value.shape[0]} rows, expected {images.shape[0]}"
            )
        if key in _FLAG_KEYS and value.dtype != torch.bool:
            raise ValueError(f"{name}: flag column '{key}' must be bool, got {value.dtype}")


def subset(image_set: ImageSet, index: Tensor) -> ImageSet:
    """Rows ``index`` (integer indices or a boolean mask) of every column."""
    return {key: value[index] for key, value in image_set.items()}


def num_classes_of(image_set: ImageSet) -> int:
    return int(image_set["labels"].max()) + 1 if image_set["labels"].numel() else 0
