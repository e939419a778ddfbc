"""The network of Keller Jordan's airbench94 (2024), a CIFAR-10 speed-run model, for CPU profiles.

airbench94 reaches 94% on CIFAR-10 in about 10 epochs with its full recipe. Here it serves the
real-data CPU profile (``--env cifar10``): on 2 CPU cores PreActResNet18 trains at about 25 img/s
(half an hour per epoch), the narrow variant at about 450 img/s. Measured in ``kedro run --env
cifar10`` on CIFAR-10 (JPEG export), 40,000 training images, 8 epochs, 2 CPU cores: 0.833 test
accuracy for the clean reference model, 0.817 for the BadNets victim (11 min); ``compact_cnn``
reached 0.786 after 8 epochs with the same recipe (README, "Real CIFAR-10").

Layout: a 2x2 stem conv (24 channels), then three groups of [conv 3x3 -> max-pool 2 -> BN -> GELU ->
conv 3x3 -> BN -> GELU], a 3x3 max-pool and a linear head scaled by 1/9. The stem is trained like
every other layer (airbench initialises it by patch whitening and freezes it; a departure kept for
simplicity). The head's input is one value per channel of the last convolution, so Fine-Pruning and
TrojanNN find their feature layer as for the other registered models.
"""

from __future__ import annotations

import torch
from torch import nn

from cgd_kedro.models.registry import register_model


class ConvGroup(nn.Sequential):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU (airbench's ``ConvGroup``)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class AirbenchNet(nn.Module):
    """airbench94's network with block widths ``widths``
    (airbench94: 64, 256, 256) on 32x32 inputs."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 2, padding=0, bias=True),
            nn.GELU(),
            ConvGroup(24, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
            nn.AdaptiveMaxPool2d(1),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1)) / 9


@register_model("airbench")
def airbench(num_classes: int) -> nn.Module:
    return AirbenchNet(num_classes, (64, 256, 256))


@register_model("airbench_narrow")
def airbench_narrow(num_classes: int) -> nn.Module:
    """Half airbench94's widths (32, 128, 128): 0.5 M parameters, about 4x cheaper per image."""
    return AirbenchNet(num_classes, (32, 128, 128))
