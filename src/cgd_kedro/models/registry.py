"""A registry of named classifier architectures, in the spirit of open_clip's model factory.

A model is always rebuilt from its architecture name and ``num_classes``; weights travel
separately as a state_dict (see ``cgd_kedro.models.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelFactory = Callable[[int], nn.Module]
MODEL_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers ``factory(num_classes) -> nn.Module`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        MODEL_REGISTRY[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    _import_builtin_models()
    return sorted(MODEL_REGISTRY)


def check_architecture(name: str) -> None:
    """Raise a ``ValueError`` naming the parameter if no model is registered as ``name``."""
    _import_builtin_models()
    if name not in MODEL_REGISTRY:
        raise ValueError(
            f"architecture: unknown model {name!r}; registered models: {sorted(MODEL_REGISTRY)}"
        )


def build_model(name: str, num_classes: int) -> nn.Module:
    """Instantiate the registered architecture ``name`` with a ``num_classes``-way head."""
    check_architecture(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    return MODEL_REGISTRY[name](num_classes)


def _import_builtin_models() -> None:
    # Imported for their @register_model side effect; kept lazy to avoid an import cycle.
    from cgd_kedro.models import airbench, compact_cnn, preact_resnet  # noqa: F401
