"""FTrojan (Wang et al., ECCV 2022, "An invisible black-box backdoor attack through frequency
domain"): a fixed magnitude added at a few mid/high frequencies of the
block DCT of the chroma channels.

Per image: RGB -> YCrCb (OpenCV's ``COLOR_RGB2YCrCb`` on the 0-255 scale), orthonormal 2-D DCT-II of
every ``window_size x window_size`` block of the channels in ``channel_list`` (1 = Cr, 2 = Cb),
``+ magnitude`` at each position of ``positions`` in every block, inverse DCT, YCrCb -> RGB, clip.
Defaults are FTrojan's CIFAR-10 configuration (also BackdoorBench's): YUV on, channels [1, 2],
window 32 (the whole image at 32x32), positions (15, 15) and (31, 31), except the magnitude.

Departure: default ``magnitude = 60`` instead of FTrojan's 30. On the embedded world (20,000
images, 8 epochs, compact CNN, crop + flip augmentation, sensor noise of a few grey levels) 30
(about +-2 grey levels per pixel) is not learnt at all (ASR 0.03); 60 gives ASR 0.991 with clean
accuracy 0.938 (clean model 0.950) (about +-4 grey levels, still hard to see). Set ``magnitude: 30``
for the reference value.

The DCT is a multiplication by the orthonormal DCT-II matrix on both sides of every block (what
``cv2.dct`` computes), and the colour conversion is one 3x3 matrix (and its exact inverse), so the
whole batch is transformed at once on any device. Everything stays in float until the final
clip (and rounding for uint8); the reference rounds to uint8 in between.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cgd_kedro.attacks.base import Attack, State, check_range, pixel_affine, register_attack

# OpenCV's RGB -> YCrCb: Y = .299 R + .587 G + .114 B,
# Cr = .713 (R - Y) + 128, Cb = .564 (B - Y) + 128.
_Y = (0.299, 0.587, 0.114)
_RGB_TO_YCRCB = (
    _Y,
    tuple(0.713 * (r - y) for r, y in zip((1.0, 0.0, 0.0), _Y, strict=True)),
    tuple(0.564 * (b - y) for b, y in zip((0.0, 0.0, 1.0), _Y, strict=True)),
)
_CHROMA_OFFSET = 128.0 / 255.0  # the offset of Cr and Cb on the [0, 1] scale


def _colour_matrices(device: torch.device) -> tuple[Tensor, Tensor]:
    forward = torch.tensor(_RGB_TO_YCRCB, dtype=torch.float64)
    return forward.to(device, torch.float32), torch.linalg.inv(forward).to(device, torch.float32)


def rgb_to_ycrcb(images: Tensor) -> Tensor:
    """Float ``N x 3 x H x W`` RGB in [0, 1] to YCrCb
    (Y, Cr, Cb) on the same scale, chroma offset 128/255."""
    forward, _ = _colour_matrices(images.device)
    out = torch.einsum("oc,nchw->nohw", forward, images)
    return out + torch.tensor([0.0, _CHROMA_OFFSET, _CHROMA_OFFSET], device=images.device).view(
        1, 3, 1, 1
    )


def ycrcb_to_rgb(images: Tensor) -> Tensor:
    """The exact inverse of :func:`rgb_to_ycrcb` (no clipping)."""
    _, inverse = _colour_matrices(images.device)
    centred = images - torch.tensor(
        [0.0, _CHROMA_OFFSET, _CHROMA_OFFSET], device=images.device
    ).view(1, 3, 1, 1)
    return torch.einsum("oc,nchw->nohw", inverse, centred)


def dct_matrix(n: int, *, device: torch.device | str = "cpu") -> Tensor:
    """The orthonormal DCT-II matrix ``D`` (``n x n``):
    ``coefficients = D @ x``, ``x = D.T @ coefficients``."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = math.sqrt(2 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=torch.float32)


