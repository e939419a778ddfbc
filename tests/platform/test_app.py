"""The platform's pages, forms and uploads through FastAPI's test client, on a tiny project."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from fastapi.testclient import TestClient
from project_fixture import files, platform_project  # noqa: F401 (fixture)
from safetensors.torch import save
from test_submissions import RunsCode, compact_state_dict, torch_bytes

from cgd_kedro.platform.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(platform_project):  # noqa: F811
    with TestClient(create_app(platform_project, max_upload_bytes=2 * 2**20)) as test_client:
        yield test_client


def test_every_page_renders_the_experiment(client):
    for url in ("/", "/experiments", "/experiments/badnets", "/leaderboard", "/leaderboard?model=clip", "/runs", "/submit"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
    page = client.get("/experiments/badnets").text
    assert "badnets on embedded" in page and "auroc_combined" in page and "/figures/badnets.entropy_map" in page
    assert client.get("/figures/badnets.entropy_map").content.startswith(b"\x89PNG")
    assert client.get("/plots/badnets/samples.png").content.startswith(b"\x89PNG")
    assert client.get("/experiments/lc").status_code == 404
    assert client.get("/figures/train_set").status_code == 404  # only figures are served
    assert client.get("/leaderboard?sort=nope").status_code == 400


def test_bad_run_forms_are_refused_with_the_reason(client):
    response = client.post("/runs", data={"run": "rm -rf", "namespaces": "", "params": ""})
    assert response.status_code == 400 and "run &#39;rm -rf&#39;: unknown" in response.text
    response = client.post("/runs", data={"run": "cgd", "namespaces": "badnets", "params": "cgd.epochs=2\ncgd.alpha 3"})
    assert response.status_code == 400 and "parameter override line 2" in response.text
    response = client.post("/runs", data={"run": "cgd", "namespaces": "badnets;ls", "params": ""})
    assert response.status_code == 400 and "letters, digits" in response.text


def test_a_failed_run_shows_its_error_and_leaves_earlier_outputs_intact(client, platform_project):  # noqa: F811
    before = {k: v for k, v in files(platform_project).items() if not k.startswith("data/09_platform")}
    response = client.post("/runs", data={"run": "cgd", "namespaces": "badnets", "params": "cgd.alpha=-1"}, follow_redirects=False)
    assert response.status_code == 303
    job_id = response.headers["location"].rsplit("/", 1)[1]
    job = client.app.state.jobs.wait(job_id, timeout=240)
    assert job.status == "failed" and "cgd.alpha" in job.error
    assert "cgd.alpha" in client.get(f"/jobs/{job_id}").text
    assert {k: v for k, v in files(platform_project).items() if not k.startswith("data/09_platform")} == before


def _upload(client, name: str, data: bytes, architecture: str = "compact_cnn"):
    return client.post("/submit", files={"file": (name, io.BytesIO(data), "application/octet-stream")},
                       data={"architecture": architecture}, follow_redirects=False)  # fmt: skip


def test_malicious_uploads_are_refused_and_nothing_is_written(client, platform_project, tmp_path):  # noqa: F811
    before = files(platform_project)
    marker = tmp_path / "pwned"
    cases = [
        ("evil.pt", pickle.dumps({"w": RunsCode(str(marker))}), "weights_only=True"),
        ("../../../outside.safetensors", save(compact_state_dict()), "no folders"),
        ("..%2F..%2Fx.pt", torch_bytes(compact_state_dict()), "no folders"),
        ("big.safetensors", b"\x00" * (2 * 2**20 + 10), "over the 2 MiB limit"),
        ("image.pt", torch_bytes(torch.rand(3, 32, 32)), "expected a state_dict"),
        ("seven.safetensors", save(compact_state_dict(num_classes=7)), "weights do not match"),
        ("model.exe", b"MZ", "format must be one of"),
    ]
    for name, data, message in cases:
        response = _upload(client, name, data)
        assert response.status_code == 400 and message in response.text.replace("&#39;", "'"), (name, response.text[-600:])
    assert not marker.exists()
    assert files(platform_project) == before  # nothing written anywhere in the project
    assert not (platform_project.parent / "outside.safetensors").exists()


def test_a_good_upload_is_stored_under_data_and_evaluated(client, platform_project):  # noqa: F811
    responses = [_upload(client, "fresh-model.safetensors", save(compact_state_dict())) for _ in range(2)]
    assert [r.status_code for r in responses] == [303, 303], responses[0].text[-500:]
    job_ids = [r.headers["location"].rsplit("/", 1)[1] for r in responses]
    assert job_ids[0] != job_ids[1]  # the same file sent twice in a second is two submissions, neither overwritten
    job_id = job_ids[0]
    assert client.app.state.jobs.wait(job_id, timeout=120).status == "succeeded", client.app.state.jobs.log_tail(job_id)
    assert client.app.state.jobs.wait(job_ids[1], timeout=120).status == "succeeded"
    for submitted in job_ids:
        assert (platform_project / "data/09_platform/submissions" / submitted / "model.safetensors").is_file()
    page = client.get(f"/jobs/{job_id}").text
    assert "<td>badnets</td><td>submitted</td>" in page

