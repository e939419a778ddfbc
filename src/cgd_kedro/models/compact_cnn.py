"""Small VGG-style CNNs for the embedded world, trained in seconds on two CPU cores.

``compact_cnn`` (width 32) is the victim of ``embedded_large``, whose tables the README reports;
``compact_cnn_small`` (width 16, a quarter of the multiply-adds, about 3.5x the training images per
second on 2 CPU cores) is the quick default world's, so that ``kedro run`` fits in ten minutes.
"""

from __future__ import annotations

import torch
from torch import nn

from cgd_kedro.models.registry import register_model


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CompactCNN(nn.Module):
    """conv(w)-pool-conv(2w)-pool-conv(4w)-conv(4w)-pool-global-avg-pool-linear on 32x32 inputs."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(3, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            _conv_block(4 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


@register_model("compact_cnn")
def compact_cnn(num_classes: int) -> nn.Module:
    return CompactCNN(num_classes)


@register_model("compact_cnn_small")
def compact_cnn_small(num_classes: int) -> nn.Module:
    return CompactCNN(num_classes, width=16)
