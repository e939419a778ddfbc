"""The clean set a clean-data defense is given, split into the part it learns from and a held-out
part it checks clean accuracy on (Fine-Pruning's and ANP's pruning stop)."""

from __future__ import annotations

import torch
from torch import Tensor

MIN_CLEAN_SAMPLES = 10


def split_clean_set(
    n: int, validation_fraction: float, generator: torch.Generator, owner: str
) -> tuple[Tensor, Tensor]:
    """Random ``(validation, training)`` index tensors over ``n`` clean samples; ``owner`` names the
    defense in the error raised for a clean set too small to split."""
    if n < MIN_CLEAN_SAMPLES:
        raise ValueError(
            f"{owner}: the clean set has {n} samples; at least {MIN_CLEAN_SAMPLES} are needed"
        )
    order = torch.randperm(n, generator=generator)
    n_val = max(1, round(validation_fraction * n))
    return order[:n_val], order[n_val:]
