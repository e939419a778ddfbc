"""The clean-data defenses, fed CGD's clean subset vs fed oracle clean data, from the latest runs.

Reads each attack's newest ``defense_metrics`` under ``data/08_reporting/<dataset>/`` (whatever
run wrote it: attacks may come from separate ``kedro run --namespaces <attack>`` runs) and prints
the README's table: CA / ASR / RA of the undefended victim, CGD and every ``<name>_cgd`` /
``<name>_oracle`` pair, then the seconds, then the report's count of attacks where the CGD-fed
defense is strictly better than its oracle by ASR and by CA (``clean_data_comparison``).

    python benchmarks/clean_data_table.py [--dataset embedded] [--data data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgd_kedro.reporting.render import markdown_table
from cgd_kedro.reporting.tables import (
    build_defense_report,
    clean_data_comparison,
    clean_data_pairs,
    latest_defense_metrics,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--data", default="data")
    args = parser.parse_args()
    root = Path(args.data) / "08_reporting" / args.dataset
    found = latest_defense_metrics(root)
    if not found:
        raise SystemExit(
            f"no defense_metrics under {root}; run `kedro run --pipelines cgd_unlearn_clean_data` "
            "first"
        )
    report = build_defense_report(args.dataset, 0, {a: m for a, (_, m) in found.items()})
    pairs = clean_data_pairs(report["defense"])
    defenses = ["none", "cgd"] + [f"{p}_{source}" for p in pairs for source in ("cgd", "oracle")]
    cells = report.set_index(["attack", "defense"])
    print(f"dataset {args.dataset}: CA / ASR / RA from each attack's latest run\n")
    print("| attack | version | " + " | ".join(defenses) + " |")
    print("|---|---|" + "---|" * len(defenses))
    for attack, (version, metrics) in found.items():

        def cell(defense: str, attack: str = attack, metrics: dict = metrics) -> str:
            if (attack, defense) not in cells.index:
                return "-"
            row = cells.loc[(attack, defense)]
            text = f"{row['clean_acc']:.3f} / {row['asr']:.3f} / {row['ra']:.3f}"
            return text + (f" (t = {metrics[defense]['t']:g})" if "t" in metrics[defense] else "")

        print(f"| {attack} | {version} | " + " | ".join(cell(d) for d in defenses) + " |")
    print("\nseconds\n")
    print("| attack | " + " | ".join(defenses[1:]) + " |")
    print("|---|" + "---|" * (len(defenses) - 1))
    for attack in found:
        seconds = [
            f"{cells.loc[(attack, d), 'seconds']:.0f}" if (attack, d) in cells.index else "-"
            for d in defenses[1:]
        ]
        print(f"| {attack} | " + " | ".join(seconds) + " |")
    print("\nfed CGD's clean subset vs fed oracle clean data (strictly better, as reported)\n")
    print(markdown_table(clean_data_comparison(report)))


if __name__ == "__main__":
    main()
