"""Project commands: ``kedro platform`` (the web platform) and ``kedro grid``
(experiment grids on Dask)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(name="cgd_kedro")
def commands() -> None:
    """cgd_kedro's project commands."""


@commands.command(name="platform")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; keep 127.0.0.1 unless you mean to share it.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--env",
    "-e",
    default=None,
    help="Kedro environment to show and run (default: the default run's).",
)
@click.option(
    "--project-path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--max-job-hours",
    default=12.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="A pipeline run taking longer is cancelled (its whole process group ended).",
)
def platform(
    host: str, port: int, env: str | None, project_path: Path, max_job_hours: float
) -> None:
    """Explore experiments, compare defenses, run pipelines and submit models in the browser."""
    import os

    import uvicorn
    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.platform.app import create_app

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(project_path.resolve())
    click.echo(f"cgd_kedro platform on http://{host}:{port}/ (Ctrl+C stops it)")
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, which cancels the platform's jobs.
    uvicorn.run(
        create_app(project_path, env, max_job_seconds=max_job_hours * 3600),
        host=host,
        port=port,
        log_level="warning",
    )


@commands.command(name="grid")
@click.option(
    "--spec",
    "spec_path",
    default="conf/base/grid.yml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="the grid spec: envs, pipelines, namespaces, seeds, params, sweep",
)
@click.option(
    "--cluster",
    default=None,
    help="local, slurm, or a scheduler address such as tcp://10.0.0.5:8786 (default: dask.yml's)",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="workers of a local cluster (default: one per GPU, else per core)",
)
@click.option("--rerun-failed", is_flag=True, help="retry only the cells that failed before")
@click.option("--dry-run", is_flag=True, help="list the cells and what would run, run nothing")
@click.option("--env", "-e", default=None, help="environment whose dask.yml configures the cluster")
@click.option(
    "--project-path", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
def grid(
    spec_path: Path,
    cluster: str | None,
    workers: int | None,
    rerun_failed: bool,
    dry_run: bool,
    env: str | None,
    project_path: Path,
) -> None:
    """Run attacks x seeds x environments x sweeps, one Kedro session per cell, on Dask;
    then the mean ± std table."""
    import os

    from kedro.framework.startup import bootstrap_project

    from cgd_kedro.cluster import ClusterError
    from cgd_kedro.config import ParameterError
    from cgd_kedro.grid.run import run_grid

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(project_path.resolve())
    spec = spec_path if spec_path.is_absolute() else project_path / spec_path
    try:
        result = run_grid(
            spec,
            project_path,
            cluster=cluster,
            workers=workers,
            rerun_failed=rerun_failed,
            dry_run=dry_run,
            env=env,
            echo=click.echo,
        )
    except (ParameterError, ClusterError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    if result.failed:
        raise SystemExit(1)
