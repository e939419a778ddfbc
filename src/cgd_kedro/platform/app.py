"""The web platform: explore experiments, compare defenses, run pipelines, submit models.

``create_app(project_path)`` builds the FastAPI application; ``kedro platform`` serves it on
127.0.0.1. Pages are rendered on the server (Jinja2, autoescaped); the only script sorts tables and
follows a running job. Everything is read through the Kedro catalog (``ProjectView``, cached per
environment until a run or the configuration changes); the only files the platform writes are
under ``data/09_platform/`` (job logs, submitted models, results). Request bodies are limited
while they stream in (``BodySizeLimit``); no response names a folder of the machine.
"""

from __future__ import annotations

import io
import json
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import pandas as pd
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cgd_kedro.datasets.atomic import save_text
from cgd_kedro.datasets.safetensors_datasets import ClassifierCheckpointDataset
from cgd_kedro.models.registry import list_models
from cgd_kedro.parameters import check_run_parameters, parameter_rows
from cgd_kedro.platform import figures
from cgd_kedro.platform.evaluation import evaluate_submission
from cgd_kedro.platform.jobs import (
    DEFAULT_MAX_SECONDS,
    RUNNABLE,
    JobQueue,
    parse_overrides,
    run_command,
    with_overrides,
    without_local_paths,
)
from cgd_kedro.platform.limits import BodySizeLimit
from cgd_kedro.platform.project import ProjectView, ViewCache
from cgd_kedro.platform.submissions import (
    MAX_UPLOAD_BYTES,
    SubmissionError,
    checked_checkpoint,
    inside,
)
from cgd_kedro.reporting.grid import read_grid_summaries
from cgd_kedro.reporting.render import SORT_SCRIPT, STYLE, html_table

