"""Low-frequency attack (Zeng et al., 2021, "Rethinking the backdoor attacks' triggers: a frequency
perspective"; BackdoorBench ``lf``): a universal adversarial perturbation restricted to low spatial
frequencies, added to every poisoned image.

``x' = clip(x + P)``. ``P`` (``C x H x W``, on the [0, 1] scale) is learnt once in ``prepare``
against a clean surrogate classifier: a targeted universal perturbation that minimises
``CE(f(clip(x + P)), target)`` over batches of training images of all classes. It is
parametrised by its lowest ``window x window`` orthonormal 2-D DCT-II coefficients per channel,
``P = B_h^T C B_w`` with ``B`` the first ``window`` rows of the DCT matrix, so every iterate lies
exactly in the low-frequency subspace; after each Adam step it is scaled down (a scaling keeps it
low-frequency, unlike clipping) so that ``max |P| <= eps``.

Default ``eps = 75`` (0-255 scale, ~0.3 of the range) is stronger than the ~0.1 one might take
from the reference. Measured on the embedded default (20k images, compact CNN, 8 epochs; clean
model 0.950): ``eps = 50`` gave CA 0.889 / ASR 0.737, ``eps = 75`` CA 0.924 / ASR 0.971. The
universal perturbation barely fools a well-trained surrogate there (the shape classes are robust
to smooth colour fields), so the victim has to learn ``P`` as a new feature, which needs amplitude.

Departure: BackdoorBench ships precomputed LF perturbations (a DeepFool-style universal
perturbation passed through a low-pass filter); here the perturbation is optimised directly in the
low-frequency subspace with Adam, which gives the same kind of trigger without the offline step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.attacks.base import (
    Attack,
    AttackContext,
    State,
    check_range,
    pixel_affine,
    register_attack,
    to_float,
)


def dct_matrix(n: int, *, device: torch.device | str = "cpu") -> Tensor:
    """The orthonormal DCT-II matrix ``D`` (``n x n``).

    ``coefficients = D @ signal`` and ``signal = D.T @ coefficients``.
    """
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = math.sqrt(2 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=torch.float32)


def dct2(x: Tensor) -> Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions (batched)."""
    dh, dw = dct_matrix(x.shape[-2], device=x.device), dct_matrix(x.shape[-1], device=x.device)
    return dh @ x @ dw.T


