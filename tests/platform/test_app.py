"""The platform's pages, forms and uploads through FastAPI's test client, on a tiny project."""

from __future__ import annotations

import asyncio
import io
import pickle
import sys
import time

import pytest
import torch
from fastapi.testclient import TestClient
from project_fixture import files, platform_project  # noqa: F401 (fixture)
from safetensors.torch import save
from test_submissions import RunsCode, compact_state_dict, torch_bytes

from cgd_kedro.platform.app import create_app
from cgd_kedro.run_records import RunRecords

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(platform_project):  # noqa: F811
    with TestClient(create_app(platform_project, max_upload_bytes=2 * 2**20)) as test_client:
        yield test_client


def test_every_page_renders_the_experiment(client):
    for url in (
        "/",
        "/experiments",
        "/experiments/badnets",
        "/leaderboard",
        "/leaderboard?model=clip",
        "/runs",
        "/submit",
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
    page = client.get("/experiments/badnets").text
    assert (
        "badnets on embedded" in page
        and "auroc_combined" in page
        and "/figures/badnets.entropy_map" in page
    )
    assert client.get("/figures/badnets.entropy_map").content.startswith(b"\x89PNG")
    assert client.get("/plots/badnets/samples.png").content.startswith(b"\x89PNG")
    assert client.get("/experiments/lc").status_code == 404
    assert client.get("/figures/train_set").status_code == 404  # only figures are served
    assert client.get("/leaderboard?sort=nope").status_code == 400
    runs = client.get(
        "/runs"
    ).text  # the form lists every parameter the run accepts, from the models
    assert (
        "<code>victim.training.epochs</code>" in runs
        and "<code>badnets</code>" in runs
        and "<code>foo</code>" not in runs
    )


def test_bad_run_forms_are_refused_with_the_reason(client):
    response = client.post("/runs", data={"run": "rm -rf", "namespaces": "", "params": ""})
    assert response.status_code == 400 and "run &#39;rm -rf&#39;: unknown" in response.text
    response = client.post(
        "/runs", data={"run": "cgd", "namespaces": "badnets", "params": "cgd.epochs=2\ncgd.alpha 3"}
    )
    assert response.status_code == 400 and "parameter override line 2" in response.text
    response = client.post("/runs", data={"run": "cgd", "namespaces": "badnets;ls", "params": ""})
    assert response.status_code == 400 and "letters, digits" in response.text


def test_bad_parameters_are_refused_by_the_form_before_a_job_starts(client, platform_project):  # noqa: F811
    before = files(platform_project)
    cases = {
        "cgd.alpha=-1": "cgd.alpha = -1: must be greater than or equal to 0",
        "foo=1": "foo: unknown parameter",
        "cgd.epohcs=2": "cgd.epohcs: unknown parameter; did you mean 'epochs'?",
        "victim.training.lr=abc": "victim.training.lr = 'abc': must be a valid number",
        "victim.training.epochs=1000000000": (
            "victim.training.epochs = 1000000000: must be less than or equal to 10000"
        ),
    }
    for override, message in cases.items():
        response = client.post(
            "/runs",
            data={"run": "cgd", "namespaces": "badnets", "params": override},
            follow_redirects=False,
        )
        assert response.status_code == 400 and message in response.text.replace("&#39;", "'"), (
            override,
            response.text[-800:],
        )
    assert files(platform_project) == before  # no job, no run


def test_a_failed_run_shows_its_error_and_leaves_earlier_outputs_intact(client, platform_project):  # noqa: F811
    before = {
        k: v for k, v in files(platform_project).items() if not k.startswith("data/09_platform")
    }
    # Valid parameters, but no LC artefacts exist to unlearn from: the run itself fails.
    response = client.post(
        "/runs",
        data={"run": "cgd", "namespaces": "lc", "params": "cgd.epochs=1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[1]
    job = client.app.state.jobs.wait(job_id, timeout=240)
    assert job.status == "failed" and "lc" in job.error, job.error
    assert "failed" in client.get(f"/jobs/{job_id}").text
    # kedro-viz's hook logs pipeline events to .viz/; a failed run leaves a "failed" run record
    after = {
        k: v
        for k, v in files(platform_project).items()
        if not k.startswith(("data/09_platform", "data/09_runs", ".viz/"))
    }
    assert after == {k: v for k, v in before.items() if not k.startswith(("data/09_runs", ".viz/"))}


def _upload(client, name: str, data: bytes, architecture: str = "compact_cnn"):
    return client.post(
        "/submit",
        files={"file": (name, io.BytesIO(data), "application/octet-stream")},
        data={"architecture": architecture},
        follow_redirects=False,
    )


def test_malicious_uploads_are_refused_and_nothing_is_written(client, platform_project, tmp_path):  # noqa: F811
    before = files(platform_project)
    marker = tmp_path / "pwned"
    cases = [
        (
            "evil.pt",
            pickle.dumps({"w": RunsCode(str(marker))}),
            "holds Python objects other than tensors",
        ),
        ("../../../outside.safetensors", save(compact_state_dict()), "no folders"),
        ("..%2F..%2Fx.pt", torch_bytes(compact_state_dict()), "no folders"),
        ("big.safetensors", b"\x00" * (2 * 2**20 + 10), "the file is over the 2 MiB limit"),
        ("image.pt", torch_bytes(torch.rand(3, 32, 32)), "expected a state_dict"),
        ("seven.safetensors", save(compact_state_dict(num_classes=7)), "weights do not match"),
        ("model.exe", b"MZ", "format must be one of"),
    ]
    for name, data, message in cases:
        response = _upload(client, name, data)
        assert response.status_code == 400 and message in response.text.replace("&#39;", "'"), (
            name,
            response.text[-600:],
        )
    assert not marker.exists()
    assert files(platform_project) == before  # nothing written anywhere in the project
    assert not (platform_project.parent / "outside.safetensors").exists()


def test_a_good_upload_is_stored_under_data_and_evaluated(client, platform_project):  # noqa: F811
    responses = [
        _upload(client, "fresh-model.safetensors", save(compact_state_dict())) for _ in range(2)
    ]
    assert [r.status_code for r in responses] == [303, 303], responses[0].text[-500:]
    job_ids = [r.headers["location"].rsplit("/", 1)[1] for r in responses]
    # the same file sent twice in a second is two submissions, neither overwritten
    assert job_ids[0] != job_ids[1]
    job_id = job_ids[0]
    assert client.app.state.jobs.wait(job_id, timeout=120).status == "succeeded", (
        client.app.state.jobs.log_tail(job_id)
    )
    assert client.app.state.jobs.wait(job_ids[1], timeout=120).status == "succeeded"
    for submitted in job_ids:
        assert (
            platform_project / "data/09_platform/submissions" / submitted / "model.safetensors"
        ).is_file()
    page = client.get(f"/jobs/{job_id}").text
    assert "<td>badnets</td><td>submitted</td>" in page


def test_a_body_over_the_limit_is_refused_while_it_streams(client, platform_project):  # noqa: F811
    # Driven as the server would (ASGI messages), since the test client reads
    # a whole body before sending it.
    received, sent = [], []

    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.safetensors"\r\n\r\n'

    async def receive():  # a 64 MiB file in 64 KiB chunks, no Content-Length (chunked)
        received.append(1)
        return {
            "type": "http.request",
            "body": (part if len(received) == 1 else b"\x00" * 2**16),
            "more_body": len(received) < 1024,
        }

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/submit",
        "raw_path": b"/submit",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
    }
    before = files(platform_project)
    asyncio.run(client.app(scope, receive, send))
    assert (
        sent[0]["status"] == 413
        and sent[1]["body"] == b"upload refused: the request is over the 2 MiB upload limit"
    )
    # read up to the limit (2 MiB + 1 MiB of form overhead), no further
    assert len(received) * 2**16 <= 3 * 2**20 + 2**16
    declared = client.post(
        "/submit",
        content=b"",
        headers={
            "content-length": str(2 * 2**30),
            "content-type": "multipart/form-data; boundary=x",
        },
    )
    assert (
        declared.status_code == 413 and "2048.0 MiB, over the 2 MiB upload limit" in declared.text
    )
    assert files(platform_project) == before


def test_jobs_are_cancelled_over_the_api_and_responses_name_no_local_folder(
    client,
    platform_project,  # noqa: F811
):
    jobs = client.app.state.jobs
    job = jobs.submit_run(
        "sleeper",
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(120)"],
    )
    deadline = time.time() + 60
    while jobs.jobs[job.id].status != "running" and time.time() < deadline:
        time.sleep(0.1)
    state = client.delete(f"/api/jobs/{job.id}")
    assert state.status_code == 200
    assert jobs.wait(job.id, timeout=30).status == "cancelled"
    assert client.get(f"/api/jobs/{job.id}").json()["status"] == "cancelled"
    assert client.delete("/api/jobs/nope").status_code == 404
    # no button on a finished job
    assert "Cancel this job" not in client.get(f"/jobs/{job.id}").text
    missing_env = client.get("/?env=nosuchenv")
    assert (
        missing_env.status_code == 404
        and str(platform_project) not in missing_env.text
        and "conf/" in missing_env.text
    )


def test_pages_reuse_the_view_until_a_run_record_changes(client, platform_project, monkeypatch):  # noqa: F811
    from cgd_kedro.platform import project

    built = []
    original = project.ProjectView.__init__
    monkeypatch.setattr(
        project.ProjectView,
        "__init__",
        lambda self, *a, **k: (built.append(1), original(self, *a, **k))[1],
    )
    for _ in range(3):
        assert client.get("/").status_code == 200
    assert len(built) <= 1  # at most one build (the first request may come before the warm-up's)
    built.clear()
    records = RunRecords(platform_project)
    records.write("2099-01-01T00.00.00.000Z", {"status": "running"})  # a run starts
    try:
        assert client.get("/leaderboard").status_code == 200 and len(built) == 1
        assert client.get("/experiments").status_code == 200 and len(built) == 1
    finally:
        (records.folder / "2099-01-01T00.00.00.000Z.json").unlink()


def test_a_killed_runs_newer_outputs_are_not_shown(client, platform_project):  # noqa: F811
    metrics = platform_project / "data/08_reporting/embedded/badnets/attack_metrics.json"
    shown = client.get("/experiments/badnets").text
    killed = "2099-01-02T00.00.00.000Z"
    (metrics / killed).mkdir()
    (metrics / killed / "attack_metrics.json").write_text(
        '{"clean_acc": 0.123456, "asr": 0.5, "n_train": 1}'
    )
    # written as runs write them: a new file renamed into place
    records = RunRecords(platform_project)
    record = records.folder / f"{killed}.json"
    records.write(killed, {"status": "running"})
    try:
        page = client.get("/experiments/badnets").text
        assert (
            killed not in page and "0.123" not in page and page.count("<tr") == shown.count("<tr")
        )
        records.write(killed, {"status": "complete"})  # once its run completes, it is the latest
        assert killed in client.get("/experiments/badnets").text
    finally:
        record.unlink()
        (metrics / killed / "attack_metrics.json").unlink()
        (metrics / killed).rmdir()


def test_the_leaderboard_shows_each_grids_mean_and_std_and_links_its_report(
    client,
    platform_project,  # noqa: F811
):
    import pandas as pd

    from cgd_kedro.reporting.grid import summarise_grid

    rows = pd.DataFrame(
        [
            {
                "env": "base",
                "attack": "badnets",
                "ratio": 0.1,
                "defense": "cgd",
                "seed": seed,
                "clean_acc": ca,
                "asr": asr,
                "ra": 0.8,
                "der": 0.9,
                "seconds": 30.0,
            }
            for seed, ca, asr in ((0, 0.9, 0.4), (1, 0.8, 0.6))
        ]
    )
    grid = platform_project / "data" / "09_grid" / "demo"
    grid.mkdir(parents=True)
    summarise_grid(rows, ["ratio"]).to_csv(grid / "grid_summary.csv", index=False)
    (grid / "grid_report.html").write_text("<!DOCTYPE html><title>demo grid</title>")
    page = client.get("/leaderboard").text
    assert (
        "Grid demo: mean ± std over seeds" in page
        and "0.850 ± 0.071" in page
        and "0.500 ± 0.141" in page
    )  # CA, ASR over 2 seeds
    assert "demo grid" in client.get("/grids/demo/report").text
    assert client.get("/grids/nope/report").status_code == 404
    assert "Grid demo" not in client.get("/leaderboard?model=clip").text
