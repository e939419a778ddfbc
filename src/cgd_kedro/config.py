"""Helpers for parameter sections parsed into frozen dataclasses: unknown keys and invalid values
raise ``ValueError`` naming the parameter (``section.name``), so typos stop a run before any work."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def reject_unknown(cls: type, params: dict, section: str) -> None:
    """Raise ``section: unknown parameter(s) [...]`` for keys of ``params`` that are not fields of ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"{section}: unknown parameter(s) {sorted(unknown)}; expected some of {sorted(known)}")


def section_from_params(cls: type[T], params: dict, section: str) -> T:
    """``cls(**params)``, rejecting keys that are not fields of ``cls`` by name."""
    reject_unknown(cls, params, section)
    return cls(**params)


def require(section: str, instance: Any, checks: dict[str, bool]) -> None:
    """Raise for the first field whose check is False: ``section.field: invalid value ...``."""
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"{section}.{name}: invalid value {getattr(instance, name)!r}")


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_share(name: str, value: object) -> None:
    """Raise ``name: expected a share in (0, 1]`` unless ``value`` is a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name}: expected a share in (0, 1], got {value!r}")
