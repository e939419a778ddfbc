"""Run records: which versions a run wrote and read, and whether it finished.

Kedro gives every output of one run the same version (the session id) but resolves each input's
"latest" version on its own, so a run killed half-way leaves a newer version of some datasets
that a later run would combine with older versions of the others. Here every run writes a record
``data/09_runs/<version>.json``: ``running`` when it starts, ``complete`` (with the versions it
wrote) when its last node has saved, ``failed`` when a node raises. A run killed outright stays
``running``.

Before a run starts, each versioned input it reads from an earlier run is pinned to the newest
version that is *usable*:

- written by a run whose record says ``complete``;
- or read by a complete run that resumed an incomplete one (``runtime.resume_run``);
- or written outside any recorded run (older outputs, files put there by hand).

Newer versions of incomplete runs are skipped with a warning that names them; if an input has
no usable version at all, the run stops before its first node with a message naming the input
and how to resume. Versions pinned by the user (``--load-versions``) are respected and reported.
Every record lists, per input, the version read and why, so a table can be traced to its inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from kedro.io import DataCatalog
from kedro.io.core import AbstractVersionedDataset, Version

from cgd_kedro.datasets.atomic import save_text

log = logging.getLogger(__name__)

RUNS_FOLDER = Path("data") / "09_runs"
COMPLETE, RUNNING, FAILED = "complete", "running", "failed"


class InconsistentInputsError(RuntimeError):
    """An input of the run exists only in versions written by runs that did not complete."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class InputVersion:
    """The version of one input the run reads, and why that one."""

    version: str
    source: str  # "complete run" | "resumed run" | "pinned by --load-versions" | "no run record"
    skipped: tuple[str, ...] = ()  # newer versions of incomplete runs that were passed over

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source} | (
            {"skipped_incomplete": list(self.skipped)} if self.skipped else {}
        )


class RunRecords:
    """The run records of one project (``<project>/data/09_runs``)."""

    def __init__(self, project_path: str | Path) -> None:
        self.folder = Path(project_path) / RUNS_FOLDER

    def read_all(self) -> dict[str, dict]:
        """Every readable record by run version (an unreadable one is skipped with a warning)."""
        records = {}
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                records[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                log.warning(
                    "run record %s is unreadable (%s); its run counts as incomplete",
                    path.name,
                    error,
                )
                records[path.stem] = {"status": "unreadable"}
        return records

    def write(self, version: str, record: dict) -> None:
        save_text(self.folder / f"{version}.json", json.dumps(record, indent=1, sort_keys=True))


def usable(records: dict[str, dict], filepath: str, version: str) -> str | None:
    """Why ``version`` of the file ``filepath`` may be read given the run ``records``
    (``read_all``): a source string, or None if it may not."""
    record = records.get(version)
    if record is None:
        return "no run record"
    if record.get("status") == COMPLETE:
        return "complete run"
    for other in records.values():
        if other.get("status") == COMPLETE and any(
            entry.get("filepath") == filepath and entry.get("version") == version
            for entry in other.get("inputs", {}).values()
        ):
            return "resumed run"
    return None


def _versioned(catalog: DataCatalog, name: str) -> AbstractVersionedDataset | None:
    dataset = catalog.get(name)
    return (
        dataset
        if isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None
        else None
    )


def choose_input_versions(
    catalog: DataCatalog, names: Iterable[str], records: RunRecords, resume_run: str | None = None
) -> dict[str, InputVersion]:
    """Pin each versioned dataset of ``names`` in ``catalog`` to its newest usable version.

    ``resume_run``: the version of an incomplete run whose outputs may be read (resuming it).
    Datasets with no saved version are left alone (``input_check`` then refuses the run).
    Raises ``InconsistentInputsError`` naming every input whose versions all come from runs that
    did not complete.
    """
    known = records.read_all()
    if resume_run is not None and resume_run not in known:
        raise InconsistentInputsError(
            f"runtime.resume_run = {resume_run!r}: no run with that version in {RUNS_FOLDER}"
        )
    chosen: dict[str, InputVersion] = {}
    blocked: list[str] = []
    for name in sorted(names):
        dataset = _versioned(catalog, name)
        if dataset is None:
            continue
        if dataset._version.load is not None:
            chosen[name] = InputVersion(dataset._version.load, "pinned by --load-versions")
            continue
        available = [PurePath(path).parent.name for path in dataset._get_versions()]  # newest first
        skipped: list[str] = []
        for version in available:
            source = (
                "resumed run"
                if version == resume_run
                else usable(known, str(dataset._filepath), version)
            )
            if source is not None:
                chosen[name] = InputVersion(version, source, tuple(skipped))
                # Kedro resolves an unpinned dataset to its newest
                # version; pin the chosen one instead.
                dataset._version = Version(version, dataset._version.save)
                dataset._clear_version_cache()
                break
            skipped.append(version)
        else:
            if skipped:
                blocked.append(
                    f"{name} (versions {', '.join(skipped)}, run status: "
                    f"{known.get(skipped[0], {}).get('status')})"
                )
    if blocked:
        raise InconsistentInputsError(
            "these inputs were only ever saved by runs that did not complete (killed or failed), "
            "so they may not match each other: "
            + "; ".join(blocked)
            + ". Re-run the pipelines that make "
            "them, or resume the incomplete run with `--params runtime.resume_run=<its "
            "version>` and `--from-nodes <the first node that did not finish>` (README: "
            "'Resuming a killed run')."
        )
    for name, entry in chosen.items():
        if entry.skipped:
            log.warning(
                "%s: skipped the newer version(s) %s of a run that did not "
                "complete; reading %s (%s)",
                name,
                ", ".join(entry.skipped),
                entry.version,
                entry.source,
            )
        elif entry.source == "pinned by --load-versions":
            log.warning("%s: reading version %s, pinned by --load-versions", name, entry.version)
    return chosen


def outputs_written(catalog: DataCatalog, names: Iterable[str], version: str) -> dict[str, dict]:
    """``{name: {filepath, version}}`` of the versioned datasets of ``names``
    saved at ``version``."""
    written = {}
    for name in sorted(names):
        dataset = _versioned(catalog, name)
        if dataset is not None and dataset._exists_function(
            str(dataset._get_versioned_path(version))
        ):
            written[name] = {"filepath": str(dataset._filepath), "version": version}
    return written


def describe_inputs(catalog: DataCatalog, chosen: dict[str, InputVersion]) -> dict[str, dict]:
    """The record's ``inputs``: per dataset, its file, the version read and why."""
    return {
        name: {"filepath": str(catalog.get(name)._filepath)} | entry.as_json()
        for name, entry in chosen.items()
    }


RUN_OPTIONS = (
    "env",
    "pipeline_names",
    "namespaces",
    "tags",
    "node_names",
    "from_nodes",
    "to_nodes",
    "load_versions",
    "runtime_params",
)


def start_record(run_params: dict, inputs: dict[str, dict]) -> dict:
    """A ``running`` record: the command's options and the inputs chosen for it."""
    return {
        "status": RUNNING,
        "started": _now(),
        "options": {key: run_params.get(key) for key in RUN_OPTIONS},
        "inputs": inputs,
        "outputs": {},
    }


def finish_record(
    record: dict, status: str, outputs: dict[str, dict], error: BaseException | None = None
) -> dict:
    """``record`` marked ``complete`` or ``failed``, with the outputs saved
    (and the error, if any)."""
    finished = record | {"status": status, "finished": _now(), "outputs": outputs}
    return finished | (
        {"error": f"{type(error).__name__}: {error}"[:2000]} if error is not None else {}
    )
