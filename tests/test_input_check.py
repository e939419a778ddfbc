"""A run whose inputs have nothing to load is refused before its first node, with what to run."""

from __future__ import annotations

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import Version
from kedro.pipeline import Pipeline, node
from kedro_datasets.partitions import PartitionedDataset

from cgd_kedro.datasets import JSONDataset, TensorDictDataset
from cgd_kedro.input_check import MissingInputsError, check_inputs_exist, missing_inputs


def _first(*inputs):
    return inputs[0]


def _catalog(tmp_path) -> DataCatalog:
    saved = JSONDataset(filepath=str(tmp_path / "saved.json"), version=Version(None, None))
    saved.save({"n": 1})
    return DataCatalog(
        {
            "saved": saved,
            "never_saved": TensorDictDataset(
                filepath=str(tmp_path / "never_saved.safetensors"), version=Version(None, None)
            ),
            "unversioned_missing": JSONDataset(filepath=str(tmp_path / "unversioned.json")),
            "in_memory_empty": MemoryDataset(),
            "in_memory_full": MemoryDataset(3),
            "empty_folder": PartitionedDataset(
                path=str(tmp_path / "parts"), dataset={"type": "pandas.CSVDataset"}
            ),
        }
    )


def test_only_inputs_with_nothing_to_load_are_missing(tmp_path):
    names = [
        "saved",
        "never_saved",
        "unversioned_missing",
        "in_memory_empty",
        "in_memory_full",
        "empty_folder",  # a folder of partitions may be empty
        "params:victim",
        "parameters",
        "not_in_the_catalog",  # Kedro reports those itself
    ]
    missing = missing_inputs(_catalog(tmp_path), names)
    assert [(m.name, m.where) for m in missing] == [
        ("in_memory_empty", "memory"),
        ("never_saved", str(tmp_path / "never_saved.safetensors")),
        ("unversioned_missing", str(tmp_path / "unversioned.json")),
    ]


def test_the_error_names_each_missing_input_its_maker_and_the_command_to_run(tmp_path):
    run = Pipeline([node(_first, ["never_saved", "in_memory_empty", "saved"], "out", name="u")])
    project = {
        # the preferred pipeline first: the command names it, not the second one
        "poison": Pipeline(
            [node(_first, "params:a", "never_saved", name="make", namespace="dataset")]
        ),
        "clip": Pipeline([node(_first, "params:b", "in_memory_empty", name="make_memory")]),
        "on_request": Pipeline(
            [node(_first, "params:c", "never_saved", name="make", namespace="dataset")]
        ),
    }
    with pytest.raises(MissingInputsError) as refused:
        check_inputs_exist(_catalog(tmp_path), run, lambda: project)
    message = str(refused.value)
    # the first line, all that a one-line summary (the platform's job list) shows, names them
    assert message.splitlines()[0] == (
        "2 input(s) of this run have nothing to load, and no node of the run makes them: "
        "in_memory_empty, never_saved"
    )
    assert (
        f"  - never_saved: nothing saved at {tmp_path / 'never_saved.safetensors'}; made by node "
        "dataset.make (pipeline poison or on_request, namespace dataset)" in message
    )
    assert (
        "  - in_memory_empty: kept in memory only, so this run must make it; made by node "
        "make_memory (pipeline clip)" in message
    )
    assert "`kedro run --pipelines clip,poison --namespaces dataset`" in message
    assert "  - saved:" not in message


def test_an_input_no_pipeline_makes_says_so(tmp_path):
    run = Pipeline([node(_first, "never_saved", "out")])
    with pytest.raises(MissingInputsError, match=r"never_saved: .* no pipeline of the project"):
        check_inputs_exist(_catalog(tmp_path), run, lambda: {})


def test_a_run_with_every_input_saved_passes_without_looking_up_pipelines(tmp_path):
    def must_not_be_called():
        raise AssertionError("the project's pipelines are built only when something is missing")

    run = Pipeline([node(_first, ["saved", "in_memory_full", "params:a"], "out")])
    check_inputs_exist(_catalog(tmp_path), run, must_not_be_called)


def test_a_session_run_missing_inputs_is_refused_before_any_node_and_writes_nothing(tmp_project):
    """``kedro run --pipelines poison,clip_split --namespaces badnets`` on a fresh data/: the world
    and the reference CLIP were never made, so the run would poison and train the victim and only
    then fail in clip_split; it is refused at once, naming the pipelines that make them."""
    bootstrap_project(tmp_project)
    with (
        KedroSession.create(project_path=tmp_project) as session,
        pytest.raises(MissingInputsError) as refused,
    ):
        session.run(pipeline_names=["poison", "clip_split"], namespaces=["badnets"])
    message = str(refused.value)
    for name in ("train_set", "test_set", "dataset_info", "reference_clip"):
        assert f"  - {name}: nothing saved at " in message, (name, message)
    assert "node clip.build_reference_clip (pipeline reference_clip, namespace clip)" in message
    assert "`kedro run --pipelines poison,reference_clip --namespaces clip,dataset`" in message
    written = [p for p in (tmp_project / "data").rglob("*") if p.is_file()]
    assert written == [], written  # no data, and no run record: the run never started
