"""The Run form's checks and the job queue (one job at a time, failures kept, the queue goes on)."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from cgd_kedro.platform.jobs import JobQueue, parse_overrides, run_command


def test_overrides_are_scalar_key_value_lines():
    assert parse_overrides("cgd.epochs=2\n# comment\n runtime.seed = 3 \n\nclip.weights=null") == {
        "cgd.epochs": "2",
        "runtime.seed": "3",
        "clip.weights": "null",
    }
    for bad, line in (
        ("cgd.epochs", 1),
        ("x=1\ncgd.epochs=2,3", 2),
        ("a b=1", 1),
        ("cgd.epochs=$(rm -rf /)", 1),
        ("=1", 1),
    ):
        with pytest.raises(ValueError, match=f"parameter override line {line}"):
            parse_overrides(bad)


def test_run_command_names_only_known_pipelines_and_plain_names():
    command = run_command("cgd", ["badnets", "sig"], {"cgd.epochs": "2"}, "embedded_large")
    assert command[1:] == [
        "-m",
        "kedro",
        "run",
        "--pipelines",
        "cgd_unlearn",
        "--namespaces",
        "badnets,sig",
        "--params",
        "cgd.epochs=2",
        "--env",
        "embedded_large",
    ]
    assert run_command("split", [], {}, None)[5] == "reference_clip,clip_split"
    with pytest.raises(ValueError, match="run 'shell': unknown"):
        run_command("shell", [], {}, None)
    with pytest.raises(ValueError, match="letters, digits"):
        run_command("cgd", ["../x"], {}, None)
    with pytest.raises(ValueError, match="letters, digits"):
        run_command("cgd", [], {}, "--evil")


def test_jobs_run_in_order_and_a_failure_does_not_stop_the_queue(tmp_path):
    queue = JobQueue(tmp_path, tmp_path / "jobs")
    order = []

    def failing(log):
        order.append("failing")
        raise RuntimeError("boom")

    first = queue.submit_call("first", failing)
    second = queue.submit_run(
        "second",
        [sys.executable, "-c", "print('Completed 3 out of 4 tasks'); import sys; sys.exit(2)"],
    )
    third = queue.submit_call("third", lambda log: (order.append("third"), log("done")))
    assert queue.wait(third.id, timeout=60).status == "succeeded"
    assert (
        queue.jobs[first.id].status == "failed"
        and queue.jobs[first.id].error == "RuntimeError: boom"
    )
    failed_run = queue.jobs[second.id]
    assert failed_run.status == "failed" and (failed_run.done, failed_run.total) == (3, 4)
    assert "exited with status 2" in failed_run.error
    assert order == ["failing", "third"] and queue.log_tail(third.id) == "done\n"
    assert (tmp_path / "jobs" / second.id / "job.json").is_file()


# A run that starts a grandchild (as kedro's workers would), prints both pids, then waits.
SLEEPER = (
    "import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
    "time.sleep(120)']);print('grandchild=%d' % child.pid, flush=True); time.sleep(120)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (ended, not yet reaped by its parent) counts as ended
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def _grandchild(queue: JobQueue, job_id: str) -> int:
    deadline = time.time() + 60
    while (
        not (found := re.search(r"grandchild=(\d+)", queue.log_tail(job_id)))
        and time.time() < deadline
    ):
        time.sleep(0.1)
    return int(found[1])


def test_cancel_ends_a_running_runs_whole_process_group_and_a_queued_job(tmp_path):
    queue = JobQueue(tmp_path, tmp_path / "jobs")
    running = queue.submit_run("sleeper", [sys.executable, "-c", SLEEPER])
    queued = queue.submit_call("never", lambda log: log("must not run"))
    grandchild = _grandchild(queue, running.id)
    assert _alive(grandchild)
    assert queue.cancel(queued.id).status == "cancelled"
    queue.cancel(running.id)
    assert queue.wait(running.id, timeout=30).status == "cancelled"
    assert queue.jobs[running.id].error == "cancelled by the user"
    deadline = time.time() + 10
    while _alive(grandchild) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)
    time.sleep(0.5)
    assert queue.log_tail(queued.id) == "" and queue.jobs[queued.id].status == "cancelled"


def test_time_limit_shutdown_and_restart(tmp_path):
    queue = JobQueue(tmp_path, tmp_path / "jobs", max_seconds=1.0)
    limited = queue.submit_run("sleeper", [sys.executable, "-c", SLEEPER])
    assert queue.wait(limited.id, timeout=30).status == "cancelled"
    assert "over the platform's time limit of 1 s" in queue.jobs[limited.id].error

    queue = JobQueue(tmp_path, tmp_path / "jobs")
    running = queue.submit_run("sleeper", [sys.executable, "-c", SLEEPER])
    queued = queue.submit_call("later", lambda log: None)
    grandchild = _grandchild(queue, running.id)
    queue.shutdown()  # the server stops
    assert (
        queue.wait(running.id, timeout=30).status == "cancelled"
        and queue.jobs[queued.id].status == "cancelled"
    )
    time.sleep(0.5)
    assert not _alive(grandchild)

    # A server killed outright leaves a job "running" in its job.json; the
    # next server marks it cancelled.
    stale = tmp_path / "jobs" / "20260101-000000-abcdef"
    stale.mkdir()
    (stale / "job.json").write_text(
        json.dumps({"id": stale.name, "kind": "run", "title": "old", "status": "running"})
    )
    restarted = JobQueue(tmp_path, tmp_path / "jobs")
    assert (
        restarted.jobs[stale.name].status == "cancelled"
        and "platform stopped" in restarted.jobs[stale.name].error
    )
    assert json.loads((stale / "job.json").read_text())["status"] == "cancelled"
    assert restarted.jobs[limited.id].status == "cancelled"  # earlier jobs are listed again


def test_logs_name_no_folder_of_the_machine(tmp_path):
    queue = JobQueue(tmp_path, tmp_path / "jobs")
    job = queue.submit_run(
        "paths",
        [
            sys.executable,
            "-c",
            f"import sys; print({str(tmp_path.resolve())!r} + '/data/x', "
            "sys.prefix + '/lib/site.py')",
        ],
    )
    queue.wait(job.id, timeout=30)
    log = queue.log_tail(job.id)
    assert (
        "./data/x" in log
        and "<python>/lib/site.py" in log
        and str(tmp_path.resolve()) not in log
        and sys.prefix not in log
    )
