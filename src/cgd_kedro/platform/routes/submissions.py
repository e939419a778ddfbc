"""Model submissions: upload a checkpoint, evaluate it (optionally defend it with CGD) as a job."""

from __future__ import annotations

import json

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from cgd_kedro.datasets.atomic import save_text
from cgd_kedro.datasets.safetensors_datasets import ClassifierCheckpointDataset
from cgd_kedro.models.registry import list_models
from cgd_kedro.platform.evaluation import evaluate_submission
from cgd_kedro.platform.state import PlatformDep
from cgd_kedro.platform.submissions import SubmissionError, checked_checkpoint, inside

router = APIRouter()


@router.get("/submit", response_class=HTMLResponse)
def submit_form(request: Request, platform: PlatformDep):
    return platform.page(
        request,
        "submit.html",
        architectures=list_models(),
        error=None,
        limit_mib=platform.max_upload_bytes / 2**20,
    )


@router.post("/submit")
def submit(
    request: Request,
    platform: PlatformDep,
    file: UploadFile = File(...),
    architecture: str = Form(...),
    defend: bool = Form(False),
):
    # A plain def: FastAPI runs it in a worker thread, so reading the
    # catalog blocks no other request.
    # never more than the limit in memory (BodySizeLimit stops larger bodies)
    limit = platform.max_upload_bytes
    data = file.file.read(limit + 1)
    v = platform.view()
    info = v.load("dataset_info")
    try:
        if info is None:
            raise SubmissionError(
                f"no dataset_info saved for dataset {v.dataset!r}: run the poison pipeline first"
            )
        checkpoint = checked_checkpoint(
            file.filename or "",
            data,
            architecture,
            info["num_classes"],
            info["mean"],
            info["std"],
            limit,
        )
    except SubmissionError as error:
        return platform.page(
            request,
            "submit.html",
            400,
            architectures=list_models(),
            error=str(error),
            limit_mib=limit / 2**20,
        )
    job_id = platform.jobs.new_id()
    folder = inside(platform.platform_dir, platform.platform_dir / "submissions" / job_id)
    ClassifierCheckpointDataset(filepath=str(folder / "model.safetensors")).save(checkpoint)

    def evaluate(log) -> None:
        results = evaluate_submission(platform.view(), checkpoint, defend, log)
        save_text(folder / "result.json", json.dumps(results, indent=1))

    job = platform.jobs.submit_call(
        f"submission {file.filename} ({architecture})" + (" + CGD" if defend else ""),
        evaluate,
        job_id=job_id,
    )
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
