"""Wall time and peak resident memory of a command
(by default the main job, ``kedro run``), repeated.

Each repetition runs the command as a child process; its peak RSS is the child's ``ru_maxrss``
(the largest process of the run: Kedro runs nodes in-process). The slowest nodes come from the
run's own log line ("Run finished in ... slowest nodes"). Prints one row per repetition and the
median.

    python benchmarks/run_cost.py [--repeat 2] [--fresh]
        [-- kedro run --env cifar10 --params dataset.root=...]

``--fresh`` deletes the model cache (``data/06_models/<dataset>/cache``) before the first
repetition, so the first run pays for the embedded CLIP's pretraining as a new user's does.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(command: list[str]) -> tuple[float, float, list[str]]:
    """(wall seconds, peak RSS in GiB, the run's slowest-node lines) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "1"},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    # KiB -> GiB (a max over children so far)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    log = re.sub(r"\s+", " ", done.stdout + done.stderr)
    slowest = (
        re.findall(r"(\d+\.\d) s +\d+\.\d % +([\w.]+)", log.split("slowest nodes:")[-1])[:5]
        if "slowest nodes:" in log
        else []
    )
    return seconds, peak, [f"{name} {secs} s" for secs, name in slowest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--fresh", action="store_true", help="delete data/06_models/*/cache before the first run"
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="after --: the command (default: kedro run)"
    )
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] or ["kedro", "run"]
    if args.fresh:
        for cache in ROOT.glob("data/06_models/*/cache"):
            shutil.rmtree(cache)
    print(f"command: {' '.join(command)}; {os.cpu_count()} CPU cores\n")
    print("| run | wall (min) | peak RSS (GiB, max so far) | slowest nodes |\n|---|---|---|---|")
    walls = []
    for index in range(1, args.repeat + 1):
        seconds, peak, slowest = run_once(command)
        walls.append(seconds)
        print(f"| {index} | {seconds / 60:.1f} | {peak:.2f} | {'; '.join(slowest)} |", flush=True)
    print(f"\nmedian wall time: {statistics.median(walls) / 60:.1f} min over {len(walls)} runs")


if __name__ == "__main__":
    main()
