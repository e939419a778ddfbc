"""The project's artefacts as the platform reads them: through the Kedro catalog, one env at a time.

"Latest" means the newest version of a complete run (``cgd_kedro.run_records``), the version a
later ``kedro run`` would read too, never a killed run's partial outputs. Building a view (a Kedro
session and catalog) takes seconds, so ``ViewCache`` keeps one per environment and builds a new
one only when a run record or a configuration file has changed since: every run writes its
record when it starts and when it ends, so the outputs of a run that finished a moment ago are
shown on the next request. Nothing here writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io.core import DatasetError

from cgd_kedro.pipelines.abd_defense.pipeline import CLIP_ATTACK_NAMESPACES
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES
from cgd_kedro.reporting.tables import build_defense_report
from cgd_kedro.run_records import RUNS_FOLDER, RunRecords, usable

_CONFIG_LOCK = threading.Lock()


@dataclass(frozen=True)
class Experiment:
    """One attack on one dataset, with the versions of its undefended result."""

    attack: str
    model: str  # classifier | clip
    versions: tuple[str, ...]  # newest first

    @property
    def latest(self) -> str:
        return self.versions[0]


class ProjectView:
    """Read-only access to one Kedro environment's catalog (``env`` None: the default run's)."""

    def __init__(self, project_path: Path, env: str | None = None) -> None:
        self.project_path = Path(project_path).resolve()
        self.env = env
        # Kedro's config loader registers process-wide OmegaConf resolvers: the server's threads
        # must not build two at once (ViewCache decides when a view is built afresh).
        with _CONFIG_LOCK:
            bootstrap_project(self.project_path)
            with KedroSession.create(project_path=self.project_path, env=env) as session:
                context = session.load_context()
            self.dataset = str(context.config_loader["globals"]["dataset"])
            self.params: dict[str, Any] = context.params
            self.catalog = context.catalog
        self.run_records = RunRecords(self.project_path).read_all()

    def _base_path(self, name: str) -> Path | None:
        """Where the catalog keeps dataset ``name`` (a versioned one's folder of versions)."""
        dataset = self.catalog.get(name)
        return (
            self.project_path / str(dataset._filepath)
            if dataset is not None and hasattr(dataset, "_filepath")
            else None
        )

    def file_path(self, name: str, version: str | None = None) -> Path | None:
        """The file of dataset ``name`` at ``version``
        (None: the newest), or None if there is none."""
        base = self._base_path(name)
        if base is None:
            return None
        versions = self.versions(name)
        if not versions:
            return base if base.is_file() else None
        chosen = version or versions[0]
        return base / chosen / base.name if chosen in versions else None

    def versions(self, name: str) -> tuple[str, ...]:
        """Saved versions of the versioned dataset ``name`` from complete runs, newest first."""
        base = self._base_path(name)
        if base is None or not base.is_dir():
            return ()
        saved = sorted((d.name for d in base.iterdir() if (d / base.name).is_file()), reverse=True)
        filepath = str(self.catalog.get(name)._filepath)
        return tuple(v for v in saved if usable(self.run_records, filepath, v) is not None)

    def load(self, name: str, version: str | None = None, default: Any = None) -> Any:
        """Dataset ``name`` at ``version`` (None: the newest of a complete run),
        or ``default`` if there is none."""
        if version is None and getattr(self.catalog.get(name), "_version", None) is not None:
            versions = self.versions(name)
            if not versions:
                return default
            version = versions[0]
        try:
            return self.catalog.load(name, version=version)
        except DatasetError:
            return default

    def experiments(self) -> list[Experiment]:
        """Every attack with a saved undefended result: classifier attacks, then CLIP attacks."""
        return list(self._experiments)

    @cached_property
    def _experiments(self) -> tuple[Experiment, ...]:
        found = []
        for attack in ATTACK_NAMESPACES:
            if versions := self.versions(f"{attack}.attack_metrics"):
                found.append(Experiment(attack, "classifier", versions))
        for clip_attack in CLIP_ATTACK_NAMESPACES:
            if versions := self.versions(f"{clip_attack}.backdoor_report"):
                found.append(Experiment(clip_attack, "clip", versions))
        return tuple(found)

    def leaderboard(self) -> pd.DataFrame:
        """``defense_report`` from the newest saved results of every attack and CLIP attack: the
        same table the reporting pipeline builds, without waiting for a reporting run."""
        return self._leaderboard.copy()

    @cached_property
    def _leaderboard(self) -> pd.DataFrame:
        defense_metrics = {
            a: m for a in ATTACK_NAMESPACES if (m := self.load(f"{a}.defense_metrics")) is not None
        }
        robustness = {
            a: r for a in defense_metrics if (r := self.load(f"{a}.cgd_robustness")) is not None
        }
        abd_report = self.load("abd_report")
        seed = int(self.params.get("runtime", {}).get("seed", 0))
        return build_defense_report(self.dataset, seed, defense_metrics, abd_report, robustness)


class ViewCache:
    """One ``ProjectView`` per environment, rebuilt when the project's state has changed.

    The state is the modification time of the run-record folder (a record is renamed into it
    when a run starts and when it ends) and of every configuration file.
    """

    def __init__(self, project_path: Path) -> None:
        self.project_path = Path(project_path).resolve()
        self._views: dict[str | None, tuple[tuple, ProjectView]] = {}
        self._lock = threading.Lock()

    def stamp(self) -> tuple:
        records = self.project_path / RUNS_FOLDER
        conf = sorted(
            (str(p), p.stat().st_mtime_ns)
            for p in (self.project_path / "conf").rglob("*")
            if p.is_file()
        )
        return (records.stat().st_mtime_ns if records.is_dir() else 0, tuple(conf))

    def get(self, env: str | None) -> ProjectView:
        stamp = self.stamp()
        with self._lock:  # one build at a time; requests arriving meanwhile get the fresh view
            cached = self._views.get(env)
            if cached is None or cached[0] != stamp:
                self._views[env] = (stamp, ProjectView(self.project_path, env))
            return self._views[env][1]
