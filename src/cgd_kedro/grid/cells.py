"""A grid cell on disk, and running it.

Each cell lives in ``data/09_grid/<grid>/cells/<cell id>/``, a Kedro project folder of its own
(``conf`` is a link to the project's configuration, ``pyproject.toml`` a copy), so its outputs,
versions and run records never mix with another cell's or the project's:

- ``cell.json``: the cell's definition and its state (``running``, ``complete`` or ``failed``,
  seconds, exit code, the Dask worker);
- ``run.log``: the session's output;
- ``data/``: the session's catalog outputs.

``run_cell`` is the Dask task: it starts ``python -m cgd_kedro.grid.session <cell folder>`` (one
Kedro session in its own process, so a crash or an out-of-memory kill stays in the cell), with the
worker's share of the cores (``OMP_NUM_THREADS``) and, on a GPU worker, its GPU
(``CUDA_VISIBLE_DEVICES``). It never raises: a failure is recorded and returned.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cgd_kedro.datasets.atomic import save_text
from cgd_kedro.grid.spec import Cell

CELL_FILE = "cell.json"
LOG_FILE = "run.log"


def grid_root(project_path: str | Path, name: str) -> Path:
    return Path(project_path).resolve() / "data" / "09_grid" / name


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / "cells" / cell.id


def read_state(folder: Path) -> dict | None:
    """The cell's ``cell.json``, or None if it never started (or the file is unreadable)."""
    try:
        return json.loads((folder / CELL_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_state(folder: Path, state: dict) -> None:
    save_text(folder / CELL_FILE, json.dumps(state, indent=2, default=str))


def prepare_cell(
    project_path: str | Path, root: Path, cell: Cell, tracking: dict | None = None
) -> Path:
    """The cell's folder, made a Kedro project that reads the project's configuration;
    ``tracking``: the grid's MLflow run, the parent of the cell's (``cgd_kedro.tracking``)."""
    project = Path(project_path).resolve()
    folder = cell_dir(root, cell)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "conf").exists():
        (folder / "conf").symlink_to(project / "conf", target_is_directory=True)
    shutil.copy(project / "pyproject.toml", folder / "pyproject.toml")
    # bootstrap_project checks it exists; the package is installed
    (folder / "src").mkdir(exist_ok=True)
    (folder / ".telemetry").write_text("consent: false\n")
    state = read_state(folder) or {}
    write_state(
        folder,
        {
            "definition": cell.definition(),
            "status": state.get("status", "pending"),
            "cache_dir": str(root / "cache"),
            "tracking": tracking,
        },
    )
    return folder


def run_cell(folder: str, timeout_s: float | None = None) -> dict:
    """Run the cell in ``folder`` in a new process; record and return ``{id, status, seconds,
    returncode, worker, log_tail}``."""
    from cgd_kedro.cluster import worker_gpu

    path = Path(folder)
    state = read_state(path) or {}
    worker = _worker_name()
    started = time.perf_counter()
    state = state | {"status": "running", "worker": worker, "started": time.time()}
    write_state(path, state)
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
    gpu = worker_gpu() if worker else None
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    with open(path / LOG_FILE, "w") as log:
        try:
            returncode = subprocess.run(
                [sys.executable, "-m", "cgd_kedro.grid.session", str(path)],
                cwd=path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # same process group as the worker: killing the grid ends its cells too
                timeout=timeout_s,
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = -9
    seconds = time.perf_counter() - started
    status = "complete" if returncode == 0 else "failed"
    tail = "" if returncode == 0 else _tail(path / LOG_FILE)
    write_state(
        path,
        state
        | {
            "status": status,
            "seconds": seconds,
            "returncode": returncode,
            "finished": time.time(),
        }
        | ({"error": tail} if tail else {}),
    )
    return {
        "id": path.name,
        "status": status,
        "seconds": seconds,
        "returncode": returncode,
        "worker": worker,
        "log_tail": tail,
    }


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return None


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
