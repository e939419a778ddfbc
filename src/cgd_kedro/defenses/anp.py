"""Adversarial Neuron Pruning (ANP; Wu & Wang, NeurIPS 2021),
a defense that needs a small clean set.

Backdoor neurons are the ones whose small perturbation changes the output most. ANP gives every
BatchNorm channel a mask ``m`` in [0, 1] and multiplicative perturbations ``delta``, ``xi`` in
``[-eps, eps]`` on its scale and shift:

    out = (m + delta) * gamma * x_hat + (1 + xi) * beta

On each clean batch the perturbations take ``anp_steps`` signed-gradient steps that *raise* the
loss, then the masks take one SGD step on ``alpha * CE(masked) + (1 - alpha) * CE(masked and
perturbed)``. Channels whose mask ends below ``pruning_threshold`` are the pruning candidates;
they are pruned (BatchNorm scale and shift set to 0) lowest mask first, ``prune_step`` of all
channels at a time, for as long as the accuracy on a held-out part of the clean set stays at least
``acc_ratio`` times the unpruned model's (the masks are optimised on the rest). Without that
check a small network loses half its channels to the fixed threshold and falls to chance
accuracy (measured on the embedded world: CA 0.10). Defaults are BackdoorBench's, with fewer
iterations for the small embedded model.

Implemented with forward hooks on the BatchNorm layers (no model surgery), so it works for every
registered architecture. The defense sees the clean set only.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.config import MAX_BATCH_SIZE, MAX_STEPS, ParameterModel
from cgd_kedro.defenses.clean_set import split_clean_set
from cgd_kedro.defenses.registry import register_defense
from cgd_kedro.metrics import accuracy, predict_logits
from cgd_kedro.training.classifier import to_unit_float

log = logging.getLogger(__name__)


class ANPConfig(ParameterModel):
    """The ``anp`` parameters (BackdoorBench names)."""

    SECTION: ClassVar[str] = "anp"

    anp_eps: float = Field(0.4, ge=0, lt=1, description="bound of the neuron perturbations")
    anp_steps: int = Field(
        1, ge=1, le=1000, description="signed-gradient steps on the perturbations per batch"
    )
    anp_alpha: float = Field(
        0.2, ge=0, le=1, description="weight of the unperturbed loss in the mask objective"
    )
    nb_iter: int = Field(
        300, ge=1, le=MAX_STEPS, description="mask-optimisation batches (BackdoorBench: 2000)"
    )
    lr: float = Field(0.2, gt=0, le=10, description="SGD learning rate of the masks (momentum 0.9)")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH_SIZE, description="clean samples per batch")
    pruning_threshold: float = Field(
        0.2, ge=0, le=1, description="channels with a mask below it are pruning candidates"
    )
    acc_ratio: float = Field(
        0.9,
        gt=0,
        le=1,
        description=(
            "keep pruning while held-out clean accuracy is at least this share of "
            "the unpruned model's"
        ),
    )
    prune_step: float = Field(
        0.01,
        gt=0,
        le=1,
        description="channels pruned between two accuracy checks, as a share of all channels",
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the clean set held out for those checks"
    )


class _NeuronNoise:
    """Masks and perturbations of one BatchNorm layer, applied by a forward hook."""

    def __init__(self, bn: nn.BatchNorm2d, device: torch.device):
        channels = bn.num_features
        self.bn = bn
        self.mask = torch.ones(channels, device=device, requires_grad=True)
        self.delta = torch.zeros(channels, device=device, requires_grad=True)
        self.xi = torch.zeros(channels, device=device, requires_grad=True)
        self.perturb = False
        self.handle = bn.register_forward_hook(self._hook)

    def _hook(self, module: nn.BatchNorm2d, inputs, output: Tensor) -> Tensor:
        shape = (1, -1, 1, 1)
        beta = module.bias.view(shape)
        scale = self.mask + self.delta if self.perturb else self.mask
        shift = 1 + self.xi if self.perturb else torch.ones_like(self.xi)
        return scale.view(shape) * (output - beta) + shift.view(shape) * beta


def optimise_masks(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: ANPConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """ANP's mask optimisation on ``(images, labels)``; ``{BatchNorm layer name: mask in [0, 1]}``.
    The model's own parameters are left unchanged."""
    model.to(device).eval()  # BatchNorm uses its running statistics; only masks and noise change
    layers = {
        name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.affine
    }
    if not layers:
        raise ValueError("anp: the model has no affine BatchNorm2d layer to prune")
    noises = {name: _NeuronNoise(bn, device) for name, bn in layers.items()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    masks = [n.mask for n in noises.values()]
    perturbations = [p for n in noises.values() for p in (n.delta, n.xi)]
    optimizer = torch.optim.SGD(masks, lr=config.lr, momentum=0.9)
    try:
        for _ in tqdm(
            range(config.nb_iter), desc="anp masks", unit="batch", disable=None, leave=False
        ):
            batch = torch.randint(images.shape[0], (config.batch_size,), generator=generator)
            x = to_unit_float(images[batch].to(device)).contiguous(
                memory_format=torch.channels_last
            )
            y = labels[batch].to(device)
            if config.anp_eps > 0:
                with (
                    torch.no_grad()
                ):  # a random start inside the eps box, drawn from the seeded generator
                    for p in perturbations:
                        p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * config.anp_eps)
                for n in noises.values():
                    n.perturb = True
                for _step in range(config.anp_steps):
                    loss = F.cross_entropy(model(x), y)
                    grads = torch.autograd.grad(loss, perturbations)
                    with torch.no_grad():
                        for p, g in zip(perturbations, grads, strict=True):
                            p.add_(config.anp_eps / config.anp_steps * g.sign()).clamp_(
                                -config.anp_eps, config.anp_eps
                            )
            for n in noises.values():
                n.perturb = False
            natural = F.cross_entropy(model(x), y)
            for n in noises.values():
                n.perturb = config.anp_eps > 0
            robust = F.cross_entropy(model(x), y) if config.anp_eps > 0 else natural
            loss = config.anp_alpha * natural + (1 - config.anp_alpha) * robust
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for m in masks:
                    m.clamp_(0, 1)
    finally:
        for n in noises.values():
            n.handle.remove()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    return {name: n.mask.detach().cpu() for name, n in noises.items()}


