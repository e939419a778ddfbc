"""The platform's shared state: the project, its catalog views, the job queue and the templates.

One ``Platform`` per application (``app.state.platform``); routes get it as a FastAPI dependency
(``PlatformDep``), never through module globals, so two applications in one process (tests) never
share anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from cgd_kedro.platform.jobs import JobQueue
from cgd_kedro.platform.project import ProjectView, ViewCache

PLATFORM_DIR = Path("data") / "09_platform"
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Platform:
    project_path: Path
    env: str | None  # the platform's own environment (None: the default run's)
    jobs: JobQueue
    views: ViewCache
    templates: Jinja2Templates
    max_upload_bytes: int

    @property
    def platform_dir(self) -> Path:
        return self.project_path / PLATFORM_DIR

    def view(self, chosen: str | None = None) -> ProjectView:
        """The catalog of environment ``chosen`` (a conf/ folder; None: the platform's own)."""
        if chosen is not None and chosen not in environments(self.project_path):
            raise HTTPException(404, f"env: no environment {chosen!r} in conf/")
        return self.views.get(chosen or self.env)

    def page(self, request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        chosen = request.query_params.get("env")
        context |= {
            "env_q": f"?env={chosen}" if chosen else "",
            "env_amp": f"&env={chosen}" if chosen else "",
            "environments": environments(self.project_path),
            "chosen_env": chosen or "",
        }
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def recent_jobs(self, n: int = 10) -> list:
        return sorted(self.jobs.jobs.values(), key=lambda j: j.created, reverse=True)[:n]

    def job(self, job_id: str):
        if job_id not in self.jobs.jobs:
            raise HTTPException(404, f"no job {job_id!r}")
        return self.jobs.jobs[job_id]

    def result(self, job_id: str) -> dict | None:
        """A submission's evaluation (``result.json``), once written."""
        path = self.platform_dir / "submissions" / job_id / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None


def environments(project_path: Path) -> list[str]:
    """The Kedro environments a user can pick: every folder of conf/ but base and local."""
    return sorted(
        p.name
        for p in (project_path / "conf").iterdir()
        if p.is_dir() and p.name not in ("base", "local")
    )


def current_platform(request: Request) -> Platform:
    return request.app.state.platform


PlatformDep = Annotated[Platform, Depends(current_platform)]
