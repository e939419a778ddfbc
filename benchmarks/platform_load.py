"""Latency of the web platform under concurrent page requests and job submissions (loopback only).

Starts the platform on 127.0.0.1 (a free port) over a project, waits until it answers, then sends
``--rounds`` rounds of ``--concurrency`` simultaneous requests: the pages of the site and, with
``--submissions``, Run-form submissions (each then cancelled, so no pipeline actually runs for
long). Prints p50 / p95 / max latency and the error count per request kind.

    python benchmarks/platform_load.py [--project .] [--concurrency 20] [--rounds 5]
        [--submissions 5]

The cancelled submissions stay listed on the Runs page (data/09_platform/jobs/).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PAGES = ("/", "/experiments", "/leaderboard", "/runs", "/submit")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, data: bytes | None = None, method: str | None = None) -> tuple[float, int]:
    """(seconds, HTTP status; 0 for a connection error) of one request, redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    started = time.perf_counter()
    try:
        with urllib.request.build_opener(NoRedirect).open(
            urllib.request.Request(url, data=data, method=method), timeout=120
        ) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0
    return time.perf_counter() - started, status


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--env", default=None)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--submissions", type=int, default=5, help="Run-form submissions per round (each cancelled)"
    )
    args = parser.parse_args()
    if not 1 <= args.concurrency <= 200:
        raise SystemExit(
            "--concurrency: between 1 and 200 (this is a loopback benchmark, not a stress tool)"
        )
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

    import uvicorn
    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.platform.app import create_app

    project = args.project.resolve()
    bootstrap_project(project)
    port = _free_port()
    app = create_app(project, args.env)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    while _request(base + "/runs")[1] != 200:
        if time.perf_counter() - started > 120:
            raise SystemExit("the platform did not answer within 120 s")
        time.sleep(0.2)
    cold, _ = _request(base + "/")  # the first overview may wait for the catalog view to be built
    print(
        f"platform on {base} over {project.name}/ ({os.cpu_count()} CPU cores); first GET / "
        f"{cold * 1000:.0f} ms\n"
    )

    results: dict[str, list[tuple[float, int]]] = {}
    form = urllib.parse.urlencode({"run": "reporting", "namespaces": "", "params": ""}).encode()
    for _ in range(args.rounds):
        kinds = [
            ("GET " + PAGES[i % len(PAGES)], base + PAGES[i % len(PAGES)], None)
            for i in range(args.concurrency - args.submissions)
        ]
        kinds += [("POST /runs", base + "/runs", form)] * min(args.submissions, args.concurrency)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            outcomes = list(pool.map(lambda kind: (kind[0], _request(kind[1], kind[2])), kinds))
        for name, outcome in outcomes:
            results.setdefault(name, []).append(outcome)
    for job_id in list(app.state.jobs.jobs):  # no submitted run is left behind
        _request(f"{base}/api/jobs/{job_id}", method="DELETE")

    print("| request | n | p50 (ms) | p95 (ms) | max (ms) | errors |\n|---|---|---|---|---|---|")
    everything = []
    for name, outcomes in sorted(results.items()):
        seconds = [s for s, _ in outcomes]
        errors = sum(1 for _, status in outcomes if status not in (200, 303))
        everything += outcomes
        print(
            f"| {name} | {len(outcomes)} | {statistics.median(seconds) * 1000:.0f} | "
            f"{_percentile(seconds, 0.95) * 1000:.0f} | {max(seconds) * 1000:.0f} | {errors} |"
        )
    seconds = [s for s, _ in everything]
    errors = sum(1 for _, status in everything if status not in (200, 303))
    print(
        f"| all ({args.concurrency} concurrent) | {len(everything)} | "
        f"{statistics.median(seconds) * 1000:.0f} | {_percentile(seconds, 0.95) * 1000:.0f} | "
        f"{max(seconds) * 1000:.0f} | {errors} |"
    )
    server.should_exit = True


if __name__ == "__main__":
    main()
