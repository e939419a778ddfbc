"""A classifier = registered architecture + input normalisation, and its checkpoint form.

Every model in the project takes float images in [0, 1] (``N x C x H x W``); the per-dataset
normalisation lives inside the model so attacks, defenses and CLIP code never need to know it.
A checkpoint is the plain dict that the catalog stores as one safetensors file::

    {"architecture": str, "num_classes": int, "mean": [..], "std": [..], "state_dict": {...}}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cgd_kedro.models.registry import build_model

Checkpoint = dict


class Classifier(nn.Module):
    """Wraps an architecture so that it reads [0, 1] images and normalises them itself."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        # Non-persistent: the state_dict stays the bare architecture's (BackdoorBench-compatible).
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def _check_normalization(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(
            f"normalization: expected 3 means and 3 positive stds, got mean={mean}, std={std}"
        )


def build_classifier(
    architecture: str, num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> Classifier:
    _check_normalization(mean, std)
    return Classifier(build_model(architecture, num_classes), mean, std)


def to_checkpoint(model: Classifier, architecture: str, num_classes: int) -> Checkpoint:
    return {
        "architecture": architecture,
        "num_classes": int(num_classes),
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()},
    }


def from_checkpoint(
    checkpoint: Checkpoint, device: torch.device | str = "cpu", source: str = "checkpoint"
) -> Classifier:
    """Rebuild a classifier;
    a state_dict that does not fit the named architecture is an error naming ``source``."""
    missing = {"architecture", "num_classes", "mean", "std", "state_dict"} - set(checkpoint)
    if missing:
        raise ValueError(
            f"{source}: not a cgd_kedro classifier checkpoint (missing {sorted(missing)})"
        )
    model = build_classifier(
        checkpoint["architecture"], checkpoint["num_classes"], checkpoint["mean"], checkpoint["std"]
    )
    try:
        model.net.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{source}: weights do not match architecture {checkpoint['architecture']!r} "
            f"with {checkpoint['num_classes']} classes: {str(error).splitlines()[0]}"
        ) from error
    return model.to(device)


def last_linear(model: nn.Module, owner: str = "model") -> nn.Linear:
    """The model's last ``nn.Linear`` (its classification head). Every registered architecture ends
    in global pooling and this layer, so its input is the penultimate (feature) layer, one value per
    channel of the last convolution. ``owner`` prefixes the error (e.g. ``trojannn``)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{owner}: the model has no nn.Linear layer (its input is the feature layer)"
        )
    return linears[-1]


def penultimate_features(model: nn.Module, images: Tensor, owner: str = "model") -> Tensor:
    """``N x D`` activations feeding the model's last linear layer (gradients flow through)."""
    captured: list[Tensor] = []
    hook = lambda module, inputs, output: captured.append(inputs[0])  # noqa: E731
    handle = last_linear(model, owner).register_forward_hook(hook)
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0].flatten(1)
