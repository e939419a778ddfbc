"""MCR, mode connectivity repair (Zhao et al., ICLR 2020; BackdoorBench's ``defense/mcr.py``,
REFERENCE.md §1.5), on a small clean set.

1. The end point ``θ_n``: a copy of the backdoored model ``θ_0`` fine-tuned on the clean set.
2. A Bézier curve of ``num_bends`` points (3: quadratic) from ``θ_0`` to ``θ_n``, ends frozen,
   inner bends initialised on the segment between them and trained on the clean set: per batch
   ``t ~ U(0, 1)``, ``θ(t) = Σ_i C(n, i) tⁱ (1-t)ⁿ⁻ⁱ θ_i``, cross-entropy, update the bends only.
3. A point ``θ(t)``: built, its BatchNorm statistics re-estimated by one pass over the clean
   training part in train mode, then evaluated.

Choosing t (a departure: BackdoorBench reports every t on the *test* set and leaves the choice to
the reader). Here t never sees test data:

- ``selection: fixed`` (the oracle's rule): ``t`` itself (0.5, the middle of the path, where the
  paper finds both ends' backdoors gone); the curve is still measured
  at every ``ts`` for the report.
- ``selection: proxy`` (CGD-fed only): the ``t`` of ``ts`` with the lowest *triggered agreement*
  (share of CGD's triggered subset, training data, still predicted as its given label: an ASR
  proxy) among those whose validation CA is at least ``acc_ratio`` of the best validation CA
  along the curve; ties go to the higher validation CA.

Validation CA is measured on ``validation_fraction`` of the clean set, held out of the curve's
and the end point's training and of the BatchNorm re-estimation.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from cgd_kedro.config import MAX_BATCH_SIZE, MAX_EPOCHS, ParameterModel
from cgd_kedro.defenses.clean_set import split_clean_set
from cgd_kedro.defenses.registry import register_defense
from cgd_kedro.metrics import accuracy, predict_logits
from cgd_kedro.training.augment import crop_and_flip
from cgd_kedro.training.classifier import (
    TrainingConfig,
    schedule_factor,
    to_unit_float,
    train_classifier,
)

log = logging.getLogger(__name__)

DEFAULT_TS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class MCRConfig(ParameterModel):
    """The ``mcr`` parameters
    (BackdoorBench's names where it has them; epochs scaled per environment)."""

    SECTION: ClassVar[str] = "mcr"

    num_bends: int = Field(
        3, ge=3, le=10, description="points of the Bézier curve, ends included (3: quadratic)"
    )
    ft_epochs: int = Field(
        100,
        ge=1,
        le=MAX_EPOCHS,
        description="fine-tuning epochs of the end point on the clean set (BackdoorBench: 100)",
    )
    ft_lr: float = Field(
        0.01, gt=0, le=10, description="SGD learning rate of the end point's fine-tuning (cosine)"
    )
    curve_epochs: int = Field(
        100,
        ge=1,
        le=MAX_EPOCHS,
        description="training epochs of the curve's bends (BackdoorBench: 100)",
    )
    curve_lr: float = Field(
        3e-5,
        gt=0,
        le=10,
        description="SGD learning rate of the bends (cosine; BackdoorBench: 3e-5)",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of both trainings")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 penalty of both trainings")
    batch_size: int = Field(128, ge=2, le=MAX_BATCH_SIZE, description="clean samples per step")
    augment: bool = Field(True, description="random crop and flip in both trainings")
    flip: bool = Field(True, description="only where the dataset allows it (not GTSRB)")
    ts: tuple[float, ...] = Field(
        DEFAULT_TS,
        strict=False,
        min_length=1,
        description="the points of the curve measured (each in (0, 1))",
    )
    selection: Literal["fixed", "proxy"] = Field(
        "fixed",
        description=(
            "fixed: use t; proxy: lowest triggered agreement among ts with validation CA >= "
            "acc_ratio x the best (CGD-fed only)"
        ),
    )
    t: float = Field(0.5, gt=0, lt=1, description="the point used by selection: fixed")
    acc_ratio: float = Field(
        0.9,
        gt=0,
        le=1,
        description="proxy: keep points whose validation CA is at least this share of the best",
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the clean set held out for validation CA"
    )

    @field_validator("ts")
    @classmethod
    def _inside(cls, ts: tuple[float, ...]) -> tuple[float, ...]:
        outside = [t for t in ts if not 0 < t < 1]
        if outside:
            raise ValueError(
                "every t must lie in (0, 1) (0 and 1 are the backdoored and the fine-tuned "
                f"model), got {outside}"
            )
        return tuple(sorted(set(ts)))

    @model_validator(mode="after")
    def _fixed_t_measured(self) -> MCRConfig:
        if self.selection == "fixed" and self.t not in self.ts:
            return self.model_copy(update={"ts": tuple(sorted({*self.ts, self.t}))})
        return self


def bezier_weights(t: float, num_bends: int) -> list[float]:
    """Bernstein coefficients of the ``num_bends`` points at ``t``
    (exactly ``[1, 0, ...]`` at 0, ``[..., 0, 1]`` at 1)."""
    n = num_bends - 1
    return [math.comb(n, i) * t**i * (1 - t) ** (n - i) for i in range(num_bends)]


def curve_point(bends: list[dict[str, Tensor]], t: float) -> dict[str, Tensor]:
    """``θ(t)``: the parameters of the curve through ``bends`` at ``t``."""
    weights = bezier_weights(t, len(bends))
    return {
        name: sum(w * bend[name] for w, bend in zip(weights, bends, strict=True))
        for name in bends[0]
    }


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, images: Tensor, *, device: torch.device, batch_size: int = 256
) -> None:
    """Reset every BatchNorm layer's running statistics and re-estimate them (cumulative average)
    with one pass over ``images`` in train mode; the model is left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    model.train()
    for chunk in images.split(batch_size):
        model(to_unit_float(chunk.to(device)).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def set_point(
    model: nn.Module,
    bends: list[dict[str, Tensor]],
    t: float,
    images: Tensor,
    *,
    device: torch.device,
) -> nn.Module:
    """Load ``θ(t)`` into ``model`` and re-estimate its BatchNorm statistics on ``images``."""
    with torch.no_grad():
        point = curve_point(bends, t)
        for name, parameter in model.named_parameters():
            parameter.copy_(point[name])
    reestimate_batchnorm(model, images, device=device)
    return model


def train_curve(
    model: nn.Module,
    bends: list[dict[str, Tensor]],
    images: Tensor,
    labels: Tensor,
    config: MCRConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> list[dict]:
    """Train the inner bends (in place) on ``(images, labels)``; the ends stay frozen."""
    inner = [
        {name: value.requires_grad_(True) for name, value in bend.items()} for bend in bends[1:-1]
    ]
    optimiser = torch.optim.SGD(
        [v for bend in inner for v in bend.values()],
        lr=config.curve_lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(labels.numel() / config.batch_size)
    factor, history, step = schedule_factor("cosine", config.curve_epochs * steps_per_epoch), [], 0
    model.to(device).train()
    for epoch in tqdm(range(config.curve_epochs), desc="mcr curve", leave=False):
        losses = []
        for index in torch.randperm(labels.numel(), generator=generator).split(config.batch_size):
            for group in optimiser.param_groups:
                group["lr"] = config.curve_lr * factor(step)
            x = to_unit_float(images[index].to(device))
            if config.augment:
                x = crop_and_flip(x, generator, padding=4, flip=config.flip)
            t = float(torch.rand(1, generator=generator))
            logits = functional_call(
                model, curve_point(bends, t), (x.contiguous(memory_format=torch.channels_last),)
            )
            loss = F.cross_entropy(logits, labels[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses)})
    for bend in inner:
        for value in bend.values():
            value.requires_grad_(False)
    return history


def _agreement(
    model: nn.Module, triggered: tuple[Tensor, Tensor] | None, device: torch.device
) -> float | None:
    if triggered is None or not triggered[1].numel():
        return None
    return accuracy(predict_logits(model, triggered[0], device=device).argmax(1), triggered[1])


@register_defense(
    "mcr",
    config=MCRConfig,
    node_name="mode_connectivity_repair",
    description="MCR, mode connectivity repair",
)
def mode_connectivity_repair(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: MCRConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
    triggered: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """MCR on the clean set ``(images, labels)``, in place on ``model`` (left at the chosen point).

    ``triggered``: CGD's triggered subset ``(images, given labels)``, training data, for
    ``selection: proxy``. Returns ``{t, curve, end_point_history, curve_history, bends,
    batchnorm_indices}``; ``curve`` holds, per measured t, the validation CA and (with
    ``triggered``) the triggered agreement; ``bends`` and ``batchnorm_indices``
    (``curve_to_tensors``) let the evaluation rebuild any point of the curve.
    """
    if config.selection == "proxy" and triggered is None:
        raise ValueError(
            "mcr.selection = 'proxy': needs CGD's triggered subset (the CGD-fed variant); use "
            "'fixed' for oracle data"
        )
    val_index, train_index = split_clean_set(
        labels.numel(), config.validation_fraction, generator, "mcr"
    )
    train_images, train_labels, val_images, val_labels = (
        images[train_index],
        labels[train_index],
        images[val_index],
        labels[val_index],
    )
    if train_labels.numel() < config.batch_size:
        raise ValueError(
            f"mcr: {train_labels.numel()} clean training samples, fewer than one batch "
            f"(mcr.batch_size = {config.batch_size})"
        )
    model.to(device)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    end_model = copy.deepcopy(model)
    fine_tune = TrainingConfig(
        epochs=config.ft_epochs,
        batch_size=config.batch_size,
        lr=config.ft_lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        augment=config.augment,
        flip=config.flip,
    )
    end_history = train_classifier(
        end_model,
        train_images,
        train_labels,
        fine_tune,
        device=device,
        generator=generator,
        description="mcr end point",
    )
    end = {name: p.detach().clone() for name, p in end_model.named_parameters()}
    bends = (
        [start]
        + [
            {
                name: (1 - i / (config.num_bends - 1)) * start[name]
                + i / (config.num_bends - 1) * end[name]
                for name in start
            }
            for i in range(1, config.num_bends - 1)
        ]
        + [end]
    )
    curve_history = train_curve(
        model, bends, train_images, train_labels, config, device=device, generator=generator
    )

    def validation_figures(m: nn.Module) -> dict:
        val_ca = accuracy(predict_logits(m, val_images, device=device).argmax(1), val_labels)
        agreement = _agreement(m, triggered, device)
        return {"val_clean_acc": val_ca} | (
            {} if agreement is None else {"triggered_agreement": agreement}
        )

    curve = measure_curve(model, bends, train_images, config.ts, validation_figures, device=device)
    chosen = config.t if config.selection == "fixed" else choose_t(curve, config.acc_ratio)
    set_point(model, bends, chosen, train_images, device=device)
    log.info(
        "mcr: t = %.2f (%s); validation CA along the curve %s",
        chosen,
        config.selection,
        [round(c["val_clean_acc"], 3) for c in curve],
    )
    return {
        "t": chosen,
        "curve": curve,
        "end_point_history": end_history,
        "curve_history": curve_history,
        "bends": bends,
        "batchnorm_indices": train_index,
    }


def measure_curve(
    model: nn.Module,
    bends: list[dict[str, Tensor]],
    batchnorm_images: Tensor,
    ts: Sequence[float],
    evaluate: Callable[[nn.Module], dict],
    *,
    device: torch.device,
) -> list[dict]:
    """``{"t": t} | evaluate(model)`` with ``model`` at each ``θ(t)`` of ``ts``, BatchNorm
    re-estimated on ``batchnorm_images`` (leaves ``model`` at the last t)."""
    points = []
    for t in ts:
        set_point(model, bends, t, batchnorm_images, device=device)
        points.append({"t": t} | evaluate(model))
    return points


def curve_to_tensors(
    bends: list[dict[str, Tensor]], batchnorm_indices: Tensor
) -> dict[str, Tensor]:
    """The curve as a flat tensor dict (the ``mcr_<source>_curve`` artefact):
    ``bend<i>.<parameter>`` for every bend, and the indices (into the clean set) of the samples
    BatchNorm is re-estimated on."""
    return {
        f"bend{i}.{name}": value.detach().cpu().contiguous()
        for i, bend in enumerate(bends)
        for name, value in bend.items()
    } | {"batchnorm_indices": batchnorm_indices.cpu()}


def curve_from_tensors(
    tensors: Mapping[str, Tensor], *, source: str = "mcr curve"
) -> tuple[list[dict[str, Tensor]], Tensor]:
    """``(bends, batchnorm_indices)`` from ``curve_to_tensors``'s dict."""
    if "batchnorm_indices" not in tensors or not any(key.startswith("bend0.") for key in tensors):
        raise ValueError(
            f"{source}: not an MCR curve (expected keys 'bend<i>.<parameter>' and "
            "'batchnorm_indices')"
        )
    bends: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key != "batchnorm_indices":
            index, _, name = key.removeprefix("bend").partition(".")
            bends.setdefault(int(index), {})[name] = value
    return [bends[i] for i in sorted(bends)], tensors["batchnorm_indices"]


def choose_t(curve: list[dict], acc_ratio: float) -> float:
    """``selection: proxy``: the lowest triggered agreement among points
    with validation CA >= acc_ratio x the best."""
    best = max(point["val_clean_acc"] for point in curve)
    candidates = [p for p in curve if p["val_clean_acc"] >= acc_ratio * best]
    return min(candidates, key=lambda p: (p["triggered_agreement"], -p["val_clean_acc"]))["t"]
