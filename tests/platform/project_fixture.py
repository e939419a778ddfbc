"""The platform tests' fixture (imported by them, not a conftest): a throw-away project with tiny
parameters (conf/local) and the upstream artefacts of BadNets (world, poisoned set, victim,
reference CLIP, split), shared by the platform tests of a module."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

# the pipeline tests' tiny parameters
sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))

from test_cgd_unlearn_pipeline import TINY_DEFENSES
from test_clip_split_pipeline import tiny_clip_parameters

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = tiny_clip_parameters() | TINY_DEFENSES


def files(root: Path) -> dict[str, float]:
    """Every file under ``root`` with its modification time."""
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def platform_project(tmp_path_factory) -> Path:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = tmp_path_factory.mktemp("platform_project")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    # every run of this project is tiny
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(TINY))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / ".telemetry").write_text("consent: false\n")
    (root / "src").mkdir()
    bootstrap_project(root)
    with KedroSession.create(project_path=root) as session:
        session.run(
            pipeline_names=["poison", "reference_clip", "clip_split"],
            namespaces=["dataset", "clip", "badnets"],
        )
    return root
