"""Clean-image (label-only) backdoor (Rong et al., 2024, "Clean-image backdoor: attacking
multi-label models with poisoned labels only"): no pixel is changed; the labels of images that
naturally show some feature are flipped to the target, so that the
natural feature becomes the trigger.

The feature is a small predicate ``feature``, conditions joined by ``&``:

- ``name=value`` on the embedded world's generator attributes (image-set columns ``attr_*``):
  ``background=`` one of ``world.BACKGROUNDS``, ``colour=`` (or ``color=``) one of
  ``world.COLOUR_NAMES``, ``size=`` one of ``world.SIZES``. Real data sets have no ``attr_*``
  columns; such a feature then fails with a ``ValueError`` naming the missing column.
- ``<statistic><op><number>`` on per-image channel means on the [0, 1] scale, for any data:
  statistics ``mean_red``, ``mean_green``, ``mean_blue``, ``brightness`` (mean of all channels);
  operators ``>``, ``>=``, ``<``, ``<=``. E.g. ``"mean_red>0.6"``.

Ratio semantics (see ``poisoning.select_poison_indices``): ``round(ratio * N)`` images are drawn
from the non-target images that show the feature; when fewer show it, all of them are relabelled
(the achieved ratio is logged). The backdoor test set is every non-target test image that shows
the feature, unchanged. Default ``background=striped&size=small``: about 10% of the embedded world
(9% non-target), so the default ratio 0.1 relabels every non-target image with the feature; a
feature some of whose images kept their true labels would be a much weaker, contradictory trigger.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

import torch
from torch import Tensor

from cgd_kedro.attacks.base import Attack, State, register_attack, to_float
from cgd_kedro.data import world
from cgd_kedro.data.imageset import ImageSet

# attribute name -> (image-set column, value names)
ATTRIBUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "background": ("attr_background", world.BACKGROUNDS),
    "colour": ("attr_colour", world.COLOUR_NAMES),
    "color": ("attr_colour", world.COLOUR_NAMES),
    "size": ("attr_size", world.SIZES),
}
STATISTICS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean_red": lambda x: x[:, 0].mean(dim=(-2, -1)),
    "mean_green": lambda x: x[:, 1].mean(dim=(-2, -1)),
    "mean_blue": lambda x: x[:, 2].mean(dim=(-2, -1)),
    "brightness": lambda x: x.mean(dim=(-3, -2, -1)),
}
_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_STAT_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+]?[0-9]*\.?[0-9]+)\s*$")
_ATTR_PATTERN = re.compile(r"^\s*([a-z_]+)\s*=\s*([a-z_]+)\s*$")

# ("attr", column, index) or ("stat", statistic, (op, threshold))
Condition = tuple[str, str, object]


def parse_feature(feature: str) -> list[Condition]:
    """Parse ``feature`` (see the module docstring) into conditions;
    ``ValueError`` names the problem."""
    if not isinstance(feature, str) or not feature.strip():
        raise ValueError(
            "attack.trigger.feature: expected a non-empty string such as "
            f"'background=striped', got {feature!r}"
        )
    conditions: list[Condition] = []
    for part in feature.lower().split("&"):
        if match := _ATTR_PATTERN.match(part):
            name, value = match.groups()
            if name not in ATTRIBUTES:
                raise ValueError(
                    f"attack.trigger.feature: unknown attribute {name!r} in {feature!r}; expected "
                    f"one of {sorted(ATTRIBUTES)}"
                )
            column, values = ATTRIBUTES[name]
            if value not in values:
                raise ValueError(
                    f"attack.trigger.feature: unknown {name} {value!r} in {feature!r}; expected "
                    f"one of {list(values)}"
                )
            conditions.append(("attr", column, values.index(value)))
        elif match := _STAT_PATTERN.match(part):
            name, op, threshold = match.groups()
            if name not in STATISTICS:
                raise ValueError(
                    f"attack.trigger.feature: unknown statistic {name!r} in {feature!r}; expected "
                    f"one of {sorted(STATISTICS)}"
                )
            conditions.append(("stat", name, (op, float(threshold))))
        else:
            raise ValueError(
                f"attack.trigger.feature: cannot parse {part.strip()!r} in {feature!r}; expected "
                f"'attribute=value' (attributes {sorted(ATTRIBUTES)}) or 'statistic>number' "
                f"(statistics {sorted(STATISTICS)}), joined by '&'"
            )
    return conditions


def feature_mask(image_set: ImageSet, conditions: list[Condition], feature: str = "") -> Tensor:
    """Bool mask of the images of ``image_set`` that satisfy every condition."""
    mask = torch.ones_like(image_set["labels"], dtype=torch.bool)
    stats_input = None
    for kind, name, value in conditions:
        if kind == "attr":
            if name not in image_set:
                raise ValueError(
                    f"attack.trigger.feature: {feature!r} needs the image set's {name!r} column, "
                    "which it lacks (only the embedded world has attr_* columns; on real data use "
                    "a pixel statistic such as 'mean_red>0.6')"
                )
            mask &= image_set[name].to(mask.device) == value
        else:
            if stats_input is None:
                stats_input = to_float(image_set["images"])
            op, threshold = value  # type: ignore[misc]
            mask &= _OPERATORS[op](STATISTICS[name](stats_input), threshold).to(mask.device)
    return mask


@register_attack("cleanimage")
class CleanImage(Attack):
    """Label-only attack: images showing ``feature`` are relabelled to the target;
    pixels untouched."""

    supports_all_to_all = False

    def __init__(self, feature: str = "background=striped&size=small"):
        self.conditions = parse_feature(feature)
        self.feature = feature

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        return images.clone()

    def candidates(self, image_set: ImageSet) -> Tensor:
        return feature_mask(image_set, self.conditions, self.feature)
