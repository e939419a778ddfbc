"""Experiments: the overview, the list, one experiment's page, its saved figures and drawn plots."""

from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from cgd_kedro.platform import figures
from cgd_kedro.platform.state import PlatformDep
from cgd_kedro.platform.submissions import inside
from cgd_kedro.reporting.render import figure_to_png, html_table

router = APIRouter()

# Figures a page may show from the catalog: classifier attacks' entropy
# maps and the CLIP attacks' PNGs.
SERVED_FIGURES = (
    "entropy_map",
    "abd_samples_png",
    "similarity_panel_png",
    "clip_defense_curves_png",
)
# Plots drawn on request from the catalog (``/plots/<attack>/<kind>.png``).
PLOTS = {
    "samples": figures.classifier_samples,
    "curves": figures.defense_curves,
    "mcr": figures.mcr_curve,
}


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, platform: PlatformDep, env: str | None = None):
    v = platform.view(env)
    return platform.page(
        request,
        "overview.html",
        dataset=v.dataset,
        experiments=v.experiments(),
        jobs=platform.recent_jobs(),
        rows=len(v.leaderboard()),
        report=(platform.project_path / f"data/08_reporting/{v.dataset}/report.html").exists(),
    )


@router.get("/experiments", response_class=HTMLResponse)
def experiments(request: Request, platform: PlatformDep, env: str | None = None):
    v = platform.view(env)
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
    return platform.page(request, "experiments.html", dataset=v.dataset, rows=rows)


@router.get("/experiments/{attack}", response_class=HTMLResponse)
def experiment(
    request: Request,
    attack: str,
    platform: PlatformDep,
    version: str | None = None,
    env: str | None = None,
):
    v = platform.view(env)
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
        return platform.page(
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
        [{"defense": d} | {k: x for k, x in m.items() if k != "curve"} for d, m in defense.items()]
    )
    return platform.page(
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
            (caption, name, same_run(name)) for name, caption in maps.items() if v.versions(name)
        ],
    )


@router.get("/figures/{name}")
def figure_file(
    name: str, platform: PlatformDep, version: str | None = None, env: str | None = None
):
    if not name.endswith(SERVED_FIGURES):
        raise HTTPException(404, f"{name!r} is not a figure the platform serves")
    path = platform.view(env).file_path(name, version)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no saved figure {name!r}")
    return FileResponse(inside(platform.project_path / "data", path), media_type="image/png")


@router.get("/plots/{attack}/{kind}.png")
def plot(attack: str, kind: str, platform: PlatformDep, env: str | None = None):
    v = platform.view(env)
    if kind not in PLOTS or attack not in {e.attack for e in v.experiments()}:
        raise HTTPException(404, f"no plot {kind!r} for {attack!r}")
    return Response(figure_to_png(PLOTS[kind](v, attack), dpi=100), media_type="image/png")
