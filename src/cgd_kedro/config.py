"""Typed parameter sections:
pydantic models with types, ranges, defaults and a description per field.

Every section of the parameters files is a ``ParameterModel``: unknown keys are errors (with a
"did you mean" suggestion), values are checked strictly (no ``true`` for a number, no ``"3"``
for an integer; integers are accepted for floats), and an invalid section raises
``ParameterError`` (a ``ValueError``) whose message gives the full dotted path, the value and
the constraint, e.g. ``badnets.attack.ratio = 1.5: must be less than or equal to 1``.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

# Upper bounds that stop a typo (an extra zero or three) before it allocates or trains for days.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_IMAGES = 1_000_000  # generated or held-out images: 3 GB of 32x32 uint8 images
MAX_STEPS = 1_000_000


class ParameterError(ValueError):
    """An invalid parameter; the message names it in full
    (``section.key``), its value and the rule."""


class ParameterModel(BaseModel):
    """Base of every parameter section. ``SECTION``: the section's dotted name in error messages."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)
    SECTION: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, values: Any) -> Any:
        """A YAML section left empty (``training:``) reads as null:
        it means the section's defaults."""
        if not isinstance(values, dict):
            return values
        return {
            key: value
            for key, value in values.items()
            if not (
                value is None
                and key in cls.model_fields
                and _is_section(cls.model_fields[key].annotation)
            )
        }

    @classmethod
    def from_params(cls, params: dict | None, section: str | None = None):
        """The section from a parameters dict (``None``: every default);
        ``ParameterError`` if invalid."""
        try:
            return cls.model_validate(dict(params or {}))
        except ValidationError as error:
            raise ParameterError(
                describe_errors(error, section if section is not None else cls.SECTION, cls)
            ) from None

    def as_dict(self) -> dict:
        return self.model_dump()


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: its annotation ``X``, or the ``X`` of ``X | None``;
    None for a value."""
    candidates = (annotation, *getattr(annotation, "__args__", ()))
    return next((c for c in candidates if _is_section(c)), None)


def _fields_at(model: type[BaseModel], location: tuple) -> list[str]:
    """The field names of the (nested) model at ``location``, for "did you mean"."""
    for part in location:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = nested_model(getattr(field, "annotation", None))
        if model is None:
            return []
    return list(model.model_fields)


def describe_errors(error: ValidationError, section: str, model: type[BaseModel]) -> str:
    """One line per problem: ``path = value: constraint`` or ``path: unknown parameter ...``."""
    lines = []
    for problem in error.errors(include_url=False):
        location = tuple(problem["loc"])
        path = ".".join(str(part) for part in (section, *location) if part != "")
        if problem["type"] == "extra_forbidden":
            known = _fields_at(model, location[:-1])
            close = difflib.get_close_matches(str(location[-1]), known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else (f"; expected one of {sorted(known)}" if known else "")
            )
            lines.append(f"{path}: unknown parameter{hint}")
            continue
        message = problem["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if problem["type"] == "value_error" and (
            not location or isinstance(problem.get("input"), dict)
        ):
            # a check across a section's fields names its parameter itself
            lines.append(_within(path, message))
            continue
        parts = path.split(".")
        for start in range(len(parts)):  # a check's own message may already name the parameter
            message = message.removeprefix(".".join(parts[start:]) + ": ")
        value = problem.get("input")
        lines.append(
            f"{path}: {message}"
            if problem["type"] == "missing"
            else f"{path} = {_short(value)}: {message}"
        )
    return "; ".join(lines)


def _within(section: str, message: str) -> str:
    """``message`` with the parameter it names completed to its full path under ``section``
    (``attack.ratio: ...`` in section ``badnets.attack`` -> ``badnets.attack.ratio: ...``)."""
    parts = section.split(".") if section else []
    for start in range(len(parts)):
        suffix = ".".join(parts[start:])
        if message.startswith((suffix + ".", suffix + ":", suffix + " ")):
            return ".".join([*parts[:start], message])
    return f"{section}: {message}" if section else message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_share(name: str, value: object) -> None:
    """Raise ``name = value: must be a share in (0, 1]`` unless ``value`` is a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ParameterError(f"{name} = {value!r}: must be a share in (0, 1]")


def quiet_loader(loader_class, **kwargs):
    """A config loader built without OmegaConf's resolver deprecation warnings (Kedro registers its
    resolvers again for each loader made in one process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return loader_class(**kwargs)
