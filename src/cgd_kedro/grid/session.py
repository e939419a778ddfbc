"""``python -m cgd_kedro.grid.session <cell folder>``: one grid cell's Kedro session.

Reads the cell's ``cell.json`` and runs its pipelines and namespaces with its parameter overrides,
exactly as ``kedro run --env <env> --pipelines <...> --namespaces <...> --params <...>`` would in
that folder; the model cache is the grid's (``runtime.cache_dir``), shared by its cells, and its
MLflow run is a child of the grid's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cgd_kedro.grid.spec import merge
from cgd_kedro.tracking import cell_run


def run(folder: Path) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    state = json.loads((folder / "cell.json").read_text())
    cell = state["definition"]
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    os.chdir(folder)
    bootstrap_project(folder)
    params = merge(cell["params"], {"runtime": {"cache_dir": state["cache_dir"]}})
    env = None if cell["env"] == "base" else cell["env"]
    # the cell's MLflow run (a child of the grid's) is opened first: kedro-mlflow logs into it
    with (
        cell_run(state.get("tracking"), folder.name),
        KedroSession.create(project_path=folder, env=env, runtime_params=params) as session,
    ):
        session.run(pipeline_names=cell["pipelines"], namespaces=cell["namespaces"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m cgd_kedro.grid.session <cell folder>")
    run(Path(sys.argv[1]).resolve())
