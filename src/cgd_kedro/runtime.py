"""Device resolution and seeding shared by every torch entry point."""

from __future__ import annotations

import random

import numpy as np
import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """Map the ``device`` parameter (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``) to a torch device.

    ``auto`` picks CUDA when it is available. Asking for ``cuda`` on a machine without it is an
    error rather than a silent fallback, so a benchmark never measures the wrong device.
    """
    if not isinstance(device, str) or not (device in DEVICE_CHOICES or device.startswith("cuda:")):
        raise ValueError(f"device: expected one of {DEVICE_CHOICES} (or 'cuda:N'), got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator seeded with ``seed``.

    Code that draws random numbers should take that generator explicitly; the global seeds
    only cover library code that does not accept one.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def derive_seed(seed: int, stream: str) -> int:
    """A stable per-purpose seed, so that e.g. the train and test worlds never share draws."""
    value = seed
    for char in stream:
        value = (value * 1_000_003 + ord(char)) % (2**61 - 1)
    return value
