"""The clean-data defenses by name, as ``cgd_kedro.attacks.registry`` is for attacks.

A clean-data defense repairs the victim with a small clean set: CGD's clean subset (rows
``<name>_cgd``) or a genuinely clean oracle slice (``<name>_oracle``), the comparison behind CGD's
claim that its subset can stand in for clean data. One module registers one defense::

    @register_defense(
        "fp", config=FinePruningConfig, node_name="fine_prune", description="Fine-Pruning"
    )
    def fine_prune(model, images, labels, config, *, device, generator) -> dict: ...

and its parameters are one section of ``parameters_cgd_unlearn.yml`` (``config.SECTION``). The
``cgd_unlearn`` pipeline then runs it for CGD-fed and oracle data, ``evaluate_defenses`` measures
it, and it appears in ``defense_metrics``, ``defense_report``, the HTML report and the platform
(README: "Add a defense").

The defense function gets a copy of the victim (``model``, on ``device``), the clean images
(uint8, N x C x H x W) and their labels, its typed ``config``, and a seeded ``generator``; it
changes ``model`` in place and returns a JSON-able report (``pruned``: channels removed, reported
in the metrics; anything else is kept in ``<attack>.<name>_<source>_report``). It must not read
test data: nothing else reaches it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from cgd_kedro.config import ParameterModel

# The built-in defenses, in this order (rows, parameters, reports); importing a module registers
# its defense. Any other module of this package is imported after them, so a new defense's module
# needs no entry anywhere.
_DEFENSE_MODULES = ("fine_pruning", "anp", "mcr", "ibau")


@dataclass(frozen=True)
class CleanDataDefense:
    name: str  # the prefix of its defense_metrics rows: <name>_cgd, <name>_oracle
    config: type[ParameterModel]  # its parameters, section ``config.SECTION``
    defend: Callable[..., dict]  # defend(model, images, labels, config, *, device, generator)
    node_name: str  # its nodes: <node_name>_cgd, <node_name>_oracle
    description: str  # one line, for the parameter reference and the report

    @property
    def section(self) -> str:
        return self.config.SECTION

    def rows(self) -> tuple[str, str]:
        return f"{self.name}_cgd", f"{self.name}_oracle"


DEFENSE_REGISTRY: dict[str, CleanDataDefense] = {}


def register_defense(
    name: str, *, config: type[ParameterModel], node_name: str, description: str
) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register the decorated function as the clean-data defense ``name``."""
    if not name.isidentifier() or name in {"cgd", "retrain", "abl", "none"}:
        raise ValueError(f"defense name {name!r}: must be an identifier, not a built-in row name")
    if not getattr(config, "SECTION", None):
        raise ValueError(f"defense {name!r}: its config {config.__name__} needs a SECTION")

    def decorator(defend: Callable[..., dict]) -> Callable[..., dict]:
        if name in DEFENSE_REGISTRY and DEFENSE_REGISTRY[name].defend is not defend:
            raise ValueError(f"defense {name!r} is already registered")
        DEFENSE_REGISTRY[name] = CleanDataDefense(name, config, defend, node_name, description)
        return defend

    return decorator


@cache  # once per process: pipelines are built per attack, each asking for the defenses
def _import_defenses() -> None:
    package = importlib.import_module("cgd_kedro.defenses")
    others = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    for module in (*_DEFENSE_MODULES, *others):
        importlib.import_module(f"cgd_kedro.defenses.{module}")


def list_defenses() -> list[CleanDataDefense]:
    """The registered clean-data defenses: the built-in ones in ``_DEFENSE_MODULES`` order, then
    the others in registration order (never the order in which modules happened to be imported)."""
    _import_defenses()
    builtin = [f"cgd_kedro.defenses.{module}" for module in _DEFENSE_MODULES]

    def rank(item: tuple[int, CleanDataDefense]) -> tuple[int, int]:
        module = item[1].defend.__module__
        return (builtin.index(module) if module in builtin else len(builtin), item[0])

    return [d for _, d in sorted(enumerate(DEFENSE_REGISTRY.values()), key=rank)]


def get_defense(name: str) -> CleanDataDefense:
    _import_defenses()
    if name not in DEFENSE_REGISTRY:
        raise ValueError(
            f"unknown clean-data defense {name!r}; available: {sorted(DEFENSE_REGISTRY)}"
        )
    return DEFENSE_REGISTRY[name]
