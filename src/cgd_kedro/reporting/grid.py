"""A grid's summary: every complete cell's metrics, mean ± std over seeds, one figure per sweep.

Per cell the newest ``defense_metrics`` (or, for a grid without ``cgd_unlearn``, the undefended
victim's ``attack_metrics`` as defense ``none``) becomes rows ``env, attack, defense, <sweep
keys>, seed, clean_acc, asr, ra, der, seconds``; ``grid_summary`` averages them over seeds per
(env, attack, defense, sweep values). Written to ``data/09_grid/<grid>/``: ``grid_cells.csv``,
``grid_summary.csv``, ``grid_<sweep>.png`` and ``grid_report.html``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from cgd_kedro.datasets.atomic import save_text
from cgd_kedro.grid.spec import Cell
from cgd_kedro.reporting.render import figure_to_data_uri, render_html
from cgd_kedro.reporting.tables import summarise_over_seeds

METRICS = ("clean_acc", "asr", "ra", "der", "seconds")


def newest(folder: Path, pattern: str) -> Path | None:
    """The newest version's file matching ``pattern`` under ``folder``
    (versions sort by name = time)."""
    found = sorted(folder.glob(pattern), key=lambda p: p.parent.name)
    return found[-1] if found else None


def cell_rows(folder: Path, cell: Cell) -> list[dict]:
    """The rows of one complete cell (its newest outputs)."""
    base = {"env": cell.env, "attack": cell.attack} | {
        key: _plain(value) for key, value in cell.sweep
    }
    metrics_file = newest(
        folder / "data" / "08_reporting",
        f"*/{cell.attack}/defense_metrics.json/*/defense_metrics.json",
    )
    if metrics_file is not None:
        metrics = json.loads(metrics_file.read_text())
    else:
        attack_file = newest(
            folder / "data" / "08_reporting",
            f"*/{cell.attack}/attack_metrics.json/*/attack_metrics.json",
        )
        if attack_file is None:
            return []
        attack = json.loads(attack_file.read_text())
        metrics = {
            "none": {key: attack[key] for key in ("clean_acc", "asr", "ra")}
            | {"der": 0.5, "seconds": 0.0}
        }
    return [
        base
        | {"defense": name, "seed": cell.seed}
        | {k: float(values.get(k, np.nan)) for k in METRICS}
        for name, values in metrics.items()
    ]


def _plain(value):
    return json.dumps(value) if isinstance(value, list | dict) else value


def summarise_grid(rows: pd.DataFrame, sweep_keys: Sequence[str]) -> pd.DataFrame:
    """Mean and std over seeds per (env, attack, defense, sweep values),
    defenses in a stable order."""
    if rows.empty:
        return pd.DataFrame(columns=["env", "attack", "defense", *sweep_keys, "n_seeds"])
    ordered = rows.assign(_none_last=rows["defense"] != "none").sort_values(
        ["env", "attack", "_none_last", "defense", *sweep_keys]
    )
    return summarise_over_seeds(
        ordered.drop(columns="_none_last"), ["env", "attack", "defense", *sweep_keys]
    )


def format_summary(summary: pd.DataFrame, sweep_keys: Sequence[str]) -> pd.DataFrame:
    """The summary as ``mean ± std`` strings (``mean`` alone with one seed) for the report."""
    table = summary[["env", "attack", "defense", *sweep_keys, "n_seeds"]].copy()
    for metric in ("clean_acc", "asr", "ra", "seconds"):
        mean, std = summary[f"{metric}_mean"], summary[f"{metric}_std"]
        digits = 1 if metric == "seconds" else 3
        table[metric] = [
            f"{m:.{digits}f}" if np.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"
            for m, s in zip(mean, std, strict=True)
        ]
    return table


def plot_sweep(summary: pd.DataFrame, key: str, other_keys: Sequence[str]) -> Figure:
    """CA and ASR (mean ± std over seeds) against the values of sweep ``key``, one column per
    (env, attack), one line per defense (and per value of the other sweeps)."""
    groups = list(summary.groupby(["env", "attack"], sort=True))
    figure = Figure(figsize=(max(5.0, 3.6 * len(groups)), 5.6))
    axes = np.atleast_2d(figure.subplots(2, len(groups), squeeze=False))
    colours = colormaps["tab10"]
    values = list(dict.fromkeys(summary[key]))
    position = {value: i for i, value in enumerate(values)}
    for column, ((env, attack), group) in enumerate(groups):
        lines = list(group.groupby(["defense", *other_keys], sort=False))
        for i, (label, line) in enumerate(lines):
            x = [position[v] for v in line[key]]
            name = label if isinstance(label, str) else " ".join(str(part) for part in label)
            for row, metric in enumerate(("clean_acc", "asr")):
                axes[row, column].errorbar(
                    x,
                    line[f"{metric}_mean"],
                    yerr=line[f"{metric}_std"].fillna(0),
                    marker="o",
                    ms=3,
                    capsize=3,
                    color=colours(i % 10),
                    label=name,
                )
        for row, label in enumerate(("clean accuracy", "attack success rate")):
            axis = axes[row, column]
            axis.set_xticks(range(len(values)), [str(v) for v in values])
            axis.set_ylim(0, 1.02)
            axis.grid(alpha=0.3)
            axis.set_ylabel(label if column == 0 else "")
        axes[0, column].set_title(f"{env}: {attack}", fontsize=9)
        axes[1, column].set_xlabel(key)
    axes[0, -1].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"mean ± std over seeds against {key}")
    figure.tight_layout()
    return figure


def write_grid_report(
    root: Path,
    name: str,
    cells: Sequence[Cell],
    sweep_keys: Sequence[str],
    failed: Sequence[str] = (),
) -> pd.DataFrame:
    """Collect the complete cells under ``root`` and write the grid's tables, figures and HTML
    report; returns the summary."""
    from cgd_kedro.grid.cells import cell_dir, read_state

    rows = [
        row
        for cell in cells
        if (read_state(cell_dir(root, cell)) or {}).get("status") == "complete"
        for row in cell_rows(cell_dir(root, cell), cell)
    ]
    frame = pd.DataFrame(rows, columns=["env", "attack", *sweep_keys, "defense", "seed", *METRICS])
    summary = summarise_grid(frame, sweep_keys)
    save_text(root / "grid_cells.csv", frame.to_csv(index=False))
    save_text(root / "grid_summary.csv", summary.to_csv(index=False))
    figures = {}
    for key in sweep_keys:
        figure = (
            plot_sweep(summary, key, [k for k in sweep_keys if k != key]) if len(summary) else None
        )
        if figure is not None:
            figure.savefig(
                root / f"grid_{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}.png",
                dpi=110,
                bbox_inches="tight",
            )
            figures[f"against {key}"] = figure_to_data_uri(figure)
    complete = len({(r["env"], r["attack"], r["seed"], *(r[k] for k in sweep_keys)) for r in rows})
    text = (
        f"Grid {name}: {complete} of {len(cells)} cells complete"
        + (f", {len(failed)} failed ({', '.join(failed)})" if failed else "")
        + (
            ". Each cell: clean accuracy, ASR and RA on the test set, mean ± standard deviation "
            "over seeds (one Kedro session per cell)."
        )
    )
    save_text(
        root / "grid_report.html",
        render_html(
            f"cgd_kedro grid: {name}",
            {"summary": text},
            {"grid summary": format_summary(summary, sweep_keys)},
            figures,
        ),
    )
    return summary


def read_grid_summaries(project_path: str | Path) -> dict[str, pd.DataFrame]:
    """``{grid name: its summary as mean ± std strings}`` of every grid under ``data/09_grid`` (for
    the platform's leaderboard); the sweep columns are those between
    ``defense`` and the first mean."""
    summaries = {}
    for path in sorted(Path(project_path).glob("data/09_grid/*/grid_summary.csv")):
        summary = pd.read_csv(path)
        if summary.empty:
            continue
        first_mean = next(i for i, c in enumerate(summary.columns) if c.endswith("_mean"))
        summaries[path.parent.name] = format_summary(summary, list(summary.columns[3:first_mean]))
    return summaries
