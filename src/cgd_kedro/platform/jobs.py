"""Background jobs of the platform: pipeline runs and submission evaluations, one at a time, queued.

A pipeline run is ``kedro run`` in a child process of its own process group, so a failing or
crashing run cannot take the server down, and Kedro's versioning means it never overwrites an
earlier version: a failed run leaves every earlier output as it was. Each job keeps its state
(``job.json``) and its log (``log.txt``) in its own folder under the platform's folder in ``data/``.

Jobs are bounded and cancellable: ``cancel`` ends a queued job before it starts and a running
run's whole process group (SIGTERM, then SIGKILL after a grace period); a run over ``max_seconds``
is cancelled the same way; ``shutdown`` (the server stopping) cancels everything, and jobs a
previous server left queued or running are marked cancelled when the next one starts.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from cgd_kedro.datasets.atomic import save_text

# What the Run form offers: label -> the pipelines it runs.
RUNNABLE: dict[str, tuple[str, ...]] = {
    "poison": ("poison",),
    "split": ("reference_clip", "clip_split"),
    "cgd": ("cgd_unlearn",),
    "cgd_robustness": ("cgd_robustness",),
    "abd": ("abd_defense",),
    "reporting": ("reporting",),
    "default": ("__default__",),
}
PARAM_KEY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
PARAM_VALUE = re.compile(r"^[\w.+-]+$")  # numbers, names, true / false / null: no lists, no spaces
NAME = re.compile(r"^[A-Za-z_]\w*$")
PROGRESS = re.compile(r"Completed (\d+) out of (\d+) tasks")


def parse_overrides(text: str) -> dict[str, str]:
    """``{key: value}`` from lines ``key=value`` (``#`` starts a comment), e.g.
    ``cgd.epochs=2``; a malformed line is an error naming it."""
    overrides = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not PARAM_KEY.match(key) or not PARAM_VALUE.match(value):
            raise ValueError(
                f"parameter override line {number} {raw.strip()!r}: expected key=value, e.g. "
                "cgd.epochs=2 (scalar values only)"
            )
        overrides[key] = value
    return overrides


def with_overrides(params: dict, overrides: dict[str, str]) -> dict:
    """``params`` with each ``a.b.c=value`` override set, the value read as YAML (as ``kedro run
    --params`` reads it: numbers, booleans, null, else a string)."""
    merged = copy.deepcopy(dict(params))
    for key, text in overrides.items():
        *parents, last = key.split(".")
        section = merged
        for part in parents:
            if not isinstance(section.get(part), dict):
                section[part] = {}
            section = section[part]
        try:
            section[last] = yaml.safe_load(text)
        except yaml.YAMLError:
            section[last] = text
    return merged


def run_command(
    run: str, namespaces: list[str], overrides: dict[str, str], env: str | None
) -> list[str]:
    """The ``kedro run`` command line of a Run-form submission, after checking every part."""
    if run not in RUNNABLE:
        raise ValueError(f"run {run!r}: unknown; choose one of {sorted(RUNNABLE)}")
    bad = [n for n in namespaces if not NAME.match(n)]
    if bad or (env is not None and not NAME.match(env)):
        raise ValueError(f"namespaces {bad} / env {env!r}: names are letters, digits and '_' only")
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", ",".join(RUNNABLE[run])]
    if namespaces:
        command += ["--namespaces", ",".join(namespaces)]
    if overrides:
        command += ["--params", ",".join(f"{k}={v}" for k, v in overrides.items())]
    if env:
        command += ["--env", env]
    return command


@dataclass
class Job:
    id: str
    kind: str  # run | submission
    title: str
    status: str = "queued"  # queued | running | succeeded | failed | cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0  # tasks completed, of `total` (pipeline runs)
    total: int = 0
    error: str = ""
    command: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return ((self.finished or time.time()) - self.started) if self.started else 0.0

    @property
    def ended(self) -> bool:
        return self.status in FINISHED


FINISHED = ("succeeded", "failed", "cancelled")
# a run past this is cancelled (the CIFAR-10 CPU profile's whole run: ~9 h on 2 cores)
DEFAULT_MAX_SECONDS = 12 * 3600
KILL_GRACE_SECONDS = 10.0


class JobCancelled(Exception):
    """Raised inside a submission's evaluation (at its next log line) once the job is cancelled."""


class JobQueue:
    """Jobs run one at a time in a worker thread, in the order submitted."""

    def __init__(
        self, project_path: Path, jobs_dir: Path, max_seconds: float = DEFAULT_MAX_SECONDS
    ) -> None:
        self.project_path = Path(project_path)
        self.jobs_dir = Path(jobs_dir)
        self.max_seconds = max_seconds
        self.jobs: dict[str, Job] = self._previous_jobs()
        self._calls: dict[str, Callable[[Callable[[str], None]], None]] = {}
        self._queue: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="cgd-platform-jobs", daemon=True)
        self._worker.start()

    def _previous_jobs(self) -> dict[str, Job]:
        """Jobs of earlier servers; those left queued or running are marked cancelled
        (their queue is gone)."""
        jobs = {}
        for path in sorted(self.jobs_dir.glob("*/job.json")) if self.jobs_dir.is_dir() else []:
            try:
                job = Job(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # an unreadable job file is left alone, not shown
            if not job.ended:
                job.status, job.error = "cancelled", "the platform stopped before this job finished"
                job.finished = job.finished or time.time()
                self._save(job)
            jobs[job.id] = job
        return jobs

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        """Cancel a queued or running job (a finished one is returned unchanged)."""
        job = self.jobs[job_id]
        with self._lock:
            if job.ended:
                return job
            self._cancelled.add(job_id)
            job.error = reason
            process = self._processes.get(job_id)
            if job.status == "queued":
                job.status, job.finished = "cancelled", time.time()
                self._save(job)
        if process is not None:
            _end_process_group(process)
        return job

    def shutdown(self) -> None:
        """The server is stopping: cancel every queued and running job, ending their processes."""
        self._stopping = True
        for job_id in list(self.jobs):
            self.cancel(job_id, "the platform stopped before this job finished")

    def submit_run(self, title: str, command: list[str]) -> Job:
        return self._submit(Job(id=self.new_id(), kind="run", title=title, command=command))

    def submit_call(
        self,
        title: str,
        call: Callable[[Callable[[str], None]], None],
        kind: str = "submission",
        job_id: str | None = None,
    ) -> Job:
        """Queue ``call(log)``; ``log(line)`` appends to the job's log."""
        job = Job(id=job_id or self.new_id(), kind=kind, title=title)
        self._calls[job.id] = call
        return self._submit(job)

    def log_path(self, job_id: str) -> Path:
        return self.jobs_dir / job_id / "log.txt"

    def log_tail(self, job_id: str, max_chars: int = 20000) -> str:
        """The end of the job's log, with this machine's folders shortened
        (no absolute path leaves the server)."""
        path = self.log_path(job_id)
        return (
            without_local_paths(path.read_text(errors="replace")[-max_chars:], self.project_path)
            if path.exists()
            else ""
        )

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job has finished (for tests and scripts)."""
        deadline = time.time() + timeout
        while self.jobs[job_id].status in ("queued", "running") and time.time() < deadline:
            time.sleep(0.2)
        return self.jobs[job_id]

    def new_id(self) -> str:
        """A job id that sorts by time and is unique (submissions name their folder after it)."""
        return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]

    def _submit(self, job: Job) -> Job:
        (self.jobs_dir / job.id).mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.jobs[job.id] = job
        self._save(job)
        self._queue.put(job.id)
        return job

    def _save(self, job: Job) -> None:
        save_text(self.jobs_dir / job.id / "job.json", json.dumps(asdict(job), indent=1))

    def _work(self) -> None:
        while True:
            job = self.jobs[self._queue.get()]
            with self._lock:
                if job.id in self._cancelled or self._stopping:
                    continue  # cancelled while queued: already saved as such
                job.status, job.started = "running", time.time()
            self._save(job)
            with self.log_path(job.id).open("a", buffering=1) as log:
                try:
                    if job.kind == "run":
                        self._run_command(job, log)
                    else:
                        self._calls.pop(job.id)(functools.partial(self._log_line, job.id, log))
                        job.status = "succeeded"
                except JobCancelled:
                    log.write("cancelled\n")
                except Exception as error:  # the job fails, the server and the queue go on
                    log.write(traceback.format_exc())
                    job.status, job.error = "failed", f"{type(error).__name__}: {error}"
                if job.id in self._cancelled and job.status != "succeeded":
                    job.status = "cancelled"
            job.finished = time.time()
            self._save(job)

    def _log_line(self, job_id: str, log, line: str) -> None:
        if job_id in self._cancelled:
            raise JobCancelled(job_id)
        log.write(line.rstrip("\n") + "\n")

    def _run_command(self, job: Job, log) -> None:
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "200"}
        log.write("$ " + " ".join(job.command[1:]) + "\n")
        # A process group of its own: cancelling ends the run and anything it started (workers).
        process = subprocess.Popen(
            job.command,
            cwd=self.project_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        with self._lock:
            self._processes[job.id] = process
            cancelled_before_start = job.id in self._cancelled
        if cancelled_before_start:
            _end_process_group(process)
        timer = threading.Timer(
            self.max_seconds,
            self.cancel,
            (job.id, f"over the platform's time limit of {self.max_seconds:.0f} s"),
        )
        timer.daemon = True
        timer.start()
        lines: list[str] = []
        try:
            for line in process.stdout:
                log.write(line)
                lines = [*lines, line.rstrip()][-200:]
                if match := PROGRESS.search(line):
                    job.done, job.total = int(match[1]), int(match[2])
            returncode = process.wait()
        finally:
            timer.cancel()
            with self._lock:
                self._processes.pop(job.id, None)
        if job.id in self._cancelled:
            return  # _work marks it cancelled, keeping the reason
        if returncode == 0:
            job.status = "succeeded"
            return
        job.status = "failed"
        errors = [line.strip() for line in lines if re.search(r"(Error|error:|Exception)", line)]
        job.error = (errors[-1] if errors else f"kedro run exited with status {returncode}")[:500]


def without_local_paths(text: str, project_path: Path) -> str:
    """``text`` with the project's folder written ``.``
    and Python's install folders ``<python>``."""
    shortened = {
        prefix: "<python>" for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)
    } | {str(Path(project_path).resolve()): "."}
    for prefix in sorted(
        shortened, key=len, reverse=True
    ):  # longest first: a venv inside the project is <python>
        text = text.replace(prefix, shortened[prefix])
    return text


def _end_process_group(process: subprocess.Popen, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM to the process's group, SIGKILL to what is left after ``grace`` seconds."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader has gone; make sure no member of the group outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        return
