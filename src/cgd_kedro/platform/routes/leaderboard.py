"""The leaderboard: every (attack, defense) row of the catalog's reports, and the grids' tables."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from cgd_kedro.platform.state import PlatformDep
from cgd_kedro.platform.submissions import inside
from cgd_kedro.reporting.grid import read_grid_summaries
from cgd_kedro.reporting.render import html_table

router = APIRouter()


@router.get("/leaderboard", response_class=HTMLResponse)
def leaderboard(
    request: Request,
    platform: PlatformDep,
    model: str = "classifier",
    sort: str = "der",
    env: str | None = None,
):
    board = platform.view(env).leaderboard()
    if sort not in board.columns:
        raise HTTPException(400, f"sort: unknown column {sort!r}; one of {list(board.columns)}")
    rows = board[board["model"] == model].sort_values(sort, ascending=sort in ("asr", "seconds"))
    grids = (
        [
            (name, html_table(summary))
            for name, summary in read_grid_summaries(platform.project_path).items()
        ]
        if model == "classifier"
        else []
    )
    return platform.page(
        request,
        "leaderboard.html",
        model=model,
        sort=sort,
        table=html_table(rows),
        n=len(rows),
        grids=grids,
    )


@router.get("/grids/{name}/report", response_class=HTMLResponse)
def grid_report(name: str, platform: PlatformDep):
    data = platform.project_path / "data"
    reports = {p.parent.name: p for p in (data / "09_grid").glob("*/grid_report.html")}
    if name not in reports:
        raise HTTPException(404, f"no grid report {name!r}")
    return FileResponse(inside(data, reports[name]), media_type="text/html")
