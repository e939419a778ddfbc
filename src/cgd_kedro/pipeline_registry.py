"""Project pipelines: every package under ``pipelines/`` is found and registered.

- ``kedro run`` (``__default__``): CGD's quick tour, within ten minutes on 2 CPU cores: the world,
  the reference CLIP, and for the default attacks (``DEFAULT_ATTACKS``) poisoning, the split and
  CGD, with CGD's clean-data peers ``DEFAULT_PEERS`` on ``DEFAULT_PEER_ATTACKS``, then the report.
  ABD on ``DEFAULT_CLIP_ATTACKS`` and ``cgd_robustness`` on ``DEFAULT_ROBUSTNESS_ATTACKS`` (both
  empty: they do not fit the ten minutes).
- ``kedro run --pipelines abd_quick``: the world, the reference CLIP and
  ABD on ``QUICK_CLIP_ATTACKS``.
- ``kedro run --pipelines full``: every pipeline for every attack in the library (the full grid).
- ``kedro run --pipelines cgd_unlearn_clean_data``: CGD and the clean-data defenses (CGD-fed and
  oracle) without retraining and ABL, every attack; ``cgd_unlearn_cgd``: CGD alone (grids).
- ``kedro run --pipelines <name>``: one pipeline, every attack; add ``--namespaces`` to narrow it.
  ``reporting`` covers the default attacks, ``reporting_full`` every attack.
- ``backdoorbench_import`` runs only when asked for: it needs a BackdoorBench record on disk.
"""

from __future__ import annotations

import importlib
import pkgutil

from kedro.pipeline import Pipeline

from cgd_kedro.pipelines import abd_defense, cgd_robustness, cgd_unlearn, reporting
from cgd_kedro.pipelines.abd_defense.pipeline import (
    CLIP_ATTACK_NAMESPACES,
    DEFAULT_CLIP_ATTACKS,
    QUICK_CLIP_ATTACKS,
)
from cgd_kedro.pipelines.cgd_robustness.pipeline import DEFAULT_ROBUSTNESS_ATTACKS
from cgd_kedro.pipelines.cgd_unlearn.pipeline import (
    DEFAULT_PEER_ATTACKS,
    DEFAULT_PEERS,
    clean_data_peers,
)
from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES, DEFAULT_ATTACKS
from cgd_kedro.pipelines.tags import tag_pipeline

__all__ = ["DEFAULT_CLIP_ATTACKS", "register_pipelines"]


def default_subset(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` without the nodes of attacks that are not in ``DEFAULT_ATTACKS``, and without
    the clean reference model when none of the remaining nodes reads it (only LC, LF and TrojanNN
    build their triggers from it; training it would add a victim's
    training to the run for nothing)."""
    excluded = set(ATTACK_NAMESPACES) - set(DEFAULT_ATTACKS)
    kept = [
        n for n in pipeline.nodes if not n.namespace or n.namespace.split(".")[0] not in excluded
    ]
    if not any("clean_model" in n.inputs for n in kept):
        kept = [n for n in kept if "clean_model" not in n.outputs]
    return Pipeline(kept)


def find_all_pipelines() -> dict[str, Pipeline]:
    """``create_pipeline()`` of every package under ``cgd_kedro.pipelines``, by package name.

    Not Kedro's ``find_pipelines``: it loads only the pipelines named on the command line, and
    ``full``, ``reporting_full`` and ``__default__`` are assembled here from all of them.
    """
    package = importlib.import_module("cgd_kedro.pipelines")
    return {
        module.name: importlib.import_module(f"{package.__name__}.{module.name}").create_pipeline()
        for module in pkgutil.iter_modules(package.__path__)
        if module.ispkg
    }


# Pipelines that run only when named: they need something on disk that a run cannot make
ON_REQUEST = frozenset({"backdoorbench_import"})


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_all_pipelines()
    grid = sum(
        (p for name, p in pipelines.items() if name not in ON_REQUEST | {"reporting"}), Pipeline([])
    )
    pipelines["reporting_full"] = reporting.create_pipeline(
        attacks=ATTACK_NAMESPACES,
        clip_attacks=CLIP_ATTACK_NAMESPACES,
        robustness_attacks=ATTACK_NAMESPACES,
    )
    pipelines["full"] = grid + pipelines["reporting_full"]
    # CGD with the clean-data defenses only (Fine-Pruning, ANP, MCR, I-BAU;
    # CGD-fed and oracle), every attack
    pipelines["cgd_unlearn_clean_data"] = cgd_unlearn.create_pipeline(peers=clean_data_peers())
    # CGD alone, every attack (grids)
    pipelines["cgd_unlearn_cgd"] = cgd_unlearn.create_pipeline(peers=("cgd",))
    # ABD on one CLIP attack with its report (about 5 min on 2 CPU cores after the
    # CLIP; the default run has none)
    world = default_subset(pipelines["poison"].only_nodes_with_namespaces(["dataset"]))
    pipelines["abd_quick"] = (
        world
        + pipelines["reference_clip"]
        + abd_defense.create_pipeline(namespaces=list(QUICK_CLIP_ATTACKS))
    )
    per_attack = sum(
        (p for name, p in pipelines.items() if name in {"poison", "reference_clip", "clip_split"}),
        Pipeline([]),
    )
    pipelines["__default__"] = (
        default_subset(per_attack)
        + cgd_unlearn.create_pipeline(
            attacks=DEFAULT_ATTACKS, peer_attacks=DEFAULT_PEER_ATTACKS, peers=DEFAULT_PEERS
        )
        + cgd_robustness.create_pipeline(attacks=DEFAULT_ROBUSTNESS_ATTACKS)
        + abd_defense.create_pipeline(namespaces=list(DEFAULT_CLIP_ATTACKS))
        + pipelines["reporting"]
    )
    return {name: tag_pipeline(pipeline) for name, pipeline in pipelines.items()}
