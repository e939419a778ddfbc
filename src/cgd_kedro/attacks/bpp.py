"""BppAttack (Wang et al., CVPR 2022, "BppAttack: stealthy and efficient trojan attacks against deep
neural networks via image quantization and contrastive adversarial learning"): the trigger is a
colour-depth reduction of the whole image, with Floyd-Steinberg dithering.

Poisoned image: every channel squeezed to ``squeeze_num`` evenly spaced levels
``{0, 255/(s-1), ..., 255}`` with error diffusion (BppAttack's ``floydDitherspeed``; without
``dithering`` a plain rounding to the nearest level).

Cover ("negative") samples keep their true labels and get ``x + r``, with ``r`` the quantisation
residual ``squeeze(x_o) - x_o`` of *another* training image ``x_o`` (BppAttack's
``residual_list_train``): the model must learn that quantisation noise unrelated to the image is
not the trigger. ``prepare`` stores a bank of such residuals from random training images.
Default ``cover_ratio = 2``: BackdoorBench draws ``neg_ratio = 0.2`` negatives and
``pratio = 0.1`` poisons per batch, i.e. two cover samples per poisoned sample.

Floyd-Steinberg dithering is sequential over pixels; it is vectorised over images and channels
and loops over the ``H x W`` pixel positions in raster order (1,024 small tensor steps at 32x32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cgd_kedro.attacks.base import (
    Attack,
    AttackContext,
    State,
    check_range,
    like,
    register_attack,
    to_float,
)

_CPU_CHUNK = 256  # images dithered per pass on the CPU


def _levels(x: Tensor, squeeze_num: int) -> Tensor:
    """The nearest of the ``squeeze_num`` levels in [0, 1] (ties to even, like ``np.round``)."""
    return (x * (squeeze_num - 1)).round().clamp(0, squeeze_num - 1) / (squeeze_num - 1)


def floyd_steinberg(x: Tensor, squeeze_num: int) -> Tensor:
    """Float ``N x C x H x W`` in [0, 1] quantised to ``squeeze_num`` levels with Floyd-Steinberg
    error diffusion (7/16 right, 3/16 down-left, 5/16 down, 1/16 down-right), per channel.

    Pixels are visited in raster order; each step handles the pixel at one position of every
    image and channel at once (the planes are laid out ``H x W x (N C)``
    so that step is contiguous)."""
    n, c, h, w = x.shape
    work = x.permute(2, 3, 0, 1).reshape(h, w, n * c).clone()
    for row in range(h):
        for col in range(w):
            old = work[row, col]
            new = _levels(old, squeeze_num)
            error = old - new
            work[row, col] = new
            if col + 1 < w:
                work[row, col + 1] += error * (7 / 16)
            if row + 1 < h:
                if col > 0:
                    work[row + 1, col - 1] += error * (3 / 16)
                work[row + 1, col] += error * (5 / 16)
                if col + 1 < w:
                    work[row + 1, col + 1] += error * (1 / 16)
    return work.reshape(h, w, n, c).permute(2, 3, 0, 1).contiguous()


def squeeze_colour_depth(images: Tensor, *, squeeze_num: int = 8, dithering: bool = True) -> Tensor:
    """Reduce every channel to ``squeeze_num`` evenly spaced levels (the BPP trigger).

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        squeeze_num: number of levels per channel, at least 2 (BackdoorBench: 8, i.e. 3 bits).
        dithering: diffuse the quantisation error with Floyd-Steinberg (BackdoorBench: on);
            otherwise round each pixel to the nearest level.

    Returns:
        A new tensor of the same dtype and device whose channels take at most ``squeeze_num``
        distinct values (``round(k * 255 / (squeeze_num - 1))`` for uint8).
    """
    check_range("squeeze_num", squeeze_num, 2, 256, integer=True)
    x = to_float(images)
    if not dithering or x.shape[0] == 0:
        return like(_levels(x, squeeze_num), images)
    # On the CPU, small steps in chunks: larger ones trigger intra-op threading, whose per-step
    # synchronisation costs far more than the arithmetic (16 s instead of 0.5 s for 1,000 images).
    chunk = _CPU_CHUNK if x.device.type == "cpu" else max(1, x.shape[0])
    return like(torch.cat([floyd_steinberg(part, squeeze_num) for part in x.split(chunk)]), images)


def add_residuals(images: Tensor, residuals: Tensor, generator: torch.Generator) -> Tensor:
    """Cover samples: ``clip(x + r)`` with ``r`` drawn per image
    from a bank of quantisation residuals.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        residuals: ``M x C x H x W`` float residuals on the [0, 1] scale (``squeeze(x_o) - x_o``).
        generator: CPU generator choosing one residual per image.
    """
    if residuals.shape[1:] != images.shape[1:] or residuals.shape[0] == 0:
        raise ValueError(
            f"bpp: residual bank of shape {tuple(residuals.shape)} does not fit images "
            f"{tuple(images.shape)}"
        )
    pick = torch.randint(residuals.shape[0], (images.shape[0],), generator=generator)
    chosen = residuals[pick].to(device=images.device, dtype=torch.float32)
    return like(to_float(images) + chosen, images)


@register_attack("bpp")
class BPP(Attack):
    """Colour-depth squeezing with dithering;
    ``cover_ratio`` residual-noise covers per poison (default 2).

    ``n_residuals`` training images (drawn with the context generator) give the residual bank of
    the cover samples."""

    def __init__(
        self,
        squeeze_num: int = 8,
        dithering: bool = True,
        cover_ratio: float = 2.0,
        n_residuals: int = 256,
    ):
        check_range("squeeze_num", squeeze_num, 2, 256, integer=True)
        if not isinstance(dithering, bool):
            raise ValueError(f"attack.trigger.dithering: expected true or false, got {dithering!r}")
        check_range("cover_ratio", cover_ratio, 0.0, 10.0)
        check_range("n_residuals", n_residuals, 1, 100_000, integer=True)
        self.squeeze_num, self.dithering, self.cover_ratio, self.n_residuals = (
            squeeze_num,
            dithering,
            float(cover_ratio),
            n_residuals,
        )

    def prepare(self, context: AttackContext) -> State:
        images = context.train_set["images"]
        pick = torch.randperm(images.shape[0], generator=context.generator)[: self.n_residuals]
        originals = to_float(images[pick].to(context.device))
        squeezed = to_float(
            squeeze_colour_depth(
                images[pick].to(context.device),
                squeeze_num=self.squeeze_num,
                dithering=self.dithering,
            )
        )
        return {"residuals": (squeezed - originals).cpu()}

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return squeeze_colour_depth(images, squeeze_num=self.squeeze_num, dithering=self.dithering)

    def cover(self, images: Tensor, state: State, generator: torch.Generator) -> Tensor:
        return add_residuals(images, state["residuals"], generator)
