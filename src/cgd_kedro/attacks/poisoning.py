"""Turning a clean training/test set into a poisoned one with any registered attack.

Label conventions (BackdoorBench's): ``all_to_one`` relabels poisoned images to ``target``;
``all_to_all`` relabels class ``y`` to ``(y + 1) mod K``.

Poisoning ratio: the poison count is ``round(ratio * N)`` of the whole training set.
- Dirty-label attacks draw it from the images whose label the attack changes.
- Clean-label attacks (SIG, LC) draw it from target-class images only and keep every label;
  when the target class holds fewer images than asked for, all of them are poisoned and the
  shortfall is logged (the achieved ratio is reported in the attack metrics).
- Attacks with cover samples (WaNet noise mode, Adap-Blend, BPP, InputAware cross samples) also
  modify ``cover_ratio x count`` other images that keep their true labels; they are flagged
  ``cover``, not ``poison``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from cgd_kedro.attacks.base import Attack, State
from cgd_kedro.attacks.registry import build_attack
from cgd_kedro.config import ParameterError, ParameterModel
from cgd_kedro.data.imageset import ImageSet

log = logging.getLogger(__name__)


class AttackConfig(ParameterModel):
    """An attack as configured under ``<attack>.attack`` in ``parameters_poison.yml``. Its name
    and trigger arguments are checked by building the attack (no work:
    triggers are prepared later)."""

    SECTION: ClassVar[str] = "attack"

    name: str = Field(description="registered attack name (cgd_kedro.attacks.list_attacks)")
    target: int = Field(
        0, ge=0, description="target class for all_to_one (and the clean-label class)"
    )
    ratio: float = Field(
        0.1, gt=0, le=1, description="poisoning ratio, as a share of the whole training set"
    )
    mode: Literal["all_to_one", "all_to_all"] = Field(
        "all_to_one", description="all_to_one, or all_to_all (y -> y+1 mod K)"
    )
    trigger: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the attack (its trigger parameters)"
    )

    @field_validator("trigger", mode="before")
    @classmethod
    def _empty_if_null(cls, trigger: object) -> object:
        return trigger if trigger is not None else {}

    @model_validator(mode="after")
    def _buildable(self) -> AttackConfig:
        try:
            # unknown names and bad trigger arguments fail here, before any work
            attack = self.build()
        except (ValueError, TypeError) as error:
            message = str(error)
            raise ValueError(
                message
                if message.startswith("attack.")
                else f"attack.name = {self.name!r}: {message}"
            ) from None
        if self.mode == "all_to_all" and (attack.clean_label or not attack.supports_all_to_all):
            raise ValueError(f"attack.mode = 'all_to_all': {self.name!r} supports all_to_one only")
        return self

    @classmethod
    def from_params(
        cls, params: dict | None, num_classes: int | None = None, section: str | None = None
    ) -> AttackConfig:
        """The section, with ``target`` checked against ``num_classes`` when it is given."""
        config = super().from_params(params, section)
        if num_classes is not None and config.target >= num_classes:
            name = section if section is not None else cls.SECTION
            raise ParameterError(
                f"{name}.target = {config.target}: must be a class index in [0, {num_classes - 1}]"
            )
        return config

    def build(self) -> Attack:
        return build_attack(self.name, **self.trigger)


def backdoor_labels(labels: Tensor, config: AttackConfig, num_classes: int) -> Tensor:
    """The label each image would carry once poisoned."""
    if config.mode == "all_to_one":
        return torch.full_like(labels, config.target)
    return (labels + 1) % num_classes


def select_poison_indices(
    image_set: ImageSet,
    attack: Attack,
    config: AttackConfig,
    num_classes: int,
    generator: torch.Generator,
) -> Tensor:
    """Sorted indices of the images to poison (see the module docstring for the ratio semantics)."""
    labels = image_set["labels"]
    if attack.clean_label:
        eligible = labels == config.target
    else:
        eligible = backdoor_labels(labels, config, num_classes) != labels
    candidates = torch.nonzero(eligible & attack.candidates(image_set)).flatten()
    count = round(config.ratio * labels.shape[0])
    if count > candidates.numel():
        if not (attack.clean_label or config.name == "cleanimage"):
            raise ValueError(
                f"attack.ratio: {config.ratio} asks for {count} poisoned images but only "
                f"{candidates.numel()} images can be relabelled"
            )
        log.warning(
            "%s: ratio %.3f asks for %d poisoned images but only %d are eligible; poisoning all "
            "of them (ratio %.4f)",
            config.name,
            config.ratio,
            count,
            candidates.numel(),
            candidates.numel() / labels.shape[0],
        )
        count = candidates.numel()
    return candidates[torch.randperm(candidates.numel(), generator=generator)[:count]].sort().values


def poison_training_set(
    train_set: ImageSet,
    attack: Attack,
    state: State,
    config: AttackConfig,
    num_classes: int,
    generator: torch.Generator,
) -> ImageSet:
    """Apply the attack to a share ``ratio`` of ``train_set`` (plus its cover samples).

    Returns a new image set with ``labels`` (given, poisoned), ``original_labels``, and the
    ground-truth flags ``poison`` and ``cover``. Other columns are carried over unchanged.
    """
    labels = train_set["labels"]
    index = select_poison_indices(train_set, attack, config, num_classes, generator)
    images = train_set["images"].clone()
    if index.numel():
        images[index] = attack.apply(images[index], state, generator, "train")
    poisoned_labels = labels.clone()
    if not attack.clean_label:
        poisoned_labels[index] = backdoor_labels(labels[index], config, num_classes)
    poison = torch.zeros_like(labels, dtype=torch.bool)
    poison[index] = True

    cover = torch.zeros_like(poison)
    n_cover = round(attack.cover_ratio * index.numel())
    if n_cover:
        free = torch.nonzero(~poison).flatten()
        cover_index = (
            free[torch.randperm(free.numel(), generator=generator)[:n_cover]].sort().values
        )
        images[cover_index] = attack.cover(images[cover_index], state, generator)
        cover[cover_index] = True

    extra = {k: v for k, v in train_set.items() if k not in ("images", "labels")}
    return {
        **extra,
        "images": images,
        "labels": poisoned_labels,
        "original_labels": labels.clone(),
        "poison": poison,
        "cover": cover,
    }


def make_backdoor_test_set(
    test_set: ImageSet,
    attack: Attack,
    state: State,
    config: AttackConfig,
    num_classes: int,
    generator: torch.Generator,
) -> ImageSet:
    """Every test image whose label the attack changes (and that the attack can use), triggered
    with the test-phase trigger; ``labels`` = the attacker's label,
    ``original_labels`` = the truth."""
    labels = test_set["labels"]
    target = backdoor_labels(labels, config, num_classes)
    keep = (target != labels) & attack.candidates(test_set)
    return {
        "images": attack.apply(test_set["images"][keep], state, generator, "test"),
        "labels": target[keep],
        "original_labels": labels[keep],
    }
