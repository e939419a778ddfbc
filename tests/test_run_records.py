"""Run records: inputs come from complete runs unless the user says otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.io.core import Version

from cgd_kedro.datasets import JSONDataset
from cgd_kedro.run_records import (
    COMPLETE,
    FAILED,
    RUNNING,
    InconsistentInputsError,
    RunRecords,
    choose_input_versions,
)

OLD, NEW, NEWEST = (
    "2026-01-01T00.00.00.000Z",
    "2026-01-02T00.00.00.000Z",
    "2026-01-03T00.00.00.000Z",
)


def _save(tmp_path: Path, name: str, version: str, value) -> None:
    JSONDataset(filepath=str(tmp_path / f"{name}.json"), version=Version(None, version)).save(value)


def _catalog(tmp_path: Path, *names: str, load_versions: dict | None = None) -> DataCatalog:
    load_versions = load_versions or {}
    return DataCatalog(
        {
            name: JSONDataset(
                filepath=str(tmp_path / f"{name}.json"),
                version=Version(load_versions.get(name), None),
            )
            for name in names
        }
    )


def _record(records: RunRecords, version: str, status: str, inputs: dict | None = None) -> None:
    records.write(version, {"status": status, "inputs": inputs or {}, "outputs": {}})


def test_a_killed_runs_newer_version_is_skipped_for_the_complete_one(tmp_path, caplog):
    records = RunRecords(tmp_path)
    _save(tmp_path, "train_set", OLD, {"n": 300})
    _save(tmp_path, "train_set", NEW, {"n": 8000})
    _record(records, OLD, COMPLETE)
    _record(records, NEW, RUNNING)  # killed: never marked complete
    catalog = _catalog(tmp_path, "train_set")
    with caplog.at_level(logging.WARNING):
        chosen = choose_input_versions(catalog, ["train_set"], records)
    assert chosen["train_set"].version == OLD and chosen["train_set"].skipped == (NEW,)
    assert catalog.load("train_set") == {"n": 300}
    assert f"skipped the newer version(s) {NEW}" in caplog.text


def test_every_version_incomplete_stops_with_a_message_naming_the_input(tmp_path):
    records = RunRecords(tmp_path)
    _save(tmp_path, "train_set", NEW, {"n": 1})
    _save(tmp_path, "victim_model", OLD, {"n": 1})
    _record(records, NEW, FAILED)
    _record(records, OLD, COMPLETE)
    with pytest.raises(
        InconsistentInputsError,
        match=rf"train_set \(versions {NEW}, run status: failed\).*runtime.resume_run",
    ):
        choose_input_versions(
            _catalog(tmp_path, "train_set", "victim_model"), ["train_set", "victim_model"], records
        )


def test_resume_run_reads_the_incomplete_run_and_its_completion_vouches_for_it(tmp_path):
    records = RunRecords(tmp_path)
    _save(tmp_path, "train_set", OLD, {"n": 300})
    _save(tmp_path, "train_set", NEW, {"n": 8000})
    _record(records, OLD, COMPLETE)
    _record(records, NEW, RUNNING)
    with pytest.raises(InconsistentInputsError, match="no run with that version"):
        choose_input_versions(
            _catalog(tmp_path, "train_set"),
            ["train_set"],
            records,
            resume_run="2020-01-01T00.00.00.000Z",
        )
    catalog = _catalog(tmp_path, "train_set")
    chosen = choose_input_versions(catalog, ["train_set"], records, resume_run=NEW)
    assert chosen["train_set"].version == NEW and chosen["train_set"].source == "resumed run"
    assert catalog.load("train_set") == {"n": 8000}
    # The resuming run completes: a later run may read what it read from the killed one.
    filepath = str(catalog.get("train_set")._filepath)
    _record(records, NEWEST, COMPLETE, {"train_set": {"filepath": filepath, "version": NEW}})
    later = choose_input_versions(_catalog(tmp_path, "train_set"), ["train_set"], records)
    assert later["train_set"].version == NEW and later["train_set"].source == "resumed run"


def test_pinned_and_unrecorded_versions(tmp_path, caplog):
    records = RunRecords(tmp_path)
    _save(tmp_path, "a", OLD, 1)
    _save(tmp_path, "a", NEW, 2)
    _save(tmp_path, "b", NEWEST, 3)  # written before run records existed (no record): usable
    _record(records, NEW, RUNNING)
    catalog = _catalog(tmp_path, "a", "b", load_versions={"a": NEW})
    with caplog.at_level(logging.WARNING):
        chosen = choose_input_versions(catalog, ["a", "b", "parameters"], records)
    assert chosen["a"].source == "pinned by --load-versions" and catalog.load("a") == 2
    assert f"a: reading version {NEW}, pinned by --load-versions" in caplog.text
    assert chosen["b"].source == "no run record" and catalog.load("b") == 3
    assert "parameters" not in chosen


def test_an_unreadable_record_counts_as_incomplete(tmp_path):
    records = RunRecords(tmp_path)
    _save(tmp_path, "a", OLD, 1)
    records.folder.mkdir(parents=True)
    (records.folder / f"{OLD}.json").write_text("{trunc")
    with pytest.raises(InconsistentInputsError, match="run status: unreadable"):
        choose_input_versions(_catalog(tmp_path, "a"), ["a"], records)
