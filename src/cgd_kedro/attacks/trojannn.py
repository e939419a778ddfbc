"""TrojanNN (Liu et al., NDSS 2018; BackdoorBench/TrojanZoo ``trojannn``): a masked patch whose
pixels are optimised to drive well-connected neurons of a clean surrogate to a high value.

As in TrojanZoo's implementation (which BackdoorBench uses):

- the layer is the surrogate's penultimate features, i.e. the input of its last ``nn.Linear``
  (TrojanZoo: ``preprocess_layer="flatten"``, ``preprocess_next_layer="classifier.fc"``);
- the ``neuron_num`` selected neurons are those with the largest summed absolute outgoing weights
  ``sum_k |W[k, j]|`` in that last linear layer ("well-connected" neurons);
- the pattern is ``(tanh(a) + 1) / 2`` inside the mask, stamped on a black image, and ``a`` is
  optimised with Adam (cosine schedule) to minimise ``sum_j (|f_j(x)| - target_value)^2``;
- the poisoned image is ``x' = x * (1 - m) + pattern * m``.

The mask is a ``patch_size x patch_size`` square in the bottom-right corner.
"""

from __future__ import annotations

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
)
from cgd_kedro.models.classifier import last_linear, penultimate_features


def stamp_masked(images: Tensor, pattern: Tensor, mask: Tensor) -> Tensor:
    """``x' = x * (1 - m) + K * m`` for every image.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        pattern: the trigger ``K``, float ``C x H x W`` in [0, 1] (only its masked pixels matter).
        mask: ``m``, float ``1 x H x W`` (or ``H x W``) in {0, 1}.

    Returns:
        A new tensor of the same dtype and device; pixels where ``m = 0`` are unchanged.
    """
    k = pattern.to(device=images.device, dtype=torch.float32)
    m = mask.to(device=images.device, dtype=torch.float32).reshape(1, *images.shape[-2:])
    return pixel_affine(images, (1 - m).expand(images.shape[1:]), (k * m).expand(images.shape[1:]))


def corner_mask(height: int, width: int, patch_size: int) -> Tensor:
    """A float ``1 x H x W`` mask
    that is 1 on the bottom-right ``patch_size x patch_size`` square."""
    check_range("patch_size", patch_size, 1, min(height, width), integer=True)
    mask = torch.zeros(1, height, width)
    mask[:, -patch_size:, -patch_size:] = 1
    return mask


def select_neurons(model: nn.Module, neuron_num: int) -> Tensor:
    """Indices of the ``neuron_num`` penultimate neurons with the largest ``sum_k |W[k, j]|``
    (descending)."""
    weight = last_linear(model, "trojannn").weight.detach().abs()
    check_range("neuron_num", neuron_num, 1, weight.shape[1], integer=True)
    return weight.sum(0).argsort(descending=True)[:neuron_num].cpu()


def optimise_pattern(
    model: nn.Module,
    mask: Tensor,
    neurons: Tensor,
    generator: torch.Generator,
    *,
    target_value: float = 100.0,
    steps: int = 1000,
    lr: float = 0.1,
    channels: int = 3,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The masked pattern that drives ``neurons`` of ``model``'s penultimate layer
    to ``target_value``.

    Args:
        model: the surrogate in eval mode, taking float [0, 1] images (not modified).
        mask: float ``1 x H x W`` in {0, 1}.
        neurons: int64 indices into the penultimate features.
        generator: CPU generator for the random ``tanh``-space initialisation.
        target_value: activation aimed at (TrojanZoo: 100).
        steps: Adam steps (TrojanZoo ``neuron_epoch``: 1000).
        lr: Adam learning rate (TrojanZoo ``neuron_lr``: 0.1), cosine-annealed to 0.
        channels: image channels.
        device: where to optimise.

    Returns:
        The pattern, float32 ``C x H x W`` in [0, 1] on the CPU, 0 outside the mask.
    """
    _, h, w = mask.shape
    mask = mask.to(device)
    neurons = neurons.to(device)
    raw = torch.randn(channels, h, w, generator=generator).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    background = torch.zeros(1, channels, h, w, device=device)
    for _ in tqdm(range(steps), desc="trojannn pattern", unit="step", disable=None, leave=False):
        pattern = (torch.tanh(raw) + 1) / 2
        x = background * (1 - mask) + pattern * mask
        activation = penultimate_features(model, x, "trojannn")[:, neurons].abs()
        loss = F.mse_loss(activation, torch.full_like(activation, target_value), reduction="sum")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        pattern = (torch.tanh(raw) + 1) / 2 * mask
    return pattern.detach().cpu().float()


@register_attack("trojannn")
class TrojanNN(Attack):
    """Dirty-label patch attack whose patch is optimised to excite well-connected surrogate neurons.

    Trigger parameters: ``patch_size`` (side of the bottom-right mask, 3), ``neuron_num`` (2),
    ``target_value`` (100), ``neuron_lr`` (0.1), ``neuron_epoch`` (1000 optimisation steps).
    """

    needs_surrogate = True

    def __init__(
        self,
        patch_size: int = 3,
        neuron_num: int = 2,
        target_value: float = 100.0,
        neuron_lr: float = 0.1,
        neuron_epoch: int = 1000,
    ):
        check_range("patch_size", patch_size, 1, 4096, integer=True)
        check_range("neuron_num", neuron_num, 1, 65_536, integer=True)
        check_range("target_value", target_value, 0.0, 1e6)
        check_range("neuron_lr", neuron_lr, 1e-8, 10.0)
        check_range("neuron_epoch", neuron_epoch, 1, 100_000, integer=True)
        self.patch_size, self.neuron_num, self.target_value = patch_size, neuron_num, target_value
        self.neuron_lr, self.neuron_epoch = neuron_lr, neuron_epoch

    def prepare(self, context: AttackContext) -> State:
        if context.surrogate is None:
            raise ValueError(
                "trojannn: prepare() needs a clean surrogate classifier; context.surrogate is None"
            )
        c, h, w = context.train_set["images"].shape[-3:]
        mask = corner_mask(h, w, self.patch_size)
        surrogate = context.surrogate.to(context.device).eval()
        neurons = select_neurons(surrogate, self.neuron_num)
        seed = int(torch.randint(0, 2**62, (1,), generator=context.generator))
        requires_grad = [p.requires_grad for p in surrogate.parameters()]
        surrogate.requires_grad_(False)
        try:
            pattern = optimise_pattern(
                surrogate,
                mask,
                neurons,
                torch.Generator().manual_seed(seed),
                target_value=self.target_value,
                steps=self.neuron_epoch,
                lr=self.neuron_lr,
                channels=c,
                device=context.device,
            )
        finally:
            for parameter, flag in zip(surrogate.parameters(), requires_grad, strict=True):
                parameter.requires_grad_(flag)
        return {"pattern": pattern, "mask": mask, "neurons": neurons}

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return stamp_masked(images, state["pattern"], state["mask"])
