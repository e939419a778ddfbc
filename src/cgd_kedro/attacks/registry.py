"""Named attacks. Each entry maps the attack name used in parameters and namespaces to its
trigger function ``trigger(images, **trigger_params) -> images`` (batched, any device)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from cgd_kedro.attacks.badnets import badnets

Trigger = Callable[..., Tensor]

ATTACKS: dict[str, Trigger] = {
    "badnets": badnets,
}


def list_attacks() -> list[str]:
    return sorted(ATTACKS)


def get_trigger(name: str) -> Trigger:
    if name not in ATTACKS:
        raise ValueError(f"attack.name: unknown attack {name!r}; available: {list_attacks()}")
    return ATTACKS[name]
