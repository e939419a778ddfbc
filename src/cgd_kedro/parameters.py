"""The run's parameters as typed models, one per parameters file, and the check of a whole run.

Each file of ``conf/base/parameters_*.yml`` has a model here whose fields are the sections it
defines (themselves ``ParameterModel``s next to the code that uses them: ``TrainingConfig``,
``UnlearnConfig``, ...). ``RunParameters`` joins them: validating the merged parameters of a run
(every env, ``--params`` and the platform's overrides alike) checks every key at every level,
types, ranges and upper bounds, with the full dotted path in the message, before any node runs.
``RunParameters.model_json_schema()`` is the machine-readable reference (the platform's form
offers its paths); ``python -m cgd_kedro.parameters`` prints it as the README's table.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, create_model, field_validator

from cgd_kedro.accelerate import Acceleration
from cgd_kedro.attacks.poisoning import AttackConfig
from cgd_kedro.attacks.registry import list_attacks
from cgd_kedro.cgd.split import SplitConfig
from cgd_kedro.cgd.suspicious import SuspiciousConfig
from cgd_kedro.cgd.unlearn import UnlearnConfig
from cgd_kedro.clip.adversarial_patch import AdversarialPatchConfig
from cgd_kedro.clip.corpora import ClipCorpusConfig
from cgd_kedro.clip.defenses import ClipDefenseConfig
from cgd_kedro.clip.reference import ClipConfig
from cgd_kedro.clip.triggers import CLIP_ATTACK_NAMESPACES, ClipAttackConfig
from cgd_kedro.config import ParameterError, ParameterModel, nested_model
from cgd_kedro.data.sources import DatasetConfig
from cgd_kedro.defenses.abl import ABLConfig
from cgd_kedro.defenses.registry import CleanDataDefense, get_defense, list_defenses
from cgd_kedro.models.registry import check_architecture
from cgd_kedro.reporting.tables import check_seeds
from cgd_kedro.runtime import resolve_device
from cgd_kedro.training.classifier import TrainingConfig


class RuntimeConfig(ParameterModel):
    """The ``runtime`` parameters."""

    SECTION: ClassVar[str] = "runtime"

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto, cpu or cuda (cuda without a GPU is an error)"
    )
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="same seed + same device = bit-identical result"
    )
    cache_dir: str | None = Field(
        None,
        min_length=1,
        description=(
            "models trained from unchanged data and parameters are kept here for later runs "
            "(null: train every time)"
        ),
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="CUDA only: auto = bfloat16 autocast where supported; the CPU always runs fp32",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="CUDA only: torch.compile; auto = for victim and clean-model training"
    )
    resume_run: str | None = Field(
        None,
        min_length=1,
        description=(
            "the version of an incomplete run whose outputs this run may read (to resume "
            "it with --from-nodes)"
        ),
    )

    @field_validator("device")
    @classmethod
    def _available(cls, device: str) -> str:
        resolve_device(device)  # cuda without a GPU is an error here, not in the first node
        return device

    @property
    def acceleration(self) -> Acceleration:
        """The GPU fast path's settings (``cgd_kedro.accelerate``; no effect on the CPU)."""
        return Acceleration(self.precision, self.compile)

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


class VictimConfig(ParameterModel):
    """The ``victim`` parameters: the classifier ``architecture`` and its ``training`` recipe."""

    SECTION: ClassVar[str] = "victim"

    architecture: str = Field(
        "compact_cnn", description="a registered classifier (cgd_kedro.models.registry)"
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="the training recipe"
    )

    @field_validator("architecture")
    @classmethod
    def _registered(cls, architecture: str) -> str:
        check_architecture(architecture)
        return architecture


class AttackSection(ParameterModel):
    """An attack namespace of ``parameters_poison.yml``: ``<attack>.attack``."""

    attack: AttackConfig | None = Field(
        None, description="the attack (name, target, ratio, mode, trigger)"
    )


class ClipAttackSection(ParameterModel):
    """A CLIP attack namespace of ``parameters_abd_defense.yml``: ``clip_<attack>.attack``, keys of
    ``clip_attack`` that this namespace sets differently (merged over the shared section)."""

    attack: dict[str, Any] = Field(
        default_factory=dict,
        description="clip_attack keys for this namespace (e.g. attack: badnet)",
    )


class PatchSection(ParameterModel):
    """The ``abd`` parameters."""

    patch: AdversarialPatchConfig = Field(
        default_factory=AdversarialPatchConfig, description="ABD's adversarial patch"
    )


