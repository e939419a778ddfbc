"""The reporting contract's two tables (DESIGN.md), built from the per-attack artefacts.

- ``defense_report``: one row per (dataset, attack, defense) with ``dataset, attack, model,
  defense, clean_acc, asr, ra, der, seconds, seed``. ``model`` is ``classifier`` for the
  ``cgd_unlearn`` defenses (attack = the poisoning attack) and ``clip`` for the ``abd_defense`` ones
  (attack = the CLIP attack). ``defense = "none"`` is the undefended model. CLIP rows have no RA
  (the zero-shot evaluation does not measure it); their DER is computed against ``none`` like the
  classifiers'.
  ``note`` is empty, or says why a row should not be read as a result: a defense whose CA is under
  twice chance has not been given the budget it needs (``budget_note``); a pruning defense that
  pruned nothing is the undefended model (``no_effect_note``).
- ``split_report``: one row per (dataset, attack): the CLIP split's quality against ground truth.

Accuracies are fractions in [0, 1]. ``summarise_over_seeds`` turns a report with several seeds into
mean and standard deviation per key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from cgd_kedro.defenses.registry import list_defenses
from cgd_kedro.metrics import defense_effectiveness_rating

DEFENSE_COLUMNS = [
    "dataset",
    "attack",
    "model",
    "defense",
    "clean_acc",
    "asr",
    "ra",
    "der",
    "seconds",
    "seed",
    "note",
]
DEFENSE_KEYS = ["dataset", "attack", "model", "defense"]
SPLIT_KEYS = ["dataset", "attack"]
METRICS = ("clean_acc", "asr", "ra")


def classifier_rows(
    dataset: str, seed: int, defense_metrics: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> list[dict]:
    """Rows of ``defense_report`` from each attack's ``defense_metrics``
    (``{defense: {clean_acc, asr, ra, der, seconds}}``), ``none`` first within an attack."""
    rows = []
    for attack, metrics in sorted(defense_metrics.items()):
        if "none" not in metrics:
            raise ValueError(
                f"defense_metrics of {attack!r}: no 'none' entry (the undefended victim)"
            )
        for defense in sorted(metrics, key=lambda name: (name != "none", name)):
            values = metrics[defense]
            rows.append(
                {"dataset": dataset, "attack": attack, "model": "classifier", "defense": defense}
                | {key: float(values[key]) for key in (*METRICS, "der", "seconds")}
                | {"seed": seed}
                | ({"pruned": int(values["pruned"])} if "pruned" in values else {})
            )
    return rows


def clip_rows(abd_report: pd.DataFrame) -> list[dict]:
    """Rows of ``defense_report`` from ``abd_report`` (``dataset, attack, defense, clean_acc, asr,
    seconds, seed``); DER against each attack's ``none`` row, RA missing."""
    rows = []
    for (dataset, attack, seed), group in abd_report.groupby(
        ["dataset", "attack", "seed"], sort=True
    ):
        undefended = group[group["defense"] == "none"]
        if undefended.empty:
            raise ValueError(f"abd_report: no 'none' row for CLIP attack {attack!r} (seed {seed})")
        before = undefended.iloc[0][["clean_acc", "asr"]].astype(float).to_dict()
        for _, row in group.sort_values(
            "defense", key=lambda s: s.map(lambda name: (name != "none", name))
        ).iterrows():
            after = {"clean_acc": float(row["clean_acc"]), "asr": float(row["asr"])}
            rows.append(
                {
                    "dataset": dataset,
                    "attack": attack,
                    "model": "clip",
                    "defense": row["defense"],
                    **after,
                    "ra": float("nan"),
                    "der": defense_effectiveness_rating(before, after),
                    "seconds": float(row["seconds"]),
                    "seed": int(seed),
                }
            )
    return rows


# The parameter section holding each defense's training budget (named in its `note`).
BUDGET_PARAMETERS = {
    "cgd": "cgd",
    "cgd_bdclip": "cgd",
    "retrain": "victim.training",
    "abl": "abl",
    "fp_cgd": "fine_pruning",
    "fp_oracle": "fine_pruning",
    "anp_cgd": "anp",
    "anp_oracle": "anp",
    "mcr_cgd": "mcr",
    "mcr_oracle": "mcr",
    "ibau_cgd": "ibau",
    "ibau_oracle": "ibau",
    "ft": "clip_defense",
    "cleanclip": "clip_defense",
    "abd": "clip_defense",
}
TRUSTED_CHANCE_MULTIPLE = 2.0


def budget_note(defense: str, clean_acc: float, num_classes: int | None) -> str:
    """Empty, or why the row is not a result: a defense that leaves CA under twice chance has
    destroyed the model rather than defended it, so its ASR (low or high) says nothing."""
    if (
        defense == "none"
        or num_classes is None
        or not clean_acc < TRUSTED_CHANCE_MULTIPLE / num_classes
    ):
        return ""
    section = BUDGET_PARAMETERS.get(defense, defense)
    return (
        f"budget too small for this defense: CA {clean_acc:.3f} is under "
        f"{TRUSTED_CHANCE_MULTIPLE:g}x chance ({TRUSTED_CHANCE_MULTIPLE / num_classes:.2f}), so "
        f"its ASR means nothing; its training budget here ({section}.*) did not leave a working "
        "model. Raise it, or compare on a larger profile"
    )