PLATFORM_DIR = Path("data") / "09_platform"
TEMPLATES = Path(__file__).parent / "templates"
# Figures a page may show from the catalog: classifier attacks' entropy
# maps and the CLIP attacks' PNGs.
SERVED_FIGURES = (
    "entropy_map",
    "abd_samples_png",
    "similarity_panel_png",
    "clip_defense_curves_png",
)


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
    platform_dir = project_path / PLATFORM_DIR
    jobs = JobQueue(project_path, platform_dir / "jobs", max_seconds=max_job_seconds)
    views = ViewCache(project_path)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals |= {
        "style": STYLE,
        "sort_script": SORT_SCRIPT,
        "env": env or "default",
        "runnable": RUNNABLE,
        "parameters": parameter_rows(),
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Build the default view in the background so the first page
        # does not wait for a Kedro session.
        threading.Thread(
            target=views.get, args=(env,), name="cgd-platform-warm-up", daemon=True
        ).start()
        yield
        jobs.shutdown()  # the server stops: no run outlives it, queued jobs are marked cancelled

    app = FastAPI(title="cgd_kedro platform", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(
        BodySizeLimit, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD, shown_limit=max_upload_bytes
    )
    app.state.jobs = jobs

    def view(chosen: str | None = None) -> ProjectView:
        """The catalog of environment ``chosen`` (a conf/ folder; None: the platform's own)."""
        if chosen is not None and chosen not in environments(project_path):
            raise HTTPException(404, f"env: no environment {chosen!r} in conf/")
        return views.get(chosen or env)

    def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        chosen = request.query_params.get("env")
        context |= {
            "env_q": f"?env={chosen}" if chosen else "",
            "env_amp": f"&env={chosen}" if chosen else "",
            "environments": environments(project_path),
            "chosen_env": chosen or "",
        }
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request, env: str | None = None):
        v = view(env)
        board = v.leaderboard()
        return page(
            request,
            "overview.html",
            dataset=v.dataset,
            experiments=v.experiments(),
            jobs=_recent(jobs),
            rows=len(board),
            report=(project_path / f"data/08_reporting/{v.dataset}/report.html").exists(),
        )

    @app.get("/experiments", response_class=HTMLResponse)
    def experiments(request: Request, env: str | None = None):
        v = view(env)
        rows = []
        for e in v.experiments():
            if e.model == "classifier":
                metrics = v.load(f"{e.attack}.attack_metrics", e.latest, {})
            else:  # the backdoored CLIP's figures are the `none` row of its defense metrics
                metrics = (
                    v.load(f"{e.attack}.clip_defense_metrics", None, {})
                    .get("defenses", {})
                    .get("none", {})
                )
            rows.append(
                {"experiment": e, "clean_acc": metrics.get("clean_acc"), "asr": metrics.get("asr")}
            )
        return page(request, "experiments.html", dataset=v.dataset, rows=rows)

    @app.get("/experiments/{attack}", response_class=HTMLResponse)
    def experiment(
        request: Request, attack: str, version: str | None = None, env: str | None = None
    ):
        v = view(env)
        found = {e.attack: e for e in v.experiments()}
        if attack not in found:
            raise HTTPException(404, f"no experiment {attack!r} on dataset {v.dataset!r}")
        e = found[attack]
        if version is not None and version not in e.versions:
            raise HTTPException(404, f"experiment {attack!r} has no version {version!r}")
        if e.model == "clip":
            metrics = v.load(f"{attack}.clip_defense_metrics", None, {}).get("defenses", {})
            table = pd.DataFrame(
                [
                    {"defense": d} | {k: m[k] for k in ("clean_acc", "asr", "seconds") if k in m}
                    for d, m in metrics.items()
                ]
            )
            return page(
                request,
                "clip_experiment.html",
                dataset=v.dataset,
                e=e,
                version=version or e.latest,
                backdoor=v.load(f"{attack}.backdoor_report", version, {}),
                undefended=metrics.get("none", {}),
                table=html_table(table) if len(table) else "",
                figures=[f for f in SERVED_FIGURES[1:] if v.versions(f"{attack}.{f}")],
            )

        # One run saves all its outputs under one version: show the
        # selected run's where it made them.
        def same_run(name: str) -> str | None:
            return version if version in v.versions(name) else None

        attack_metrics = v.load(f"{attack}.attack_metrics", version, {})
        split = v.load(f"{attack}.split_metrics", same_run(f"{attack}.split_metrics"), {})
        defense = v.load(f"{attack}.defense_metrics", same_run(f"{attack}.defense_metrics"), {})
        robustness = f"{attack}.cgd_robustness"
        maps = {
            f"{attack}.entropy_map": "with the reference CLIP",
            f"{attack}.bdclip_entropy_map": "with a backdoored CLIP (cgd_robustness)",
        }
        # MCR's rows carry their curve (a list per t): drawn at
        # /plots/<attack>/mcr.png, not tabulated
        defense_table = pd.DataFrame(
            [
                {"defense": d} | {k: x for k, x in m.items() if k != "curve"}
                for d, m in defense.items()
            ]
        )
        return page(
            request,
            "experiment.html",
            dataset=v.dataset,
            e=e,
            version=version or e.latest,
            attack_metrics=attack_metrics,
            split=split,
            defense_table=html_table(defense_table) if len(defense_table) else "",
            robustness=v.load(robustness, same_run(robustness), None),
            has_mcr_curve=any("curve" in m for m in defense.values()),
            entropy_maps=[
                (caption, name, same_run(name))
                for name, caption in maps.items()
                if v.versions(name)
            ],
        )

    @app.get("/figures/{name}")
    def figure_file(name: str, version: str | None = None, env: str | None = None):
        if not name.endswith(SERVED_FIGURES):
            raise HTTPException(404, f"{name!r} is not a figure the platform serves")
        path = view(env).file_path(name, version)
        if path is None or not path.is_file():
            raise HTTPException(404, f"no saved figure {name!r}")
        return FileResponse(inside(project_path / "data", path), media_type="image/png")

    @app.get("/plots/{attack}/{kind}.png")
    def plot(attack: str, kind: str, env: str | None = None):
        v = view(env)
        drawers = {
            "samples": figures.classifier_samples,
            "curves": figures.defense_curves,
            "mcr": figures.mcr_curve,
        }
        if kind not in drawers or attack not in {e.attack for e in v.experiments()}:
            raise HTTPException(404, f"no plot {kind!r} for {attack!r}")
        return Response(_png(drawers[kind](v, attack)), media_type="image/png")

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard(
        request: Request, model: str = "classifier", sort: str = "der", env: str | None = None
    ):
        board = view(env).leaderboard()
        if sort not in board.columns:
            raise HTTPException(400, f"sort: unknown column {sort!r}; one of {list(board.columns)}")
        rows = board[board["model"] == model].sort_values(
            sort, ascending=sort in ("asr", "seconds")
        )
        grids = (
            [
                (name, html_table(summary))
                for name, summary in read_grid_summaries(project_path).items()
            ]
            if model == "classifier"
            else []
        )
        return page(
            request,
            "leaderboard.html",
            model=model,
            sort=sort,
            table=html_table(rows),
            n=len(rows),
            grids=grids,
        )

    @app.get("/grids/{name}/report", response_class=HTMLResponse)
    def grid_report(name: str):
        reports = {
            p.parent.name: p for p in (project_path / "data" / "09_grid").glob("*/grid_report.html")
        }
        if name not in reports:
            raise HTTPException(404, f"no grid report {name!r}")
        return FileResponse(inside(project_path / "data", reports[name]), media_type="text/html")

    @app.get("/runs", response_class=HTMLResponse)
    def runs(request: Request):
        return page(request, "runs.html", jobs=_recent(jobs, 50), error=None, form={})

    @app.post("/runs")
    def launch(
        request: Request, run: str = Form(...), namespaces: str = Form(""), params: str = Form("")
    ):
        names = [n.strip() for n in namespaces.split(",") if n.strip()]
        try:
            overrides = parse_overrides(params)
            command = run_command(run, names, overrides, env)
            # The run's own parameter check, before a job is queued: an unknown key
            # or a bad value is refused here.
            check_run_parameters(with_overrides(view().params, overrides), set(names))
        except (ValueError, FileNotFoundError) as error:
            form = {"run": run, "namespaces": namespaces, "params": params}
            message = without_local_paths(str(error), project_path)
            return page(request, "runs.html", 400, jobs=_recent(jobs, 50), error=message, form=form)
        title = f"{run}" + (f" [{', '.join(names)}]" if names else "")
        job = jobs.submit_run(title, command)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str):
        job = _job(jobs, job_id)
        return page(
            request,
            "job.html",
            job=job,
            log=jobs.log_tail(job_id),
            result=_result(platform_dir, job_id),
        )

    @app.get("/api/jobs/{job_id}")
    def job_state(job_id: str):
        return _job_json(jobs, _job(jobs, job_id))

    @app.delete("/api/jobs/{job_id}")
    def cancel_job(job_id: str):
        """Cancel a queued or running job: a run's whole process group is ended."""
        return _job_json(jobs, jobs.cancel(_job(jobs, job_id).id))

    @app.post("/jobs/{job_id}/cancel")
    def cancel_job_form(job_id: str):  # the job page's button (an HTML form cannot send DELETE)
        jobs.cancel(_job(jobs, job_id).id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/submit", response_class=HTMLResponse)
    def submit_form(request: Request):
        return page(
            request,
            "submit.html",
            architectures=list_models(),
            error=None,
            limit_mib=max_upload_bytes / 2**20,
        )

    @app.post("/submit")
    def submit(
        request: Request,
        file: UploadFile = File(...),
        architecture: str = Form(...),
        defend: bool = Form(False),
    ):
        # A plain def: FastAPI runs it in a worker thread, so reading the
        # catalog blocks no other request.
        # never more than the limit in memory (BodySizeLimit stops larger bodies)
        data = file.file.read(max_upload_bytes + 1)
        v = view()
        info = v.load("dataset_info")
        try:
            if info is None:
                raise SubmissionError(
                    f"no dataset_info saved for dataset {v.dataset!r}: run the "
                    "poison pipeline first"
                )
            checkpoint = checked_checkpoint(
                file.filename or "",
                data,
                architecture,
                info["num_classes"],
                info["mean"],
                info["std"],
                max_upload_bytes,
            )
        except SubmissionError as error:
            return page(
                request,
                "submit.html",
                400,
                architectures=list_models(),
                error=str(error),
                limit_mib=max_upload_bytes / 2**20,
            )
        job_id = jobs.new_id()
        folder = inside(platform_dir, platform_dir / "submissions" / job_id)
        ClassifierCheckpointDataset(filepath=str(folder / "model.safetensors")).save(checkpoint)

        def evaluate(log) -> None:
            results = evaluate_submission(view(), checkpoint, defend, log)
            save_text(folder / "result.json", json.dumps(results, indent=1))

        job = jobs.submit_call(
            f"submission {file.filename} ({architecture})" + (" + CGD" if defend else ""),
            evaluate,
            job_id=job_id,
        )
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    return app


def environments(project_path: Path) -> list[str]:
    """The Kedro environments a user can pick: every folder of conf/ but base and local."""
    return sorted(
        p.name
        for p in (project_path / "conf").iterdir()
        if p.is_dir() and p.name not in ("base", "local")
    )


def _recent(jobs: JobQueue, n: int = 10) -> list:
    return sorted(jobs.jobs.values(), key=lambda j: j.created, reverse=True)[:n]


def _job(jobs: JobQueue, job_id: str):
    if job_id not in jobs.jobs:
        raise HTTPException(404, f"no job {job_id!r}")
    return jobs.jobs[job_id]


def _job_json(jobs: JobQueue, job) -> JSONResponse:
    return JSONResponse(
        {
            "id": job.id,
            "status": job.status,
            "done": job.done,
            "total": job.total,
            "error": job.error,
            "seconds": round(job.seconds, 1),
            "log": jobs.log_tail(job.id, 8000),
        }
    )


def _result(platform_dir: Path, job_id: str) -> dict | None:
    path = platform_dir / "submissions" / job_id / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()
