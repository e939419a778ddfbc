"""Runs and jobs: launch a pipeline run, follow a job, cancel it."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from cgd_kedro.parameters import check_run_parameters
from cgd_kedro.platform.jobs import (
    parse_overrides,
    run_command,
    with_overrides,
    without_local_paths,
)
from cgd_kedro.platform.state import PlatformDep

router = APIRouter()


@router.get("/runs", response_class=HTMLResponse)
def runs(request: Request, platform: PlatformDep):
    return platform.page(request, "runs.html", jobs=platform.recent_jobs(50), error=None, form={})


@router.post("/runs")
def launch(
    request: Request,
    platform: PlatformDep,
    run: str = Form(...),
    namespaces: str = Form(""),
    params: str = Form(""),
):
    names = [n.strip() for n in namespaces.split(",") if n.strip()]
    try:
        overrides = parse_overrides(params)
        command = run_command(run, names, overrides, platform.env)
        # The run's own parameter check, before a job is queued: an unknown key
        # or a bad value is refused here.
        check_run_parameters(with_overrides(platform.view().params, overrides), set(names))
    except (ValueError, FileNotFoundError) as error:
        form = {"run": run, "namespaces": namespaces, "params": params}
        message = without_local_paths(str(error), platform.project_path)
        return platform.page(
            request, "runs.html", 400, jobs=platform.recent_jobs(50), error=message, form=form
        )
    title = f"{run}" + (f" [{', '.join(names)}]" if names else "")
    job = platform.jobs.submit_run(title, command)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, platform: PlatformDep):
    return platform.page(
        request,
        "job.html",
        job=platform.job(job_id),
        log=platform.jobs.log_tail(job_id),
        result=platform.result(job_id),
    )


@router.get("/api/jobs/{job_id}")
def job_state(job_id: str, platform: PlatformDep):
    return _job_json(platform, platform.job(job_id))


@router.delete("/api/jobs/{job_id}")
def cancel_job(job_id: str, platform: PlatformDep):
    """Cancel a queued or running job: a run's whole process group is ended."""
    return _job_json(platform, platform.jobs.cancel(platform.job(job_id).id))


@router.post("/jobs/{job_id}/cancel")
def cancel_job_form(job_id: str, platform: PlatformDep):
    # the job page's button (an HTML form cannot send DELETE)
    platform.jobs.cancel(platform.job(job_id).id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _job_json(platform, job) -> JSONResponse:
    return JSONResponse(
        {
            "id": job.id,
            "status": job.status,
            "done": job.done,
            "total": job.total,
            "error": job.error,
            "seconds": round(job.seconds, 1),
            "log": platform.jobs.log_tail(job.id, 8000),
        }
    )