def low_frequency_basis(
    height: int, width: int, window: int, *, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """``(B_h, B_w)``: the first ``window`` rows of the DCT matrices, so that ``B_h^T C B_w`` is an
    image whose DCT is ``C`` in the top-left ``window x window`` block and zero elsewhere."""
    check_range("window", window, 1, min(height, width), integer=True)
    return dct_matrix(height, device=device)[:window], dct_matrix(width, device=device)[:window]


def low_pass(x: Tensor, window: int) -> Tensor:
    """Keep only the lowest ``window x window`` 2-D DCT coefficients of each ``H x W`` plane
    (batched)."""
    bh, bw = low_frequency_basis(*x.shape[-2:], window, device=x.device)
    return bh.T @ (bh @ x @ bw.T) @ bw


def add_perturbation(images: Tensor, perturbation: Tensor) -> Tensor:
    """``x' = clip(x + P)`` for every image.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        perturbation: ``P``, float ``C x H x W`` on the [0, 1] scale
            (the LF universal perturbation).

    Returns:
        A new tensor of the same dtype and device (rounded for uint8).
    """
    if perturbation.shape != images.shape[1:]:
        raise ValueError(
            f"lf: perturbation of shape {tuple(perturbation.shape)} does not fit images "
            f"{tuple(images.shape)}"
        )
    return pixel_affine(images, 1.0, perturbation.to(device=images.device, dtype=torch.float32))


def learn_low_frequency_perturbation(
    surrogate: nn.Module,
    images: Tensor,
    target: int,
    generator: torch.Generator,
    *,
    eps: float = 0.1,
    window: int = 8,
    steps: int = 80,
    batch_size: int = 64,
    lr: float = 0.05,
    device: torch.device | str = "cpu",
) -> Tensor:
    """A targeted universal perturbation in the lowest ``window x window`` DCT frequencies.

    Minimises ``CE(surrogate(clip(x + P)), target)`` over random batches of ``images`` with Adam
    on the DCT coefficients, scaling ``P`` back to ``max |P| <= eps`` after every step.

    Args:
        surrogate: a clean classifier in eval mode taking float [0, 1] images (not modified).
        images: uint8 or float ``N x C x H x W`` training images (any classes).
        target: the class the perturbation pushes towards.
        generator: CPU generator for the batch draws.
        eps: L_inf bound of ``P`` on the [0, 1] scale.
        window: number of lowest DCT frequencies kept along each axis.
        steps: optimisation steps.
        batch_size: images per step.
        lr: Adam learning rate on the DCT coefficients.
        device: where to optimise.

    Returns:
        ``P``, float32 ``C x H x W`` on the CPU.
    """
    c, h, w = images.shape[1:]
    bh, bw = low_frequency_basis(h, w, window, device=device)
    coefficients = torch.zeros(c, window, window, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([coefficients], lr=lr)
    labels = torch.full((batch_size,), target, dtype=torch.int64, device=device)
    for _ in tqdm(range(steps), desc="lf perturbation", unit="step", disable=None, leave=False):
        pick = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        x = to_float(images[pick]).to(device)
        perturbation = bh.T @ coefficients @ bw
        loss = F.cross_entropy(surrogate((x + perturbation).clamp(0, 1)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            peak = (bh.T @ coefficients @ bw).abs().max()
            if peak > eps:
                coefficients.mul_(eps / peak)
    with torch.no_grad():
        perturbation = bh.T @ coefficients @ bw
        # Guard against float rounding of the scaling; a uniform scale keeps P low-frequency.
        peak = perturbation.abs().max()
        if peak > eps:
            perturbation = perturbation * (eps / peak)
    return perturbation.detach().cpu().float()


@register_attack("lf")
class LowFrequency(Attack):
    """Dirty-label attack with a learnt low-frequency universal perturbation ``P``
    (``x' = clip(x + P)``).

    Trigger parameters: ``eps`` (L_inf bound of ``P`` on the 0-255 scale, 75), ``window`` (lowest
    DCT frequencies kept per axis, 8), and the optimisation sizes ``steps`` (80), ``batch_size``
    (64), ``lr`` (0.05) and ``n_images`` (training images sampled for it, 5000).
    """

    needs_surrogate = True
    supports_all_to_all = False  # P is optimised towards the single target class

    def __init__(
        self,
        eps: float = 75.0,
        window: int = 8,
        steps: int = 80,
        batch_size: int = 64,
        lr: float = 0.05,
        n_images: int = 5000,
    ):
        check_range("eps", eps, 0.0, 255.0)
        check_range("window", window, 1, 4096, integer=True)
        check_range("steps", steps, 1, 100_000, integer=True)
        check_range("batch_size", batch_size, 1, 65_536, integer=True)
        check_range("lr", lr, 1e-8, 10.0)
        check_range("n_images", n_images, 1, 10_000_000, integer=True)
        self.eps, self.window, self.steps = eps, window, steps
        self.batch_size, self.lr, self.n_images = batch_size, lr, n_images

    def prepare(self, context: AttackContext) -> State:
        if context.surrogate is None:
            raise ValueError(
                "lf: prepare() needs a clean surrogate classifier; context.surrogate is None"
            )
        images = context.train_set["images"]
        check_range("window", self.window, 1, min(images.shape[-2:]), integer=True)
        seed = int(torch.randint(0, 2**62, (1,), generator=context.generator))
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(images.shape[0], generator=generator)[: self.n_images]
        surrogate = context.surrogate.to(context.device).eval()
        requires_grad = [p.requires_grad for p in surrogate.parameters()]
        surrogate.requires_grad_(False)
        try:
            perturbation = learn_low_frequency_perturbation(
                surrogate,
                images[subset],
                context.target,
                generator,
                eps=self.eps / 255,
                window=self.window,
                steps=self.steps,
                batch_size=self.batch_size,
                lr=self.lr,
                device=context.device,
            )
        finally:
            for parameter, flag in zip(surrogate.parameters(), requires_grad, strict=True):
                parameter.requires_grad_(flag)
        return {"perturbation": perturbation}

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return add_perturbation(images, state["perturbation"])
