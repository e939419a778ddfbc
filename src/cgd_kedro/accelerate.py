"""The GPU fast path: mixed precision, channels_last, ``torch.compile`` and asynchronous copies.

Everything here acts only when the device is CUDA. On the CPU each helper returns its input or a
null context, so CPU results are exactly what they are without this module (tested).

- **Precision** (``runtime.precision``): ``auto`` = bfloat16 autocast on CUDA when the GPU
  supports it (bf16 keeps fp32's exponent range, so no loss scaler is needed), fp32 otherwise;
  ``bf16``, ``fp16`` (with a gradient scaler) or ``fp32`` force one.
- **channels_last**: models and batches use the NHWC layout that tensor cores prefer.
- **torch.compile** (``runtime.compile``): ``auto`` = on CUDA for the long loops (victim and
  clean-model training), where the one-off compile time pays; ``on`` everywhere on CUDA; ``off``.
  A compile or kernel failure falls back to eager execution with a warning.
- **Transfers**: host tensors are pinned and copied with ``non_blocking=True``; training sets are
  moved to the device once and batches are sliced there, so nothing is copied between epochs.

``configure`` sets the process-wide choice; the Kedro hook calls it from the ``runtime`` parameters
before a run, and library users may call it themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Acceleration:
    """How CUDA runs are accelerated (ignored on the CPU)."""

    precision: str = "auto"
    compile: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"runtime.precision: expected one of {list(PRECISIONS)}, got {self.precision!r}"
            )
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(
                f"runtime.compile: expected one of {list(COMPILE_CHOICES)}, got {self.compile!r}"
            )


_settings = Acceleration()


# `compile` shadows the builtin on purpose: it is the parameter's name (runtime.compile).
def configure(precision: str = "auto", compile: str = "auto") -> Acceleration:
    """Set the process-wide acceleration; returns it."""
    global _settings
    _settings = Acceleration(precision, compile)
    return _settings


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``device``, or ``None`` for full fp32 (always on the CPU)."""
    if device.type != "cuda" or _settings.precision == "fp32":
        return None
    if _settings.precision == "fp16":
        return torch.float16
    if _settings.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # auto on a GPU without bf16: fp32 rather than fp16 without being asked


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed-precision context for forward passes and losses on ``device``
    (a null context on the CPU)."""
    dtype = autocast_dtype(device)
    return (
        torch.autocast(device_type="cuda", dtype=dtype)
        if dtype is not None
        else contextlib.nullcontext()
    )


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 on CUDA (a pass-through otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=autocast_dtype(device) == torch.float16)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``;
    a host tensor bound for CUDA is pinned and copied asynchronously."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``, in channels_last on CUDA (in place; returns it)."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def compiled_forward(
    model: nn.Module, device: torch.device, *, long_loop: bool = False
) -> Callable[..., Tensor]:
    """The function to call for ``model``'s forward passes in a training loop.

    ``torch.compile(model)`` where ``runtime.compile`` asks for it on CUDA (``auto``: only for a
    ``long_loop``), else ``model`` itself. The compiled module shares ``model``'s parameters, so the
    optimiser and ``state_dict`` keep using ``model``. If compiling or running the compiled graph
    fails, a warning is logged and the eager model is used from then on.
    """
    wanted = device.type == "cuda" and (
        _settings.compile == "on" or (_settings.compile == "auto" and long_loop)
    )
    if not wanted:
        return model
    try:
        compiled = torch.compile(model)
    except Exception as error:  # any backend failure means: run eagerly
        log.warning(
            "torch.compile unavailable (%s: %s); running %s eagerly",
            type(error).__name__,
            error,
            type(model).__name__,
        )
        return model
    state = {"forward": compiled}

    def forward(*args, **kwargs):
        try:
            return state["forward"](*args, **kwargs)
        except Exception as error:
            if state["forward"] is model:
                raise
            log.warning(
                "torch.compile failed (%s: %s); running %s eagerly",
                type(error).__name__,
                error,
                type(model).__name__,
            )
            state["forward"] = model
            return model(*args, **kwargs)

    return forward


def optimiser_step(
    loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    """Zero the gradients, back-propagate ``loss`` (scaled for fp16) and step ``optimizer``."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
