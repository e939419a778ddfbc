"""The attack library by name: ``build_attack(name, **trigger)`` and ``list_attacks()``."""

from __future__ import annotations

import importlib

from cgd_kedro.attacks.base import ATTACK_REGISTRY, Attack

# One module per attack, named after it; importing it registers the attack. In this order (the
# paper's) the attacks are the poison pipeline's namespaces and the report's rows.
ATTACK_NAMES: tuple[str, ...] = (
    "badnets", "blended", "wanet", "sig", "lc", "lf", "ssba",
    "inputaware", "bpp", "trojannn", "adapblend", "ftrojan", "cleanimage",
)  # fmt: skip


def _import_attacks() -> None:
    for module in ATTACK_NAMES:
        importlib.import_module(f"cgd_kedro.attacks.{module}")


def list_attacks() -> list[str]:
    _import_attacks()
    return sorted(ATTACK_REGISTRY)


def attack_class(name: str) -> type[Attack]:
    _import_attacks()
    if name not in ATTACK_REGISTRY:
        raise ValueError(
            f"attack.name: unknown attack {name!r}; available: {sorted(ATTACK_REGISTRY)}"
        )
    return ATTACK_REGISTRY[name]


def build_attack(name: str, **trigger) -> Attack:
    """Instantiate attack ``name`` with its trigger parameters
    (errors name ``attack.trigger.<param>``)."""
    cls = attack_class(name)
    try:
        return cls(**trigger)
    except TypeError as error:
        raise ValueError(f"attack.trigger: invalid arguments for {name!r}: {error}") from error