def no_effect_note(defense: str, pruned: int | None) -> str:
    """Empty, or, for a pruning defense (Fine-Pruning, ANP) that pruned no channel, why the row
    equals the undefended model: its first pruning step already cost more held-out clean accuracy
    than ``acc_ratio`` allows, so no neuron it ranked as suspicious could be removed."""
    if pruned is None or pruned > 0:
        return ""
    section = BUDGET_PARAMETERS.get(defense, defense)
    return (
        "no effect: pruned no channel (its first pruning step cost more held-out clean accuracy "
        f"than {section}.acc_ratio allows), so this row is the undefended model; "
        + (
            "ANP's mask optimisation (anp.nb_iter) did not single out backdoor "
            "neurons at this budget"
            if section == "anp"
            else "the channels least active on clean data are not the backdoor's here"
        )
    )


def build_defense_report(
    dataset: str,
    seed: int,
    defense_metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
    abd_report: pd.DataFrame | None = None,
    robustness: Mapping[str, Mapping] | None = None,
    num_classes: int | None = None,
) -> pd.DataFrame:
    """``defense_report`` for one seed: the classifier defenses of every attack (with
    ``cgd_bdclip``, CGD whose reference was a backdoored CLIP, where ``robustness`` has the attack),
    then the CLIP ones. With ``num_classes``, rows whose CA is under twice chance carry a
    ``note`` (``budget_note``)."""
    robustness = robustness or {}
    unknown = sorted(set(robustness) - set(defense_metrics))
    if unknown:
        raise ValueError(f"cgd_robustness of {unknown}: no defense_metrics for these attacks")
    merged = {
        a: {**m, **({"cgd_bdclip": robustness[a]["cgd"]} if a in robustness else {})}
        for a, m in defense_metrics.items()
    }
    rows = classifier_rows(dataset, seed, merged) + (
        clip_rows(abd_report) if abd_report is not None else []
    )
    for row in rows:
        pruned = row.pop("pruned", None)  # not a report column: only read for the note
        row["note"] = budget_note(row["defense"], row["clean_acc"], num_classes) or no_effect_note(
            row["defense"], pruned
        )
    return pd.DataFrame(rows, columns=DEFENSE_COLUMNS)


CLEAN_DATA_COLUMNS = [
    "defense",
    "attacks",
    "lower_asr_cgd_fed",
    "higher_ca_cgd_fed",
    "mean_asr_cgd_fed",
    "mean_asr_oracle",
    "mean_ca_cgd_fed",
    "mean_ca_oracle",
]


def latest_defense_metrics(reporting_root: str | Path) -> dict[str, tuple[str, dict]]:
    """``{attack: (run version, defense_metrics)}`` from each attack's newest ``defense_metrics``
    under ``reporting_root`` (``data/08_reporting/<dataset>``), whatever run wrote it."""
    found = {}
    root = Path(reporting_root)
    for attack_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        versions = sorted(attack_dir.glob("defense_metrics.json/*/defense_metrics.json"))
        if versions:
            found[attack_dir.name] = (
                versions[-1].parent.name,
                json.loads(versions[-1].read_text()),
            )
    return found


def clean_data_pairs(defenses: Iterable[str]) -> list[str]:
    """The clean-data defenses among ``defenses`` with both a ``<name>_cgd`` and a
    ``<name>_oracle`` row, in the registry's order (FP, ANP, MCR, I-BAU, then any other)."""
    present = set(defenses)
    names = [d.removesuffix("_cgd") for d in present if d.endswith("_cgd")]
    order = [d.name for d in list_defenses()]
    return sorted(
        (n for n in names if f"{n}_oracle" in present),
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )


def clean_data_comparison(report: pd.DataFrame) -> pd.DataFrame:
    """CGD's second claim, one row per clean-data defense: the same defense fed CGD's clean subset
    (``<name>_cgd``) against fed genuinely clean oracle data (``<name>_oracle``), over the attacks
    whose classifier rows have both. ``lower_asr_cgd_fed`` / ``higher_ca_cgd_fed`` count the
    attacks where the CGD-fed row is strictly better, compared as reported (3 decimals, so a tie
    counts for neither); the means are over those attacks. Several seeds: their mean per attack
    first. Empty when no defense has both rows."""
    rows = report[report["model"] == "classifier"]
    means = rows.groupby(["attack", "defense"], sort=False)[["clean_acc", "asr"]].mean().round(3)
    out = []
    for name in clean_data_pairs(rows["defense"]):
        fed = means.xs(f"{name}_cgd", level="defense")
        oracle = means.xs(f"{name}_oracle", level="defense")
        attacks = fed.index.intersection(oracle.index)
        fed, oracle = fed.loc[attacks], oracle.loc[attacks]
        out.append(
            {
                "defense": name,
                "attacks": len(attacks),
                "lower_asr_cgd_fed": int((fed["asr"] < oracle["asr"]).sum()),
                "higher_ca_cgd_fed": int((fed["clean_acc"] > oracle["clean_acc"]).sum()),
                "mean_asr_cgd_fed": float(fed["asr"].mean()),
                "mean_asr_oracle": float(oracle["asr"].mean()),
                "mean_ca_cgd_fed": float(fed["clean_acc"].mean()),
                "mean_ca_oracle": float(oracle["clean_acc"].mean()),
            }
        )
    return pd.DataFrame(out, columns=CLEAN_DATA_COLUMNS)