@register_defense(
    "anp",
    config=ANPConfig,
    node_name="adversarial_neuron_pruning",
    description="ANP",
)
def adversarial_neuron_pruning(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: ANPConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> dict:
    """Optimise neuron masks on the clean set, then prune ``model`` in place as far as the held-out
    clean accuracy allows.

    Returns ``{pruned, candidates, channels, masks_below: {layer: pruned count}, val_acc_before,
    val_acc_pruned}``.
    """
    val, train = split_clean_set(images.shape[0], config.validation_fraction, generator, "anp")
    masks = optimise_masks(
        model, images[train], labels[train], config, device=device, generator=generator
    )
    layers = dict(model.named_modules())
    # Every channel as (layer, index), ordered by mask value: the least needed on clean data first.
    names = [name for name, mask in masks.items() for _ in range(mask.numel())]
    indices = torch.cat([torch.arange(mask.numel()) for mask in masks.values()])
    values = torch.cat(list(masks.values()))
    ranking = torch.argsort(values, stable=True)
    candidates = int((values < config.pruning_threshold).sum())
    originals = {
        name: (layers[name].weight.detach().clone(), layers[name].bias.detach().clone())
        for name in masks
    }

    def prune(k: int) -> None:
        with torch.no_grad():
            for name, (weight, bias) in originals.items():
                layers[name].weight.copy_(weight)
                layers[name].bias.copy_(bias)
            for position in ranking[:k].tolist():
                layers[names[position]].weight[indices[position]] = 0
                layers[names[position]].bias[indices[position]] = 0

    def val_acc() -> float:
        return accuracy(predict_logits(model, images[val], device=device).argmax(1), labels[val])

    before = val_acc()
    step = max(1, round(config.prune_step * values.numel()))
    pruned = 0
    for k in [*range(step, candidates, step), candidates] if candidates else []:
        prune(k)
        if val_acc() < config.acc_ratio * before:
            break
        pruned = k
    prune(pruned)
    after = val_acc()
    below = {name: 0 for name in masks}
    for position in ranking[:pruned].tolist():
        below[names[position]] += 1
    log.info(
        "anp: pruned %d of %d BatchNorm channels (%d below the threshold), held-out "
        "clean acc %.4f -> %.4f",
        pruned,
        values.numel(),
        candidates,
        before,
        after,
    )
    return {
        "pruned": pruned,
        "candidates": candidates,
        "channels": values.numel(),
        "masks_below": below,
        "val_acc_before": before,
        "val_acc_pruned": after,
    }
