"""The reporting tables: rows, DER of CLIP defenses, the split report and the summary over seeds."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from cgd_kedro.reporting.render import ca_asr_matrix, ca_asr_summary_matrix, notes_text
from cgd_kedro.reporting.tables import (
    DEFENSE_COLUMNS,
    build_defense_report,
    build_robustness_table,
    build_split_report,
    check_seeds,
    clean_data_comparison,
    latest_defense_metrics,
    latest_per_seed,
    summarise_over_seeds,
)

METRICS = {
    "badnets": {
        "cgd": {"clean_acc": 0.93, "asr": 0.0, "ra": 0.9, "der": 0.9995, "seconds": 40.0},
        "none": {"clean_acc": 0.933, "asr": 0.999, "ra": 0.001, "der": 0.5, "seconds": 0.0},
    },
    "blended": {
        "none": {"clean_acc": 0.932, "asr": 0.999, "ra": 0.001, "der": 0.5, "seconds": 0.0}
    },
}
ABD = pd.DataFrame(
    [
        ["embedded", "clip_badnet", "abd", 0.798, 0.195, 87.0, 0],
        ["embedded", "clip_badnet", "none", 0.795, 0.998, 0.0, 0],
        ["embedded", "clip_badnet", "cleanclip", 0.767, 1.0, 77.0, 0],
    ],
    columns=["dataset", "attack", "defense", "clean_acc", "asr", "seconds", "seed"],
)


def test_defense_report_has_the_contract_columns_none_first_and_clip_der():
    report = build_defense_report("embedded", 0, METRICS, ABD)
    assert list(report.columns) == DEFENSE_COLUMNS
    assert report[["attack", "defense"]].values.tolist() == [
        ["badnets", "none"],
        ["badnets", "cgd"],
        ["blended", "none"],
        ["clip_badnet", "none"],
        ["clip_badnet", "abd"],
        ["clip_badnet", "cleanclip"],
    ]
    assert report["model"].tolist() == ["classifier"] * 3 + ["clip"] * 3
    clip = report[report["model"] == "clip"].set_index("defense")
    # DER = (max(0, ASR drop) - max(0, CA drop) + 1) / 2 against the backdoored CLIP
    assert clip.loc["abd", "der"] == pytest.approx((0.998 - 0.195 + 1) / 2)
    assert clip.loc["cleanclip", "der"] == pytest.approx((0 - (0.795 - 0.767) + 1) / 2)
    assert clip.loc["none", "der"] == pytest.approx(0.5) and math.isnan(clip.loc["abd", "ra"])
    assert report.loc[1, "der"] == pytest.approx(0.9995) and set(report["seed"]) == {0}


def test_a_missing_undefended_row_is_named():
    with pytest.raises(ValueError, match="defense_metrics of 'lc': no 'none' entry"):
        build_defense_report("embedded", 0, {"lc": {"cgd": METRICS["badnets"]["cgd"]}})
    with pytest.raises(ValueError, match="no 'none' row for CLIP attack 'clip_badnet'"):
        build_defense_report("embedded", 0, {}, ABD[ABD["defense"] != "none"])


def test_split_report_one_row_per_attack():
    report = build_split_report(
        "embedded",
        1,
        {
            "wanet": {"auroc_combined": 0.99, "clean_size": 15620},
            "badnets": {"auroc_combined": 0.999},
        },
    )
    assert report["attack"].tolist() == ["badnets", "wanet"]
    assert list(report.columns) == ["dataset", "attack", "auroc_combined", "seed", "clean_size"]
    assert report.loc[1, "clean_size"] == 15620 and math.isnan(report.loc[0, "clean_size"])


def test_summary_over_seeds_gives_mean_and_sample_std():
    reports = [
        build_defense_report(
            "embedded", seed, {"badnets": {"none": {**METRICS["badnets"]["none"], "asr": asr}}}
        )
        for seed, asr in ((0, 0.9), (1, 1.0), (2, 0.95))
    ]
    summary = summarise_over_seeds(
        pd.concat(reports, ignore_index=True), ["dataset", "attack", "model", "defense"]
    )
    row = summary.iloc[0]
    assert (
        row["n_seeds"] == 3
        and row["asr_mean"] == pytest.approx(0.95)
        and row["asr_std"] == pytest.approx(0.05)
    )
    assert row["clean_acc_std"] == pytest.approx(0.0) and "seed_mean" not in summary.columns
    with pytest.raises(ValueError, match=r"no column\(s\) \['variant'\]"):
        summarise_over_seeds(reports[0], ["variant"])


def test_latest_per_seed_keeps_the_newest_version_of_each_seed():
    old = build_defense_report(
        "embedded", 0, {"badnets": {"none": METRICS["badnets"]["none"] | {"asr": 0.5}}}
    )
    new = build_defense_report("embedded", 0, {"badnets": {"none": METRICS["badnets"]["none"]}})
    other = build_defense_report(
        "embedded", 1, {"badnets": {"none": METRICS["badnets"]["none"] | {"asr": 0.9}}}
    )
    merged = latest_per_seed(
        {
            "2026-11-24T02/defense_report": new,
            "2026-11-24T01/defense_report": old,
            "2026-11-23T09/x": other,
        }
    )
    assert merged[["seed", "asr"]].values.tolist() == [[0, 0.999], [1, 0.9]]
    with pytest.raises(ValueError, match="no saved report versions"):
        latest_per_seed({})


ROBUSTNESS = {
    "badnets": {
        "reference": "clip_badnet",
        "split": {
            "auroc_clip": 0.708,
            "auroc_combined": 0.964,
            "triggered_recall": 0.964,
            "clean_poisoned_fraction": 2e-4,
        },
        "cgd": {"clean_acc": 0.925, "asr": 0.001, "ra": 0.919, "der": 0.999, "seconds": 32.0},
    }
}


def test_robustness_adds_cgd_bdclip_rows_and_a_side_by_side_table():
    report = build_defense_report("embedded", 0, METRICS, robustness=ROBUSTNESS)
    assert report["defense"].tolist() == ["none", "cgd", "cgd_bdclip", "none"]
    assert report.loc[2, ["clean_acc", "asr", "ra", "seconds"]].tolist() == [
        0.925,
        0.001,
        0.919,
        32.0,
    ]
    split = build_split_report(
        "embedded",
        0,
        {
            "badnets": {
                "auroc_clip": 0.981,
                "auroc_combined": 0.999,
                "triggered_recall": 0.99,
                "clean_poisoned_fraction": 0.0,
            }
        },
    )
    table = build_robustness_table(report, split, ROBUSTNESS)
    assert table["reference_clip"].tolist() == ["reference", "backdoored (clip_badnet)"]
    assert table["auroc_clip"].tolist() == [0.981, 0.708] and table["asr"].tolist() == [0.0, 0.001]
    assert table["clean_acc"].tolist() == [0.93, 0.925]


def test_robustness_of_an_unknown_attack_is_named():
    with pytest.raises(ValueError, match=r"cgd_robustness of \['lc'\]: no defense_metrics"):
        build_defense_report("embedded", 0, METRICS, robustness={"lc": ROBUSTNESS["badnets"]})
    with pytest.raises(
        ValueError, match="robustness table: attack 'badnets' has no split_report row"
    ):
        build_robustness_table(
            build_defense_report("embedded", 0, METRICS),
            build_split_report("embedded", 0, {}),
            ROBUSTNESS,
        )


@pytest.mark.parametrize("bad", [[], [1, 1], [-1], [0.5], 3, "0,1", [True], [[0]]])
def test_bad_seeds_lists_are_named(bad):
    with pytest.raises(
        ValueError,
        match=r"reporting\.seeds: expected null or a list of distinct non-negative integers",
    ):
        check_seeds(bad)
    assert check_seeds(None) is None and check_seeds([2, 0]) == [2, 0]


def test_a_defense_under_twice_chance_is_marked_budget_too_small_in_the_report_and_its_tables():
    metrics = {
        "badnets": {
            "none": {**METRICS["badnets"]["none"]},
            "abl": {"clean_acc": 0.139, "asr": 1.0, "ra": 0.0, "der": 0.5, "seconds": 571.0},
            "cgd": METRICS["badnets"]["cgd"],
        }
    }
    report = build_defense_report("embedded", 0, metrics, num_classes=10)
    notes = report.set_index("defense")["note"]
    assert notes["cgd"] == "" and notes["none"] == ""
    assert (
        notes["abl"].startswith(
            "budget too small for this defense: CA 0.139 is under 2x chance (0.20)"
        )
        and "(abl.*)" in notes["abl"]
    )
    matrix = ca_asr_matrix(report, "classifier").set_index("attack")
    assert matrix.loc["badnets", "abl"] == "0.139 / 1.000 (budget too small)"
    assert not matrix.loc["badnets", "cgd"].endswith("(budget too small)")
    assert notes_text(report).startswith("badnets / abl: budget too small")
    # without the number of classes nothing is judged
    assert set(build_defense_report("embedded", 0, metrics)["note"]) == {""}


def test_a_pruning_defense_that_pruned_nothing_is_marked_no_effect():
    victim = METRICS["badnets"]["none"]
    metrics = {
        "badnets": {
            "none": {**victim},
            "anp_cgd": {**victim, "der": 0.5, "seconds": 18.7, "pruned": 0},
            "fp_cgd": {
                "clean_acc": 0.60,
                "asr": 0.05,
                "ra": 0.55,
                "der": 0.97,
                "seconds": 22.9,
                "pruned": 18,
            },
        }
    }
    report = build_defense_report("embedded", 0, metrics, num_classes=10)
    notes = report.set_index("defense")["note"]
    assert (
        notes["anp_cgd"].startswith("no effect: pruned no channel")
        and "anp.acc_ratio" in notes["anp_cgd"]
    )
    assert notes["fp_cgd"] == "" and notes["none"] == ""
    matrix = ca_asr_matrix(report, "classifier").set_index("attack")
    assert (
        matrix.loc["badnets", "anp_cgd"].endswith(" (no effect)")
        and matrix.loc["badnets", "fp_cgd"] == "0.600 / 0.050"
    )
    assert "pruned" not in report.columns


def test_the_multi_seed_matrix_carries_the_notes_of_any_seed():
    victim = METRICS["badnets"]["none"]
    reports = [
        build_defense_report(
            "embedded",
            seed,
            {
                "badnets": {
                    "none": {**victim},
                    "abl": {**victim, "clean_acc": ca, "der": 0.5, "seconds": 1.0},
                }
            },
            num_classes=10,
        )
        for seed, ca in ((0, 0.139), (1, 0.70))
    ]
    summary = summarise_over_seeds(
        pd.concat(reports, ignore_index=True), ["dataset", "attack", "model", "defense"]
    )
    notes = summary.set_index("defense")["note"]
    assert (
        notes["abl"].startswith("1 of 2 seeds: budget too small for this defense: CA 0.139")
        and notes["none"] == ""
    )
    matrix = ca_asr_summary_matrix(summary, "classifier").set_index("attack")
    assert (
        matrix.loc["badnets", "abl"].endswith("(budget too small)")
        and "budget" not in matrix.loc["badnets", "none"]
    )


def _row(ca: float, asr: float) -> dict:
    return {"clean_acc": ca, "asr": asr, "ra": 0.0, "der": 0.5, "seconds": 1.0}


def test_clean_data_comparison_counts_attacks_where_the_cgd_fed_defense_is_strictly_better():
    # BadNets embedded_large figures (seed 0) for fp and mcr, and a made-up second attack
    metrics = {
        "badnets": {
            "none": _row(0.936, 0.999),
            "cgd": _row(0.935, 0.001),
            "fp_cgd": _row(0.946, 0.071),
            "fp_oracle": _row(0.909, 0.303),
            "mcr_cgd": _row(0.941, 0.839),
            "mcr_oracle": _row(0.912, 1.0),
            "anp_cgd": _row(0.926, 0.936),  # no oracle row: not compared
        },
        "blended": {
            "none": _row(0.932, 0.999),
            "fp_cgd": _row(0.90, 0.5),
            "fp_oracle": _row(0.92, 0.5),  # same ASR: a tie counts for neither
            "mcr_cgd": _row(0.93, 0.2),  # no oracle row for this attack: mcr over badnets only
        },
    }
    reports = [build_defense_report("embedded", seed, metrics) for seed in (0, 1)]
    table = clean_data_comparison(pd.concat(reports, ignore_index=True)).set_index("defense")
    assert table.index.tolist() == ["fp", "mcr"]
    assert table.loc["fp", ["attacks", "lower_asr_cgd_fed", "higher_ca_cgd_fed"]].tolist() == [
        2,
        1,
        1,
    ]
    assert table.loc["mcr", ["attacks", "lower_asr_cgd_fed", "higher_ca_cgd_fed"]].tolist() == [
        1,
        1,
        1,
    ]
    assert table.loc["fp", "mean_asr_cgd_fed"] == pytest.approx((0.071 + 0.5) / 2)
    assert table.loc["fp", "mean_ca_oracle"] == pytest.approx((0.909 + 0.92) / 2)
    # differences below the reported 3 decimals are ties
    close = {
        "badnets": {
            "none": _row(0.9, 1.0),
            "fp_cgd": _row(0.9001, 0.5),
            "fp_oracle": _row(0.9, 0.5002),
        }
    }
    tied = clean_data_comparison(build_defense_report("embedded", 0, close))
    assert tied[["lower_asr_cgd_fed", "higher_ca_cgd_fed"]].values.tolist() == [[0, 0]]
    assert clean_data_comparison(build_defense_report("embedded", 0, METRICS)).empty


def test_latest_defense_metrics_reads_each_attacks_newest_version(tmp_path):
    for attack, version, asr in (
        ("badnets", "2026-12-01T10.00.00.000Z", 0.5),
        ("badnets", "2026-12-02T03.12.26.329Z", 0.1),
        ("blended", "2026-11-30T09.00.00.000Z", 0.2),
    ):
        folder = tmp_path / attack / "defense_metrics.json" / version
        folder.mkdir(parents=True)
        (folder / "defense_metrics.json").write_text(json.dumps({"cgd": {"asr": asr}}))
    (tmp_path / "sig").mkdir()  # an attack without defense_metrics yet
    assert latest_defense_metrics(tmp_path) == {
        "badnets": ("2026-12-02T03.12.26.329Z", {"cgd": {"asr": 0.1}}),
        "blended": ("2026-11-30T09.00.00.000Z", {"cgd": {"asr": 0.2}}),
    }
    assert latest_defense_metrics(tmp_path / "missing") == {}
