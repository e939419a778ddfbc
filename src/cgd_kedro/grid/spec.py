"""The grid spec (``conf/base/grid.yml``) and its cells.

A grid is environments (datasets) x attacks x seeds x the product of the sweeps. Each cell runs the
spec's pipelines in one Kedro session, for the shared namespaces (the world, the reference CLIP)
plus its attack, with its seed and sweep values as parameter overrides. A sweep key may hold
``{attack}``, replaced by the cell's attack (``"{attack}.attack.ratio": [0.05, 0.1]``).

Everything is checked before any cell starts (``check_spec``): environments, pipelines,
namespaces, and every cell's full parameter set through the run's own check, so an unknown
parameter path or an out-of-range sweep value is named with its spec entry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, field_validator

from cgd_kedro.config import ParameterError, ParameterModel, quiet_loader

ATTACK_TOKEN = "{attack}"


class GridSpec(ParameterModel):
    """``grid`` of a spec file."""

    SECTION: ClassVar[str] = "grid"

    name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the grid's folder: data/09_grid/<name>/",
    )
    envs: list[str] = Field(
        default_factory=lambda: ["base"],
        min_length=1,
        description="Kedro environments (datasets); base = the embedded world",
    )
    pipelines: list[str] = Field(
        min_length=1, description="registered pipelines each cell runs, in one session"
    )
    shared_namespaces: list[str] = Field(
        default_factory=lambda: ["dataset", "clip"],
        description="namespaces every cell runs besides its attack",
    )
    namespaces: list[str] = Field(
        min_length=1, description="attacks: one cell per attack (and per seed, sweep value, env)"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="runtime.seed of the cells"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides for every cell, nested like the parameters files",
    )
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="parameter path -> values; cells take the product"
    )

    @field_validator("sweep")
    @classmethod
    def _non_empty(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in sweep.items() if not values]
        if empty:
            raise ValueError(f"sweep {empty[0]!r} has no values")
        repeated = [
            key
            for key, values in sweep.items()
            if len({json.dumps(v, sort_keys=True) for v in values}) < len(values)
        ]
        if repeated:
            raise ValueError(f"sweep {repeated[0]!r} repeats a value")
        return sweep

    @field_validator("seeds", "envs", "namespaces", "pipelines")
    @classmethod
    def _distinct(cls, values: list) -> list:
        if len(set(values)) < len(values):
            raise ValueError(f"repeats an entry: {values}")
        return values


@dataclass(frozen=True)
class Cell:
    """One Kedro session of the grid."""

    env: str
    attack: str
    seed: int
    sweep: tuple[tuple[str, Any], ...]  # (path with {attack} resolved, value), in the spec's order
    pipelines: tuple[str, ...]
    namespaces: tuple[str, ...]
    params: dict = field(hash=False, compare=False)  # the overrides this cell runs with (nested)

    @property
    def sweep_values(self) -> dict[str, Any]:
        """``{spec key: value}``, the spec's keys (with ``{attack}`` left in)
        for the summary's columns."""
        return dict(self.sweep)

    @property
    def id(self) -> str:
        """A readable, path-safe name unique to the cell's definition
        (a hash of it ends the name)."""
        # the hash keeps ids distinct
        slug = "-".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in self.sweep)
        digest = hashlib.sha256(
            json.dumps(self.definition(), sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        parts = [self.env, self.attack, f"seed{self.seed}", *([slug] if slug else []), digest]
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts))

    def definition(self) -> dict:
        """Everything that decides the cell's result (what ``cell.json`` records)."""
        return {
            "env": self.env,
            "attack": self.attack,
            "seed": self.seed,
            "sweep": [list(p) for p in self.sweep],
            "pipelines": list(self.pipelines),
            "namespaces": list(self.namespaces),
            "params": self.params,
        }