class ReportingConfig(ParameterModel):
    """The ``reporting`` parameters."""

    seeds: list[int] | None = Field(
        None, description="the seeds the summary averages over (null: every seed on disk)"
    )

    @field_validator("seeds", mode="before")
    @classmethod
    def _distinct(cls, seeds: object) -> object:
        return check_seeds(seeds)


class RecordConfig(ParameterModel):
    """The ``backdoorbench.record`` parameters."""

    record_dir: str | None = Field(
        None, description="a BackdoorBench record folder (record/<name>)"
    )


class BackdoorBenchSection(ParameterModel):
    record: RecordConfig = Field(default_factory=RecordConfig, description="the record to import")


# --- one model per parameters file ------------------------------------------------------------
class BaseParameters(ParameterModel):
    """``parameters.yml``."""

    dataset: DatasetConfig = Field(
        default_factory=DatasetConfig, description="where the images come from"
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        description="device, seed, model cache, CUDA fast path, resuming",
    )


PoisonParameters = create_model(
    "PoisonParameters",
    __base__=ParameterModel,
    __doc__="``parameters_poison.yml``: the victim and one namespace per attack.",
    victim=(VictimConfig, Field(default_factory=VictimConfig, description="the victim classifier")),
    **{
        name: (AttackSection | None, Field(None, description=f"the {name} attack"))
        for name in list_attacks()
    },
)


class ReferenceClipParameters(ParameterModel):
    """``parameters_reference_clip.yml``."""

    clip: ClipConfig = Field(default_factory=ClipConfig, description="the reference CLIP")


class ClipSplitParameters(ParameterModel):
    """``parameters_clip_split.yml``."""

    suspicious: SuspiciousConfig = Field(
        default_factory=SuspiciousConfig, description="the suspicious models"
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="the 2-D split rule")


def _cgd_unlearn_parameters(defenses: tuple[CleanDataDefense, ...]) -> type[ParameterModel]:
    """``parameters_cgd_unlearn.yml``: CGD, ABL, one section per registered clean-data defense."""
    return create_model(
        "CgdUnlearnParameters",
        __base__=ParameterModel,
        __doc__="``parameters_cgd_unlearn.yml``.",
        cgd=(UnlearnConfig, Field(default_factory=UnlearnConfig, description="CGD's unlearning")),
        abl=(ABLConfig, Field(default_factory=ABLConfig, description="ABL")),
        **{
            d.section: (d.config, Field(default_factory=d.config, description=d.description))
            for d in defenses
        },
        oracle_fraction=(
            float,
            Field(
                0.05,
                gt=0,
                le=1,
                description="share of genuinely clean data for the *_oracle variants",
            ),
        ),
    )


AbdDefenseParameters = create_model(
    "AbdDefenseParameters",
    __base__=ParameterModel,
    __doc__=(
        "``parameters_abd_defense.yml``: corpora, shared CLIP attack settings, one namespace per "
        "CLIP attack, defenses."
    ),
    clip_corpus=(
        ClipCorpusConfig,
        Field(
            default_factory=ClipCorpusConfig, description="the embedded world's image-caption pairs"
        ),
    ),
    clip_attack=(
        ClipAttackConfig,
        Field(default_factory=ClipAttackConfig, description="settings shared by the CLIP attacks"),
    ),
    clip_defense=(
        ClipDefenseConfig,
        Field(default_factory=ClipDefenseConfig, description="FT, CleanCLIP and ABD"),
    ),
    abd=(PatchSection, Field(default_factory=PatchSection, description="ABD")),
    **{
        name: (ClipAttackSection | None, Field(None, description=f"the {name} CLIP attack"))
        for name in CLIP_ATTACK_NAMESPACES
    },
)


class ReportingParameters(ParameterModel):
    """``parameters_reporting.yml``."""

    reporting: ReportingConfig = Field(default_factory=ReportingConfig, description="the report")


class BackdoorBenchImportParameters(ParameterModel):
    """``parameters_backdoorbench_import.yml``."""

    backdoorbench: BackdoorBenchSection = Field(
        default_factory=BackdoorBenchSection, description="a BackdoorBench record as an experiment"
    )


