"""The web platform: explore experiments, compare defenses, run pipelines, submit models.

``create_app(project_path)`` builds the FastAPI application; ``kedro platform`` serves it on
127.0.0.1. Pages are rendered on the server (Jinja2, autoescaped); the only script sorts tables and
follows a running job. Everything is read through the Kedro catalog (``ProjectView``, cached per
environment until a run or the configuration changes); the only files the platform writes are
under ``data/09_platform/`` (job logs, submitted models, results). Request bodies are limited
while they stream in (``BodySizeLimit``); no response names a folder of the machine.

The routes live in ``platform.routes`` (one ``APIRouter`` per group of pages); they share the
application's ``Platform`` (``platform.state``).
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from cgd_kedro.parameters import parameter_rows
from cgd_kedro.platform.jobs import DEFAULT_MAX_SECONDS, RUNNABLE, JobQueue
from cgd_kedro.platform.limits import BodySizeLimit
from cgd_kedro.platform.project import ViewCache
from cgd_kedro.platform.routes import experiments, leaderboard, runs, submissions
from cgd_kedro.platform.state import PLATFORM_DIR, TEMPLATES, Platform, environments
from cgd_kedro.platform.submissions import MAX_UPLOAD_BYTES
from cgd_kedro.reporting.render import SORT_SCRIPT, STYLE

__all__ = ["PLATFORM_DIR", "create_app", "environments"]

MULTIPART_OVERHEAD = 2**20  # form fields and part headers around the uploaded file


def create_app(
    project_path: Path | str = ".",
    env: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_job_seconds: float = DEFAULT_MAX_SECONDS,
) -> FastAPI:
    """The platform over the Kedro project at ``project_path`` (environment ``env``).

    ``max_upload_bytes``: the largest model file accepted; ``max_job_seconds``: a pipeline run
    taking longer is cancelled.
    """
    project_path = Path(project_path).resolve()
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals |= {
        "style": STYLE,
        "sort_script": SORT_SCRIPT,
        "env": env or "default",
        "runnable": RUNNABLE,
        "parameters": parameter_rows(),
    }
    platform = Platform(
        project_path=project_path,
        env=env,
        jobs=JobQueue(
            project_path, project_path / PLATFORM_DIR / "jobs", max_seconds=max_job_seconds
        ),
        views=ViewCache(project_path),
        templates=templates,
        max_upload_bytes=max_upload_bytes,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Build the default view in the background so the first page
        # does not wait for a Kedro session.
        threading.Thread(
            target=platform.views.get, args=(env,), name="cgd-platform-warm-up", daemon=True
        ).start()
        yield
        platform.jobs.shutdown()  # no run outlives the server; queued jobs are marked cancelled

    app = FastAPI(title="cgd_kedro platform", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(
        BodySizeLimit, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD, shown_limit=max_upload_bytes
    )
    app.state.platform = platform
    app.state.jobs = platform.jobs
    for group in (experiments, leaderboard, runs, submissions):
        app.include_router(group.router)
    return app
