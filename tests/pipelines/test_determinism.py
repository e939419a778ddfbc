"""Same seed, same device: `poison`, `clip_split` and `cgd_unlearn` write byte-identical artefacts.

Two complete runs in one project (the model cache off, so the second run recomputes everything)
and a file-by-file sha256 comparison of what each wrote. The only allowed differences are
wall-clock measurements in JSON metrics (keys ``seconds``, ``*_seconds``, ``*_per_second``; README
"Reproducibility").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from test_cgd_unlearn_pipeline import TINY_DEFENSES
from test_clip_split_pipeline import tiny_clip_parameters

from cgd_kedro.run_records import RunRecords

PIPELINES = ["poison", "reference_clip", "clip_split", "cgd_unlearn"]


def _is_timing(key: str) -> bool:
    """Wall-clock measurements (seconds, reporting_seconds, scoring_images_per_second):
    the one thing a rerun may not repeat."""
    return key == "seconds" or key.endswith(("_seconds", "_per_second"))


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not _is_timing(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _fingerprint(path: Path) -> str:
    if path.suffix == ".json":
        return json.dumps(_without_timings(json.loads(path.read_text())), sort_keys=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_two_runs_with_the_same_seed_write_identical_files(tmp_project):
    params = tiny_clip_parameters() | TINY_DEFENSES
    params["runtime"] |= {"cache_dir": None}
    bootstrap_project(tmp_project)
    for _ in range(2):
        with KedroSession.create(project_path=tmp_project, runtime_params=params) as session:
            session.run(pipeline_names=PIPELINES, namespaces=["dataset", "clip", "badnets"])
    first, second = sorted(RunRecords(tmp_project).read_all().items())
    assert first[1]["status"] == second[1]["status"] == "complete"
    assert set(first[1]["outputs"]) == set(second[1]["outputs"])
    compared, differing = 0, []
    for name, entry in sorted(first[1]["outputs"].items()):
        folder = tmp_project / entry["filepath"]
        files = sorted(
            p.relative_to(folder / first[0]) for p in (folder / first[0]).rglob("*") if p.is_file()
        )
        assert files, name
        for relative in files:
            compared += 1
            if _fingerprint(folder / first[0] / relative) != _fingerprint(
                folder / second[0] / relative
            ):
                differing.append(f"{name}/{relative}")
    assert compared >= 30 and differing == []
    # Models and tensors are compared byte for byte (safetensors headers
    # are written in a fixed order).
    assert any(
        entry["filepath"].endswith("victim_model.safetensors")
        for entry in first[1]["outputs"].values()
    )
