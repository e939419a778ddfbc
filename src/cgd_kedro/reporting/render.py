"""The self-contained HTML report (figures embedded as PNG data URIs, tables sortable by clicking a
header, no server or network needed) and the Markdown summary."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

# Clicking a header sorts its table (numbers numerically, text alphabetically; again = reverse).
# A backslash at the end of a line continues it: the script has no line break there.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => \
th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const ascending = th.dataset.order !== "asc";
  th.dataset.order = ascending ? "asc" : "desc";
  const key = row => { const text = row.cells[column].textContent; const n = parseFloat(text);
                       return isNaN(n) ? text : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1); })\
.forEach(row => body.appendChild(row));
}));
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin-bottom: 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f0f0f0; cursor: pointer; }
td:nth-child(-n+4) { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin-bottom: 1rem; }
"""


def figure_to_png(figure: Figure, dpi: int = 110) -> bytes:
    """The PNG bytes of ``figure``, trimmed to its content."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def figure_to_data_uri(figure: Figure, dpi: int = 110) -> str:
    """``data:image/png;base64,...`` of ``figure``."""
    return "data:image/png;base64," + base64.b64encode(figure_to_png(figure, dpi)).decode("ascii")


def html_table(frame: pd.DataFrame) -> str:
    """``frame`` as a sortable HTML table, floats with 3 decimals."""
    return frame.to_html(
        index=False, classes="sortable", float_format=lambda v: f"{v:.3f}", na_rep="-", border=0
    )


def render_html(
    title: str,
    sections: Mapping[str, str],
    tables: Mapping[str, pd.DataFrame],
    figures: Mapping[str, str],
) -> str:
    """One HTML page: ``sections`` (heading -> paragraph text), then each table, then each figure
    (caption -> data URI)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta "
        f"charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    parts += [
        f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>"
        for heading, text in sections.items()
    ]
    parts += [f"<h2>{html.escape(name)}</h2>{html_table(frame)}" for name, frame in tables.items()]
    parts += [
        f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='{uri}'>"
        for caption, uri in figures.items()
    ]
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub Markdown table, floats with 3 decimals."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if pd.isna(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def _attack_by_defense(rows: pd.DataFrame, cells: pd.Series) -> pd.DataFrame:
    """``cells`` (indexed by attack and defense) as an attack x defense table, both in the order
    they appear in ``rows``; missing cells are ``-``."""
    table = cells.unstack("defense").reindex(
        index=list(dict.fromkeys(rows["attack"])), columns=list(dict.fromkeys(rows["defense"]))
    )
    table.columns.name = None  # else the HTML shows an empty "defense" column
    return table.fillna("-").reset_index()


UNTRUSTED_MARK = " (budget too small)"
NO_EFFECT_MARK = " (no effect)"


def ca_asr_matrix(report: pd.DataFrame, model: str) -> pd.DataFrame:
    """Attack x defense matrix of ``"CA / ASR"`` strings (mean over seeds) for one ``model``; a cell
    whose row has a ``note`` is marked ``(budget too small)`` (``budget_note``) or ``(no effect)``
    (``no_effect_note``)."""
    rows = report[report["model"] == model]
    if rows.empty:  # e.g. no CLIP attack in this run
        return pd.DataFrame(columns=["attack"])
    means = rows.groupby(["attack", "defense"], sort=False)[["clean_acc", "asr"]].mean()
    cells = means.apply(lambda r: f"{r['clean_acc']:.3f} / {r['asr']:.3f}", axis=1)
    notes = (
        rows.assign(note=rows["note"].fillna("").astype(str) if "note" in rows else "")
        .groupby(["attack", "defense"], sort=False)["note"]
        .max()
    )
    cells = cells + notes.reindex(cells.index, fill_value="").map(note_mark)
    return _attack_by_defense(rows, cells)


def note_mark(note: str) -> str:
    """The suffix of a table cell whose row has ``note``:
    "" (none), " (no effect)" or " (budget too small)"."""
    if not note:
        return ""
    return NO_EFFECT_MARK if "no effect:" in note else UNTRUSTED_MARK


def has_note(report: pd.DataFrame) -> pd.Series:
    """Per row: True when its ``note`` is a non-empty string
    (reports saved before the column: none)."""
    if "note" not in report.columns:
        return pd.Series(False, index=report.index)
    return report["note"].fillna("").astype(str).astype(bool)


def notes_text(report: pd.DataFrame) -> str:
    """One line per row of ``report`` with a ``note``: ``attack / defense: note``."""
    return "\n".join(
        f"{row.attack} / {row.defense}: {row.note}" for row in report[has_note(report)].itertuples()
    )


def ca_asr_summary_matrix(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """Attack x defense matrix of ``"CA mean ± std / ASR mean ± std"`` from ``summarise_over_seeds``
    (the ``± std`` left out where a cell has a single seed), marked like ``ca_asr_matrix`` where a
    seed's row had a note."""
    rows = summary[summary["model"] == model]
    if rows.empty:
        return pd.DataFrame(columns=["attack"])

    def spread(mean: float, std: float) -> str:  # one seed: no spread to show
        return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"

    def cell(r) -> str:
        mark = note_mark(str(r["note"])) if "note" in r and isinstance(r["note"], str) else ""
        return (
            f"{spread(r['clean_acc_mean'], r['clean_acc_std'])} / "
            f"{spread(r['asr_mean'], r['asr_std'])}{mark}"
        )

    return _attack_by_defense(rows, rows.set_index(["attack", "defense"]).apply(cell, axis=1))
