"""``kedro grid``: run a grid spec's cells on a Dask cluster, resumably,
each failure kept to its cell.

1. The spec is read and checked in full (``grid.spec``) and the cluster reached (a local one is
   started) before any cell starts.
2. Cells already complete are skipped (the cell's folder name is a hash of its definition, so a
   changed spec makes new cells); cells that failed before are skipped unless ``rerun_failed``,
   which retries only them; interrupted ones (a killed grid) run again.
3. Each cell is one Dask task (``grid.cells.run_cell``), one GPU each where workers have GPUs, the
   first cell of each (env, seed) first (it fills the shared model cache), submitted as workers
   free up (``cluster.submit_as_workers_free``); a progress bar counts the cells and a failing
   cell's log tail is printed while the others go on.
4. The complete cells are summarised (``reporting.grid``): mean ± std over seeds per (env, attack,
   defense, sweep values), a figure per sweep, an HTML report.
5. The grid is an MLflow run and each cell's run is its child (``cgd_kedro.tracking``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from cgd_kedro.cluster import (
    Job,
    cell_slots,
    load_dask_config,
    open_client,
    submit_as_workers_free,
    workers_have_gpus,
)
from cgd_kedro.grid.cells import cell_dir, grid_root, prepare_cell, read_state, run_cell
from cgd_kedro.grid.spec import Cell, check_spec, expand_cells, load_spec
from cgd_kedro.reporting.grid import format_summary, write_grid_report
from cgd_kedro.tracking import close_grid_run, open_grid_run


@dataclass
class GridResult:
    root: Path
    cells: list[Cell]
    ran: list[dict] = field(default_factory=list)  # run_cell's results, in completion order
    skipped: list[str] = field(default_factory=list)  # complete before this call
    failed: list[str] = field(default_factory=list)  # failed (this call or before, not retried)
    summary: pd.DataFrame | None = None
    wall_seconds: float = 0.0


def recorded_status(root: Path, cells: list[Cell]) -> dict[str, str]:
    """Each cell's status from its ``cell.json`` ("not run" without one)."""
    return {
        cell.id: (read_state(cell_dir(root, cell)) or {}).get("status", "not run") for cell in cells
    }


def plan(
    cells: list[Cell], root: Path, rerun_failed: bool, statuses: dict[str, str] | None = None
) -> tuple[list[Cell], list[str], list[str]]:
    """``(to run, complete, failed and not retried)`` from each cell's recorded status."""
    statuses = statuses or recorded_status(root, cells)
    todo, complete, failed = [], [], []
    for cell in cells:
        status = statuses[cell.id]
        if status == "complete":
            complete.append(cell.id)
        elif status == "failed" and not rerun_failed:
            failed.append(cell.id)
        elif status == "failed" or not rerun_failed:
            todo.append(cell)
    return todo, complete, failed


def run_grid(
    spec_path: str | Path,
    project_path: str | Path = ".",
    *,
    cluster: str | None = None,
    workers: int | None = None,
    rerun_failed: bool = False,
    dry_run: bool = False,
    env: str | None = None,
    echo: Callable[[str], None] = print,
    cell_timeout_s: float | None = None,
) -> GridResult:
    """Run the grid of ``spec_path`` (see the module docstring); ``cluster``: ``local``, ``slurm``
    or a scheduler address (None: ``dask.yml``'s)."""
    spec = load_spec(spec_path)
    cells = expand_cells(spec)
    check_spec(spec, project_path, cells)
    root = grid_root(project_path, spec.name)
    statuses = recorded_status(root, cells)
    todo, complete, failed = plan(cells, root, rerun_failed, statuses)
    result = GridResult(root, cells, skipped=complete, failed=failed)
    # with --rerun-failed: cells never run, left for a plain run
    left = len(cells) - len(todo) - len(complete) - len(failed)
    echo(
        (
            f"grid {spec.name}: {len(cells)} cells; {len(complete)} complete, "
            f"{len(failed)} failed before"
        )
        + (" (--rerun-failed retries them)" if failed else "")
        + f", {len(todo)} to run"
        + (f", {left} not run yet (a run without --rerun-failed runs them)" if left else "")
        + (f"; outputs under {root}")
    )
    if dry_run:
        for cell in cells:
            echo(f"  {cell.id}: {statuses[cell.id]}{' -> runs' if cell in todo else ''}")
        return result
    started = time.perf_counter()
    tracking = open_grid_run(project_path, root, spec.name) if todo else None
    if todo:
        dask_config = load_dask_config(project_path, env)
        with open_client(dask_config, cluster, workers) as client:
            echo(f"dask dashboard: {client.dashboard_link}")
            gpus = workers_have_gpus(
                client, slurm_gpus=dask_config.slurm.gpus if cluster == "slurm" else 0
            )
            # The first cell of each (env, seed) goes first: it fills the grid's model cache (the
            # reference CLIP, the clean model) that the cell's other runs then reuse.
            leaders = {(cell.env, cell.seed): cell for cell in reversed(todo)}
            ordered = sorted(todo, key=lambda c: leaders[(c.env, c.seed)] is not c)  # stable
            jobs = [
                Job(
                    cell,
                    run_cell,
                    (str(prepare_cell(project_path, root, cell, tracking)), cell_timeout_s),
                    key=f"cell-{cell.id}-{time.time_ns()}",
                    resources={"GPU": 1} if gpus else None,
                )
                for cell in ordered
            ]
            with tqdm(total=len(jobs), desc=f"grid {spec.name}", unit="cell") as bar:
                for cell, future, seconds in submit_as_workers_free(
                    client, jobs, lambda: cell_slots(client, gpus)
                ):
                    outcome = future.result() | {"total_seconds": seconds}
                    result.ran.append(outcome)
                    if outcome["status"] != "complete":
                        result.failed.append(cell.id)
                        bar.write(
                            (
                                f"cell {cell.id} failed (exit {outcome['returncode']}); log: "
                                f"{cell_dir(root, cell) / 'run.log'}\n"
                            )
                            + outcome["log_tail"]
                        )
                    bar.update(1)
    result.wall_seconds = time.perf_counter() - started
    result.summary = write_grid_report(root, spec.name, cells, list(spec.sweep), result.failed)
    reports = [
        root / "grid_summary.csv",
        root / "grid_cells.csv",
        root / "grid_report.html",
        *sorted(root.glob("grid_*.png")),
    ]
    close_grid_run(tracking, reports, len(result.failed))
    if len(result.summary):
        echo(format_summary(result.summary, list(spec.sweep)).to_string(index=False))
    echo(
        f"summary: {root / 'grid_summary.csv'}; report: {root / 'grid_report.html'}"
        + (
            f"; {len(result.failed)} cell(s) failed: {', '.join(result.failed)}"
            if result.failed
            else ("")
        )
    )
    return result
