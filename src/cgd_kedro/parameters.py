"""Parameter sections shared by several pipelines, and the fail-fast check of a whole run.

Every section is parsed into a frozen dataclass whose constructor rejects unknown keys and
out-of-range values with a message naming the parameter, so a typo in YAML or ``--params``
stops the run before any data is generated or any model trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from cgd_kedro.accelerate import Acceleration
from cgd_kedro.attacks.poisoning import AttackConfig
from cgd_kedro.cgd.split import SplitConfig
from cgd_kedro.cgd.suspicious import SuspiciousConfig
from cgd_kedro.cgd.unlearn import UnlearnConfig
from cgd_kedro.clip.adversarial_patch import AdversarialPatchConfig
from cgd_kedro.clip.corpora import ClipCorpusConfig
from cgd_kedro.clip.defenses import ClipDefenseConfig
from cgd_kedro.clip.reference import ClipConfig
from cgd_kedro.clip.triggers import CLIP_NAMESPACE_PREFIX, ClipAttackConfig
from cgd_kedro.config import check_share
from cgd_kedro.data.sources import DatasetConfig
from cgd_kedro.defenses.abl import ABLConfig
from cgd_kedro.defenses.anp import ANPConfig
from cgd_kedro.defenses.fine_pruning import FinePruningConfig
from cgd_kedro.models.registry import check_architecture
from cgd_kedro.reporting.tables import check_seeds
from cgd_kedro.runtime import resolve_device
from cgd_kedro.training.classifier import TrainingConfig


@dataclass(frozen=True)
class RuntimeConfig:
    """The ``runtime`` parameters: ``device`` (``auto`` | ``cpu`` | ``cuda``), the run's ``seed``,
    ``cache_dir``, where models trained from unchanged data and parameters are kept for later runs
    (``cgd_kedro.model_cache``; ``None``: train every time), and the CUDA fast path's ``precision``
    and ``compile`` (``cgd_kedro.accelerate``), and ``resume_run``, the version of an incomplete
    run whose outputs this run may read (``cgd_kedro.run_records``; None: complete runs only)."""

    device: str = "auto"
    seed: int = 0
    cache_dir: str | None = None
    precision: str = "auto"
    compile: str = "auto"
    resume_run: str | None = None

    @classmethod
    def from_params(cls, params: dict) -> RuntimeConfig:
        known = {"device", "seed", "cache_dir", "precision", "compile", "resume_run"}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"runtime: unknown parameter(s) {sorted(unknown)}; expected {sorted(known)}")
        config = cls(**params)
        resolve_device(config.device)
        if not isinstance(config.seed, int) or isinstance(config.seed, bool) or config.seed < 0:
            raise ValueError(f"runtime.seed: expected a non-negative integer, got {config.seed!r}")
        if config.cache_dir is not None and not (isinstance(config.cache_dir, str) and config.cache_dir.strip()):
            raise ValueError(f"runtime.cache_dir: expected a folder path or null, got {config.cache_dir!r}")
        config.acceleration  # noqa: B018 (validates precision and compile)
        return config

    @property
    def acceleration(self) -> Acceleration:
        """The GPU fast path's settings (``cgd_kedro.accelerate``; no effect on the CPU)."""
        return Acceleration(self.precision, self.compile)

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


@dataclass(frozen=True)
class VictimConfig:
    """The ``victim`` parameters: the classifier ``architecture`` and its ``training`` recipe."""

    architecture: str = "compact_cnn"
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @classmethod
    def from_params(cls, params: dict) -> VictimConfig:
        unknown = set(params) - {"architecture", "training"}
        if unknown:
            raise ValueError(f"victim: unknown parameter(s) {sorted(unknown)}; expected 'architecture' and 'training'")
        architecture = params.get("architecture", cls.architecture)
        check_architecture(architecture)
        return cls(architecture, TrainingConfig.from_params(dict(params.get("training") or {})))


def check_run_parameters(params: dict, namespaces: set[str], builds_reference_clip: bool = False) -> None:
    """Validate every section the run will use.

    ``builds_reference_clip``: the run builds the reference CLIP, so its weights file (or the
    embedded pretraining) must be available.

    Raises ``ValueError`` (or ``FileNotFoundError`` for a missing dataset directory) whose message
    starts with the parameter's full path, e.g. ``badnets.attack.ratio: ...``.
    """
    with _named("dataset"):
        dataset = DatasetConfig.from_params(params.get("dataset", {}))
    with _named("runtime"):
        RuntimeConfig.from_params(params.get("runtime", {}))
    if "victim" in params:
        with _named("victim"):
            VictimConfig.from_params(params["victim"])
    if "clip" in params:
        with _named("clip"):
            clip = ClipConfig.from_params(params["clip"])
        if builds_reference_clip:  # its errors name their parameter in full (clip.weights, dataset.clip_holdout.size)
            clip.check_source(dataset.name, dataset.clip_holdout_size(clip.weights))
    sections = {
        "suspicious": SuspiciousConfig, "split": SplitConfig, "cgd": UnlearnConfig,
        "fine_pruning": FinePruningConfig, "abl": ABLConfig, "anp": ANPConfig,
    }  # fmt: skip
    for section, config in sections.items():
        if section in params:
            with _named(section):
                config.from_params(params[section])
    check_share("oracle_fraction", params.get("oracle_fraction", 0.05))
    if "clip_defense" in params:
        ClipDefenseConfig.from_params(params["clip_defense"])
    if "abd" in params:
        if set(params["abd"]) - {"patch"}:
            raise ValueError(f"abd: unknown parameter(s) {sorted(set(params['abd']) - {'patch'})}; expected ['patch']")
        AdversarialPatchConfig.from_params(dict(params["abd"].get("patch") or {}))
    if "clip_corpus" in params:
        ClipCorpusConfig.from_params(params["clip_corpus"])
    if "reporting" in params:
        if set(params["reporting"]) - {"seeds"}:
            raise ValueError(f"reporting: unknown parameter(s) {sorted(set(params['reporting']) - {'seeds'})}; expected ['seeds']")
        check_seeds(params["reporting"].get("seeds"))
    for namespace in sorted(namespaces):
        section = params.get(namespace, {})
        if namespace.startswith(CLIP_NAMESPACE_PREFIX):
            # The values come from the shared `clip_attack` section and the namespace's own `attack`.
            try:
                config = ClipAttackConfig.from_shared(params.get("clip_attack", {}), section.get("attack", {}))
                if config.target >= dataset.num_classes:
                    raise ValueError(f"clip_attack.target: class {config.target} does not exist ({dataset.num_classes} classes)")
            except ValueError as error:
                raise ValueError(f"{error} (in {namespace}, from clip_attack and {namespace}.attack)") from error
        elif "attack" in section:
            with _named(namespace):
                AttackConfig.from_params(section["attack"], dataset.num_classes)


@contextmanager
def _named(section: str) -> Iterator[None]:
    """Prefix an error message with ``section.`` unless it already names the section."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        if message.startswith(f"{section}.") or message.startswith(f"{section}:"):
            raise
        raise type(error)(f"{section}.{message}") from error