def set_path(tree: dict, path: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``path = "a.b.c"``, creating the dicts on the way."""
    *parents, last = path.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ParameterError(f"{path}: {part!r} is a value, not a section")
    tree[last] = value


def merge(base: dict, override: dict) -> dict:
    """``override`` merged into a copy of ``base``, key by key
    (nested dicts merged, the rest replaced)."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def expand_cells(spec: GridSpec) -> list[Cell]:
    """Every cell of ``spec``: envs x namespaces x seeds x product of the sweeps, in that order."""
    keys = list(spec.sweep)
    cells = []
    for env, attack, seed, values in itertools.product(
        spec.envs, spec.namespaces, spec.seeds, itertools.product(*spec.sweep.values())
    ):
        sweep = tuple((key, value) for key, value in zip(keys, values, strict=True))
        params = merge(spec.params, {"runtime": {"seed": seed}})
        for key, value in sweep:
            set_path(params, key.replace(ATTACK_TOKEN, attack), value)
        cells.append(
            Cell(
                env,
                attack,
                seed,
                sweep,
                tuple(spec.pipelines),
                (*spec.shared_namespaces, attack),
                params,
            )
        )
    return cells


def load_spec(path: str | Path) -> GridSpec:
    """The ``grid`` section of a spec file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid spec {str(path)!r}: no such file")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"grid spec {str(path)!r}: not valid YAML ({error})") from None
    if not isinstance(content, dict) or set(content) != {"grid"}:
        raise ParameterError(
            f"grid spec {str(path)!r}: expected one top-level key 'grid', got "
            f"{sorted(content) if isinstance(content, dict) else type(content).__name__}"
        )
    try:
        return GridSpec.from_params(content["grid"])
    except ParameterError as error:
        raise ParameterError(f"grid spec {str(path)!r}: {error}") from None


def check_spec(spec: GridSpec, project_path: str | Path, cells: list[Cell]) -> None:
    """Refuse ``spec`` before any cell starts: an unknown env, pipeline or namespace, or a cell
    whose parameters the run would refuse (an unknown path, a value out of
    range), naming the spec entry."""
    from kedro.config import OmegaConfigLoader
    from kedro.pipeline import Pipeline

    from cgd_kedro.parameters import check_run_parameters
    from cgd_kedro.pipeline_registry import register_pipelines

    conf = Path(project_path) / "conf"
    for env in spec.envs:
        if env != "base" and not (conf / env).is_dir():
            known = sorted(
                p.name for p in conf.iterdir() if p.is_dir() and p.name not in {"base", "local"}
            )
            raise ParameterError(
                f"grid.envs: unknown environment {env!r} (no conf/{env}/); known: {known}"
            )
    pipelines = register_pipelines()
    unknown = [p for p in spec.pipelines if p not in pipelines]
    if unknown:
        raise ParameterError(
            f"grid.pipelines: unknown pipeline {unknown[0]!r}; known: {sorted(pipelines)}"
        )
    chosen = sum((pipelines[p] for p in spec.pipelines), Pipeline([]))
    namespaces = {n.namespace.split(".")[0] for n in chosen.nodes if n.namespace}
    for entry, names in (
        ("grid.namespaces", spec.namespaces),
        ("grid.shared_namespaces", spec.shared_namespaces),
    ):
        missing = [name for name in names if name not in namespaces]
        if missing:
            raise ParameterError(
                f"{entry}: {missing[0]!r} is not a namespace of the pipelines {spec.pipelines}; "
                f"known: {sorted(namespaces)}"
            )
    for env in spec.envs:
        loader = quiet_loader(
            OmegaConfigLoader,
            conf_source=str(conf),
            base_env="base",
            default_run_env="local",
            env=None if env == "base" else env,
            merge_strategy={"parameters": "soft", "globals": "soft"},
        )
        base = loader["parameters"]
        for cell in (c for c in cells if c.env == env):
            try:
                check_run_parameters(merge(base, cell.params), set(cell.namespaces))
            except ParameterError as error:
                raise ParameterError(
                    f"grid cell {cell.id} ({describe_entries(cell)}): {error}"
                ) from None


def describe_entries(cell: Cell) -> str:
    """The spec entries a cell comes from, for error messages."""
    return ", ".join(
        [
            f"env {cell.env}",
            f"namespace {cell.attack}",
            f"seed {cell.seed}",
            *(f"sweep {k} = {v!r}" for k, v in cell.sweep),
        ]
    )