def block_dct(x: Tensor, window: int) -> Tensor:
    """Orthonormal 2-D DCT-II of every ``window x window`` block of the last two dimensions
    (batched).

    The result has the input's layout: block ``(a, b)`` holds its coefficients in rows
    ``a*window .. (a+1)*window - 1`` and columns ``b*window .. (b+1)*window - 1`` (as FTrojan's
    blockwise ``cv2.dct``)."""
    h, w = x.shape[-2:]
    d = dct_matrix(window, device=x.device)
    blocks = x.reshape(*x.shape[:-2], h // window, window, w // window, window).transpose(-3, -2)
    return (d @ blocks @ d.T).transpose(-3, -2).reshape(x.shape)


def block_idct(x: Tensor, window: int) -> Tensor:
    """The inverse of :func:`block_dct`."""
    h, w = x.shape[-2:]
    d = dct_matrix(window, device=x.device)
    blocks = x.reshape(*x.shape[:-2], h // window, window, w // window, window).transpose(-3, -2)
    return (d.T @ blocks @ d).transpose(-3, -2).reshape(x.shape)


def frequency_trigger(
    images: Tensor,
    *,
    magnitude: float = 60.0,
    positions: tuple[tuple[int, int], ...] = ((15, 15), (31, 31)),
    channels: tuple[int, ...] = (1, 2),
    window_size: int = 32,
    yuv: bool = True,
) -> Tensor:
    """Add ``magnitude`` at DCT ``positions`` of the chosen (chroma) channels of every block.

    Because DCT and colour conversion are linear, this equals adding one fixed pattern: the
    inverse DCT of the spikes, mapped back to RGB; it is computed through the transforms anyway
    so the function reads as the reference.

    Args:
        images: ``N x 3 x H x W``, uint8 in [0, 255] or float in [0, 1]; ``H`` and ``W`` must be
            multiples of ``window_size``.
        magnitude: added to each chosen DCT coefficient, on the 0-255 scale
            (FTrojan: 30; default here 60).
        positions: ``(row, column)`` frequency indices inside a block, each in ``[0, window_size)``
            (FTrojan on CIFAR-10: (15, 15) and (31, 31), a mid and the highest frequency).
        channels: channels that get the spikes; with ``yuv`` 0 = Y, 1 = Cr, 2 = Cb (FTrojan: 1, 2).
        window_size: side of the DCT blocks (FTrojan on 32x32 images: 32, the whole image).
        yuv: work in YCrCb (FTrojan's default) rather than directly on RGB.

    Returns:
        A new tensor of the same dtype and device (clipped, rounded for uint8).
    """
    check_range("magnitude", magnitude, -255.0 * window_size, 255.0 * window_size)
    check_range("window_size", window_size, 1, min(images.shape[-2:]), integer=True)
    if images.shape[-2] % window_size or images.shape[-1] % window_size:
        raise ValueError(
            f"attack.trigger.window_size: {window_size} does not divide the image size "
            f"{tuple(images.shape[-2:])}"
        )
    for row, column in positions:
        check_range("positions", row, 0, window_size - 1, integer=True)
        check_range("positions", column, 0, window_size - 1, integer=True)
    for channel in channels:
        check_range("channels", channel, 0, images.shape[1] - 1, integer=True)
    spikes = torch.zeros(1, *images.shape[1:], device=images.device)
    for channel in channels:
        for row, column in positions:
            spikes[0, channel, row::window_size, column::window_size] += magnitude / 255
    # Colour conversion and DCT are affine with exact inverses, so adding the spikes in the DCT of
    # YCrCb is adding one fixed RGB pattern: computed once from a mid-grey image, then applied to
    # every image like any dense static trigger (the result differs only by float rounding).
    grey = torch.full_like(spikes, 0.5)
    x = rgb_to_ycrcb(grey) if yuv else grey
    x = block_idct(block_dct(x, window_size) + spikes, window_size)
    delta = ((ycrcb_to_rgb(x) if yuv else x) - grey)[0]
    return pixel_affine(images, 1.0, delta)


def _pairs(value: object) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple((row, column) for row, column in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            f"attack.trigger.positions: expected a list of [row, column] pairs, got {value!r}"
        ) from None
    if not pairs:
        raise ValueError("attack.trigger.positions: expected at least one [row, column] pair")
    return pairs


@register_attack("ftrojan")
class FTrojan(Attack):
    """Frequency-domain trigger; parameters as :func:`frequency_trigger`
    (positions as ``[[r, c], ...]``)."""

    def __init__(
        self,
        magnitude: float = 60.0,
        positions: list | tuple = ((15, 15), (31, 31)),
        channels: list | tuple = (1, 2),
        window_size: int = 32,
        yuv: bool = True,
    ):
        check_range("magnitude", magnitude, -8160.0, 8160.0)
        check_range("window_size", window_size, 1, 1024, integer=True)
        self.positions = _pairs(positions)
        for row, column in self.positions:
            check_range("positions", row, 0, window_size - 1, integer=True)
            check_range("positions", column, 0, window_size - 1, integer=True)
        if (
            isinstance(channels, (str, bytes))
            or not hasattr(channels, "__iter__")
            or not list(channels)
        ):
            raise ValueError(
                "attack.trigger.channels: expected a non-empty list of channel "
                f"indices, got {channels!r}"
            )
        for channel in channels:
            check_range("channels", channel, 0, 2, integer=True)
        if not isinstance(yuv, bool):
            raise ValueError(f"attack.trigger.yuv: expected true or false, got {yuv!r}")
        self.magnitude, self.channels, self.window_size, self.yuv = (
            float(magnitude),
            tuple(channels),
            window_size,
            yuv,
        )

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return frequency_trigger(
            images,
            magnitude=self.magnitude,
            positions=self.positions,
            channels=self.channels,
            window_size=self.window_size,
            yuv=self.yuv,
        )
