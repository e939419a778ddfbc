"""``kedro platform``: serve the web platform of the project in the current directory."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(name="cgd_kedro")
def commands() -> None:
    """cgd_kedro's project commands."""


@commands.command(name="platform")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; keep 127.0.0.1 unless you mean to share it.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--env", "-e", default=None, help="Kedro environment to show and run (default: the default run's).")
@click.option("--project-path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-job-hours", default=12.0, show_default=True, type=click.FloatRange(min=0.01),
              help="A pipeline run taking longer is cancelled (its whole process group ended).")  # fmt: skip
def platform(host: str, port: int, env: str | None, project_path: Path, max_job_hours: float) -> None:
    """Explore experiments, compare defenses, run pipelines and submit models in the browser."""
    import os

    import uvicorn
    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.platform.app import create_app

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(project_path.resolve())
    click.echo(f"cgd_kedro platform on http://{host}:{port}/ (Ctrl+C stops it)")
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, which cancels the platform's jobs.
    uvicorn.run(create_app(project_path, env, max_job_seconds=max_job_hours * 3600), host=host, port=port, log_level="warning")
