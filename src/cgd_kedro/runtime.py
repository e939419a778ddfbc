"""Device resolution and seeding shared by every torch entry point."""

from __future__ import annotations

import random
import time

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


def log_time_estimate(logger, description: str, first_epoch_seconds: float, epochs: int) -> float:
    """Log how long a loop of ``epochs`` epochs will take, from its first epoch's measured time
    (``epochs x first_epoch_seconds``), and when it should end; returns the estimate in seconds.

    Called once, after the first epoch, so a user learns within minutes whether a run takes
    twenty minutes or a day on their machine.
    """
    total = epochs * first_epoch_seconds
    if epochs > 1:
        finish = time.strftime(
            "%H:%M", time.localtime(time.time() + (epochs - 1) * first_epoch_seconds)
        )
        logger.info(
            "%s: first epoch took %.0f s; estimate %s for %d epochs (done about %s)",
            description,
            first_epoch_seconds,
            format_duration(total),
            epochs,
            finish,
        )
    return total


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