@cache
def _parameter_models(defenses: tuple[str, ...]) -> tuple[type[ParameterModel], dict]:
    files = {
        "parameters.yml": BaseParameters,
        "parameters_poison.yml": PoisonParameters,
        "parameters_reference_clip.yml": ReferenceClipParameters,
        "parameters_clip_split.yml": ClipSplitParameters,
        "parameters_cgd_unlearn.yml": _cgd_unlearn_parameters(tuple(map(get_defense, defenses))),
        "parameters_abd_defense.yml": AbdDefenseParameters,
        "parameters_reporting.yml": ReportingParameters,
        "parameters_backdoorbench_import.yml": BackdoorBenchImportParameters,
    }
    run = create_model(
        "RunParameters",
        __base__=tuple(files.values()),
        __doc__="Every parameter of a run: the union of the parameters files' models.",
    )
    return run, files


def run_parameters() -> type[ParameterModel]:
    """The model of every parameter of a run, with a section per registered clean-data defense
    (rebuilt when a defense is registered)."""
    return _parameter_models(tuple(d.name for d in list_defenses()))[0]


def parameter_files() -> dict[str, type[ParameterModel]]:
    """The model of each parameters file, by file name."""
    return _parameter_models(tuple(d.name for d in list_defenses()))[1]


RunParameters = run_parameters()  # with the built-in defenses (what `kedro run` sees)


def check_run_parameters(
    params: dict, namespaces: set[str] = frozenset(), builds_reference_clip: bool = False
) -> ParameterModel:
    """Validate every parameter of a run (all sections present, whatever the run uses).

    ``namespaces``: the run's namespaces; their attacks' targets are checked against the dataset's
    classes and their CLIP attacks merged with ``clip_attack``. ``builds_reference_clip``: the run
    builds the reference CLIP, so its weights file (or the embedded pretraining) must be available.

    Raises ``ParameterError`` (or ``FileNotFoundError`` for a missing dataset directory or weights
    file) naming the parameter in full, e.g. ``badnets.attack.ratio = 1.5: ...``.
    """
    model = run_parameters()
    run = model.from_params(params)
    if (
        builds_reference_clip
    ):  # its errors name their parameter in full (clip.weights, dataset.clip_holdout.size)
        run.clip.check_source(run.dataset.name, run.dataset.clip_holdout_size(run.clip.weights))
    num_classes = run.dataset.num_classes
    for namespace in sorted(namespaces):
        section = getattr(run, namespace, None) if namespace in model.model_fields else None
        if (
            isinstance(section, AttackSection)
            and section.attack is not None
            and section.attack.target >= num_classes
        ):
            raise ParameterError(
                f"{namespace}.attack.target = {section.attack.target}: must be a class index in "
                f"[0, {num_classes - 1}]"
            )
        if namespace in CLIP_ATTACK_NAMESPACES:
            own = dict(params.get(namespace, {}) or {}).get("attack", {}) or {}
            try:
                config = ClipAttackConfig.from_shared(params.get("clip_attack", {}) or {}, own)
            except ValueError as error:
                raise ParameterError(
                    f"{error} (in {namespace}, from clip_attack and {namespace}.attack)"
                ) from None
            if config.target >= num_classes:
                raise ParameterError(
                    f"clip_attack.target = {config.target}: class {config.target} does not exist "
                    f"({num_classes} classes)"
                )
    return run


def parameter_rows() -> list[tuple[str, str, str, str, str]]:
    """``(file, path, default, constraint, meaning)`` of every parameter, walked from the models."""
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >="}
    rows = []

    def walk(file_name: str, model: type[ParameterModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            path, annotation = f"{prefix}{name}", field.annotation
            nested = nested_model(annotation)
            if nested is not None and nested not in (AttackSection, ClipAttackSection):
                walk(file_name, nested, path + ".")
                continue
            default = field.get_default(call_default_factory=True)
            default = default.model_dump() if isinstance(default, ParameterModel) else default
            bounds = ", ".join(
                f"{symbol} {getattr(m, key)}"
                for m in field.metadata
                for key, symbol in symbols.items()
                if getattr(m, key, None) is not None
            )
            if getattr(annotation, "__args__", None) and all(
                isinstance(a, str) for a in annotation.__args__
            ):
                bounds = " / ".join(annotation.__args__)  # a Literal: its choices
            rows.append((file_name, path, repr(default), bounds, field.description or ""))

    for file_name, model in parameter_files().items():
        walk(file_name, model, "")
    return rows


def parameter_reference() -> str:
    """The Markdown table of every parameter, per parameters file (the README's reference)."""
    lines = ["| parameter | default | constraint | meaning |", "|---|---|---|---|"]
    current = None
    for file_name, path, default, bounds, meaning in parameter_rows():
        if file_name != current:
            lines.append(f"| **{file_name}** | | | |")
            current = file_name
        lines.append(f"| `{path}` | `{default}` | {bounds} | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(parameter_reference() + "\n")
