"""The Run form's checks and the job queue (one job at a time, failures kept, the queue goes on)."""

from __future__ import annotations

import sys

import pytest

from cgd_kedro.platform.jobs import JobQueue, parse_overrides, run_command


def test_overrides_are_scalar_key_value_lines():
    assert parse_overrides("cgd.epochs=2\n# comment\n runtime.seed = 3 \n\nclip.weights=null") == {
        "cgd.epochs": "2", "runtime.seed": "3", "clip.weights": "null"}  # fmt: skip
    for bad, line in (("cgd.epochs", 1), ("x=1\ncgd.epochs=2,3", 2), ("a b=1", 1), ("cgd.epochs=$(rm -rf /)", 1), ("=1", 1)):
        with pytest.raises(ValueError, match=f"parameter override line {line}"):
            parse_overrides(bad)


def test_run_command_names_only_known_pipelines_and_plain_names():
    command = run_command("cgd", ["badnets", "sig"], {"cgd.epochs": "2"}, "embedded_large")
    assert command[1:] == ["-m", "kedro", "run", "--pipelines", "cgd_unlearn", "--namespaces", "badnets,sig",
                           "--params", "cgd.epochs=2", "--env", "embedded_large"]  # fmt: skip
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
    second = queue.submit_run("second", [sys.executable, "-c", "print('Completed 3 out of 4 tasks'); import sys; sys.exit(2)"])
    third = queue.submit_call("third", lambda log: (order.append("third"), log("done")))
    assert queue.wait(third.id, timeout=60).status == "succeeded"
    assert queue.jobs[first.id].status == "failed" and queue.jobs[first.id].error == "RuntimeError: boom"
    failed_run = queue.jobs[second.id]
    assert failed_run.status == "failed" and (failed_run.done, failed_run.total) == (3, 4)
    assert "exited with status 2" in failed_run.error
    assert order == ["failing", "third"] and queue.log_tail(third.id) == "done\n"
    assert (tmp_path / "jobs" / second.id / "job.json").is_file()