ROBUSTNESS_COLUMNS = [
    "attack",
    "reference_clip",
    "auroc_clip",
    "auroc_combined",
    "triggered_recall",
    "clean_poisoned_fraction",
    "clean_acc",
    "asr",
    "ra",
]


def build_robustness_table(
    defense_report: pd.DataFrame, split_report: pd.DataFrame, robustness: Mapping[str, Mapping]
) -> pd.DataFrame:
    """CGD with the reference CLIP and with a backdoored one, side by side: for each attack in
    ``robustness`` (``{attack: {reference, split, cgd}}``) two rows, each with the split's quality
    and the CGD model's CA / ASR / RA."""
    split_columns = ROBUSTNESS_COLUMNS[2:6]
    rows = []
    for attack, result in sorted(robustness.items()):
        splits = split_report[split_report["attack"] == attack]
        cgd = defense_report[
            (defense_report["attack"] == attack) & (defense_report["defense"] == "cgd")
        ]
        if splits.empty or cgd.empty:
            raise ValueError(
                f"robustness table: attack {attack!r} has no split_report row or no 'cgd' "
                "row in defense_report"
            )
        rows.append(
            {"attack": attack, "reference_clip": "reference"}
            | splits.iloc[0][split_columns].to_dict()
            | cgd.iloc[0][list(METRICS)].to_dict()
        )
        rows.append(
            {"attack": attack, "reference_clip": f"backdoored ({result['reference']})"}
            | {key: result["split"][key] for key in split_columns}
            | {key: result["cgd"][key] for key in METRICS}
        )
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


def build_split_report(
    dataset: str, seed: int, split_metrics: Mapping[str, Mapping[str, float]]
) -> pd.DataFrame:
    """``split_report``: one row per attack with every figure of its ``split_metrics``."""
    rows = [
        {"dataset": dataset, "attack": attack} | dict(metrics) | {"seed": seed}
        for attack, metrics in sorted(split_metrics.items())
    ]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pd.DataFrame(rows, columns=columns or [*SPLIT_KEYS, "seed"])


def summarise_over_seeds(report: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and standard deviation of every numeric column per ``keys`` across seeds: columns
    ``<name>_mean`` and ``<name>_std`` (sample std; NaN with one seed) plus ``n_seeds``; with a
    ``note`` column, the first non-empty note of the group, prefixed by how many seeds had one."""
    missing = [key for key in [*keys, "seed"] if key not in report.columns]
    if missing:
        raise ValueError(f"summarise_over_seeds: the report has no column(s) {missing}")
    values = [
        c
        for c in report.columns
        if c not in [*keys, "seed"] and pd.api.types.is_numeric_dtype(report[c])
    ]
    grouped = report.groupby(keys, sort=False, dropna=False)
    summary = grouped[values].agg(["mean", "std"])
    summary.columns = [f"{name}_{stat}" for name, stat in summary.columns]
    summary["n_seeds"] = grouped["seed"].nunique()
    if "note" in report.columns:

        def first_note(notes: pd.Series) -> str:
            noted = [n for n in notes.fillna("").astype(str) if n]
            return f"{len(noted)} of {len(notes)} seeds: {noted[0]}" if noted else ""

        summary["note"] = grouped["note"].agg(first_note)
    return summary.reset_index()


def check_seeds(seeds) -> list[int] | None:
    """``reporting.seeds``: null or a non-empty list of distinct non-negative integers."""
    if seeds is None:
        return None
    integers = isinstance(seeds, list | tuple) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    )
    if (
        not integers or not seeds or len(set(seeds)) != len(seeds)
    ):  # integers first: set() needs hashable items
        raise ValueError(
            "reporting.seeds: expected null or a list of distinct non-negative "
            f"integers, got {seeds!r}"
        )
    return list(seeds)


def latest_per_seed(versions: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One report per seed from several saved versions (``{version key: report}``, keys sortable by
    time as Kedro's version timestamps are): for each seed, the rows of
    the newest version holding it."""
    if not versions:
        raise ValueError("latest_per_seed: no saved report versions")
    newest: dict[int, pd.DataFrame] = {}
    for key in sorted(versions):  # oldest first: newer versions overwrite
        report = versions[key]
        if "seed" not in report.columns:
            raise ValueError(f"latest_per_seed: version {key!r} has no 'seed' column")
        for seed, rows in report.groupby("seed"):
            newest[int(seed)] = rows
    return pd.concat([newest[seed] for seed in sorted(newest)], ignore_index=True)
