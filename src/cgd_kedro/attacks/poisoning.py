"""Turning a clean training/test set into a poisoned one with any trigger function.

Conventions (BackdoorBench's): ``all_to_one`` relabels poisoned images to ``target``;
``all_to_all`` relabels class ``y`` to ``(y + 1) mod K``. The poison count is
``round(ratio * N)``, drawn from the images whose label changes under the attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from cgd_kedro.attacks.registry import get_trigger, list_attacks
from cgd_kedro.data.imageset import ImageSet

LABEL_MODES = ("all_to_one", "all_to_all")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AttackConfig:
    """An attack as configured under ``<attack>.attack`` in ``parameters_poison.yml``.

    Attributes:
        name: registered attack name (see ``cgd_kedro.attacks.list_attacks``).
        target: target class for ``all_to_one``.
        ratio: poisoning ratio in (0, 1], as a share of the whole training set.
        mode: ``all_to_one`` or ``all_to_all``.
        trigger: keyword arguments of the trigger function.
    """

    name: str
    target: int = 0
    ratio: float = 0.1
    mode: str = "all_to_one"
    trigger: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict, num_classes: int, image_size: int = 32) -> AttackConfig:
        known = {"name", "target", "ratio", "mode", "trigger"}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"attack: unknown parameter(s) {sorted(unknown)}; expected some of {sorted(known)}")
        if "name" not in params:
            raise ValueError(f"attack.name: missing; available attacks: {list_attacks()}")
        config = cls(**{**params, "trigger": dict(params.get("trigger") or {})})
        get_trigger(config.name)  # unknown names fail here, before any work
        if not _is_number(config.ratio) or not 0 < config.ratio <= 1:
            raise ValueError(f"attack.ratio: expected a poisoning ratio in (0, 1], got {config.ratio!r}")
        if not _is_int(config.target) or not 0 <= config.target < num_classes:
            raise ValueError(f"attack.target: expected a class index in [0, {num_classes - 1}], got {config.target!r}")
        if config.mode not in LABEL_MODES:
            raise ValueError(f"attack.mode: expected one of {LABEL_MODES}, got {config.mode!r}")
        config.check_trigger(image_size)
        return config

    def check_trigger(self, image_size: int) -> None:
        """Dry-run the trigger on one blank image so bad trigger arguments fail before any work."""
        blank = torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8)
        try:
            self.apply_trigger(blank)
        except (TypeError, ValueError) as error:
            message = str(error)
            raise ValueError(message if message.startswith("attack.trigger") else f"attack.trigger: {message}") from error

    def apply_trigger(self, images: Tensor) -> Tensor:
        return get_trigger(self.name)(images, **self.trigger)


def backdoor_labels(labels: Tensor, config: AttackConfig, num_classes: int) -> Tensor:
    """The label each image would carry once poisoned."""
    if config.mode == "all_to_one":
        return torch.full_like(labels, config.target)
    return (labels + 1) % num_classes


def select_poison_indices(labels: Tensor, config: AttackConfig, num_classes: int, generator: torch.Generator) -> Tensor:
    """``round(ratio * N)`` indices, drawn without replacement among images whose label the attack changes."""
    candidates = torch.nonzero(backdoor_labels(labels, config, num_classes) != labels).flatten()
    count = round(config.ratio * labels.shape[0])
    if count > candidates.numel():
        raise ValueError(
            f"attack.ratio: {config.ratio} asks for {count} poisoned images but only "
            f"{candidates.numel()} images can be relabelled"
        )
    return candidates[torch.randperm(candidates.numel(), generator=generator)[:count]].sort().values


def poison_training_set(train_set: ImageSet, config: AttackConfig, num_classes: int, generator: torch.Generator) -> ImageSet:
    """Apply the trigger and relabel a random ``ratio`` of ``train_set``.

    Returns a new image set with ``labels`` (given, poisoned), ``original_labels``, and the
    ground-truth flags ``poison`` and ``cover`` (no cover samples for BadNets-style attacks).
    """
    labels = train_set["labels"]
    index = select_poison_indices(labels, config, num_classes, generator)
    images = train_set["images"].clone()
    images[index] = config.apply_trigger(images[index])
    poisoned_labels = labels.clone()
    poisoned_labels[index] = backdoor_labels(labels[index], config, num_classes)
    poison = torch.zeros_like(labels, dtype=torch.bool)
    poison[index] = True
    extra = {k: v for k, v in train_set.items() if k not in ("images", "labels")}
    return {
        **extra,
        "images": images,
        "labels": poisoned_labels,
        "original_labels": labels.clone(),
        "poison": poison,
        "cover": torch.zeros_like(poison),
    }


def make_backdoor_test_set(test_set: ImageSet, config: AttackConfig, num_classes: int) -> ImageSet:
    """Every test image whose label the attack changes, with the trigger; ``labels`` = attacker's label."""
    labels = test_set["labels"]
    target = backdoor_labels(labels, config, num_classes)
    keep = target != labels
    return {
        "images": config.apply_trigger(test_set["images"][keep]),
        "labels": target[keep],
        "original_labels": labels[keep],
    }
