"""Refuse a run whose inputs are not there, before its first node.

A run narrowed with ``--pipelines``/``--namespaces``/``--from-nodes`` reads what earlier runs saved.
Kedro notices a missing one only when a node loads it, which can be an hour in (``poison`` trains
the victim, then ``clip_split`` finds no ``reference_clip``). ``check_inputs_exist`` looks at every
free input first and names each missing one with the node, pipeline and namespace that make it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kedro.io import AbstractVersionedDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline


class MissingInputsError(RuntimeError):
    """Inputs of a run that no earlier run saved and no node of the run makes."""


@dataclass(frozen=True)
class MissingInput:
    name: str
    where: str  # the file it would be read from, or "memory"


def missing_inputs(catalog: DataCatalog, names: Iterable[str]) -> list[MissingInput]:
    """The datasets of ``names`` with nothing to load.

    Checked: file datasets (versioned or not: nothing saved at the path or version to be read) and
    in-memory ones (empty). Parameters, names outside the catalog (Kedro reports those itself) and
    folder datasets such as ``PartitionedDataset`` (an empty folder is a valid, empty input) pass.
    """
    missing = []
    for name in sorted(names):
        if name == "parameters" or name.startswith("params:"):
            continue
        dataset = catalog.get(name)
        if isinstance(dataset, MemoryDataset):
            where = "memory"
        elif isinstance(dataset, AbstractVersionedDataset):
            where = str(dataset._filepath)
        else:
            continue
        if not dataset.exists():
            missing.append(MissingInput(name, where))
    return missing


def producers(
    name: str, pipelines: Mapping[str, Pipeline]
) -> dict[str, tuple[list[str], str | None]]:
    """``{node: (pipelines, top-level namespace)}`` for every node of ``pipelines`` that outputs
    ``name``; a node's pipelines in the order of ``pipelines``."""
    found: dict[str, tuple[list[str], str | None]] = {}
    for pipeline_name, pipeline in pipelines.items():
        for node in pipeline.nodes:
            if name in node.outputs:
                namespace = node.namespace.split(".")[0] if node.namespace else None
                found.setdefault(node.name, ([], namespace))[0].append(pipeline_name)
    return found


def check_inputs_exist(
    catalog: DataCatalog, pipeline: Pipeline, pipelines: Callable[[], Mapping[str, Pipeline]]
) -> None:
    """Raise ``MissingInputsError`` listing every free input of ``pipeline`` with nothing to load.

    ``pipelines``: returns the project's pipelines, one per package, in order of preference (the
    suggested command names each making node's first pipeline); called only when something is
    missing, to find the nodes that make it, so that the error says what to run.
    """
    missing = missing_inputs(catalog, pipeline.inputs())
    if not missing:
        return
    project = pipelines()
    lines, to_run, namespaces = [], set(), set()
    for item in missing:
        made_by = producers(item.name, project)
        saved = (
            "kept in memory only, so this run must make it"
            if item.where == "memory"
            else f"nothing saved at {item.where}"
        )
        by = (
            "; ".join(
                f"node {node} (pipeline {' or '.join(pipes)}"
                + (f", namespace {namespace})" if namespace else ")")
                for node, (pipes, namespace) in sorted(made_by.items())
            )
            or "no pipeline of the project makes it"
        )
        lines.append(f"  - {item.name}: {saved}; made by {by}")
        to_run |= {pipes[0] for pipes, _ in made_by.values()}
        namespaces |= {namespace for _, namespace in made_by.values() if namespace}
    command = f"--pipelines {','.join(sorted(to_run))}" + (
        f" --namespaces {','.join(sorted(namespaces))}" if namespaces else ""
    )
    raise MissingInputsError(
        f"{len(missing)} input(s) of this run have nothing to load, and no node of the run makes "
        f"them: {', '.join(item.name for item in missing)}\n"
        + "\n".join(lines)
        + f"\nRun what makes them first (`kedro run {command}`, with this run's --env and "
        "--params), or add those pipelines and namespaces to this run. Nothing was run or written."
    )
