"""The same small grid with 1 and with 2 Dask workers, side by side: wall time, speedup, and Dask's
overhead per cell.

    python benchmarks/grid_speedup.py [--workers 1 2] [--attacks badnets blended sig lc]
        [--seeds 0 1] [--epochs 2]

Each run is a fresh grid (``data/09_grid/speedup-w<N>-<time>``, deleted afterwards unless
``--keep``) of the ``poison`` pipeline (world + victim) on the embedded world with short budgets,
on a LocalCluster of N workers, each with its share of the cores. Overhead per cell = (the
1-worker grid's wall time - the sum of its cells' own run times) / cells: what starting the
cluster, scheduling, and starting each cell's process add. Idle tail: how long the first worker
to run out of cells waited for the last (cells of unequal length on few workers). Prints each
grid's timeline and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from cgd_kedro.grid.run import run_grid

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--attacks", nargs="+", default=["badnets", "blended", "sig", "bpp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=2, help="victim training epochs per cell")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--keep", action="store_true", help="keep the grids' folders")
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    rows = []
    for workers in args.workers:
        name = f"speedup-w{workers}-{stamp}"
        spec = {
            "grid": {
                "name": name,
                "envs": ["base"],
                "pipelines": ["poison"],
                "shared_namespaces": ["dataset"],
                "namespaces": args.attacks,
                "seeds": args.seeds,
                "params": {
                    "victim": {"training": {"epochs": args.epochs}},
                    "dataset": {"world": {"n_train": args.n_train, "n_test": args.n_train // 4}},
                },
            }
        }
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as file:
            yaml.safe_dump(spec, file, sort_keys=False)
        result = run_grid(file.name, ROOT, cluster="local", workers=workers, echo=lambda _: None)
        os.unlink(file.name)
        if result.failed:
            raise SystemExit(
                f"{workers} worker(s): cells failed: {result.failed} (logs under {result.root})"
            )
        cell_seconds = [r["seconds"] for r in result.ran]
        rows.append(
            (workers, result.wall_seconds, sum(cell_seconds), len(cell_seconds), tail(result.root))
        )
        for cell in timeline(result.root):
            print(f"  {workers} worker(s): {cell}")
        if not args.keep:
            shutil.rmtree(result.root)
    base_wall = rows[0][1]
    print(
        f"{len(args.attacks)} attacks x {len(args.seeds)} seeds, poison with {args.epochs} victim "
        f"epochs on {args.n_train} embedded images per cell; {os.cpu_count()} CPU cores\n"
    )
    print(
        "| workers | wall (s) | sum of cell run times (s) | cells | speedup | overhead per cell "
        "(s) | idle tail (s) |\n|---|---|---|---|---|---|---|"
    )
    for workers, wall, cells_total, count, idle in rows:
        overhead = (wall - cells_total) / count if workers == 1 else float("nan")
        print(
            f"| {workers} | {wall:.1f} | {cells_total:.1f} | {count} | {base_wall / wall:.2f}x | "
            + (f"{overhead:.1f} |" if workers == 1 else "- |")
            + f" {idle:.1f} |"
        )


def _cells(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (root / "cells").glob("*/cell.json")]


def timeline(root: Path) -> list[str]:
    """Each cell's worker, start and end (seconds after the first start), and its id."""
    cells = sorted(_cells(root), key=lambda c: c["started"])
    first = cells[0]["started"]
    return [
        f"{c['worker']}: {c['started'] - first:6.1f} -> {c['finished'] - first:6.1f} s  "
        f"{c['definition']['attack']} seed {c['definition']['seed']}"
        for c in cells
    ]


def tail(root: Path) -> float:
    """How long the first worker to run out of cells waited for the last one (0 with one worker):
    the part of the wall time that more cells per worker would amortise."""
    ends: dict[str, float] = {}
    for cell in _cells(root):
        ends[cell["worker"]] = max(ends.get(cell["worker"], 0.0), cell["finished"])
    return max(ends.values()) - min(ends.values())


if __name__ == "__main__":
    main()
