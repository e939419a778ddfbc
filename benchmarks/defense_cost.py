"""Wall-clock cost of each defense, side by side, from the latest ``cgd_unlearn`` run.

Every defense of ``<attack>.defense_metrics`` is timed inside the same ``kedro run`` on the same
machine; this script prints those seconds (and CA/ASR) per attack, plus each defense's cost
relative to CGD. Run ``kedro run --pipelines cgd_unlearn`` first.

    python benchmarks/defense_cost.py [--dataset embedded] [--data data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgd_kedro.reporting.tables import latest_defense_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="embedded")
    parser.add_argument("--data", default="data")
    args = parser.parse_args()
    root = Path(args.data) / "08_reporting" / args.dataset
    rows = [(a, v, m) for a, (v, m) in latest_defense_metrics(root).items()]
    if not rows:
        raise SystemExit(
            f"no defense_metrics under {root}; run `kedro run --pipelines cgd_unlearn` first"
        )
    defenses = sorted(
        {d for _, _, m in rows for d in m if d != "none"}, key=lambda d: (d != "cgd", d)
    )
    print(
        f"dataset {args.dataset}: seconds per defense (CA / ASR), from each attack's latest run\n"
    )
    print("| attack | version | " + " | ".join(defenses) + " |")
    print("|---|---|" + "---|" * len(defenses))
    for attack, version, metrics in rows:
        cells = [
            f"{metrics[d]['seconds']:.0f} s ({metrics[d]['clean_acc']:.3f} / "
            f"{metrics[d]['asr']:.3f})"
            if d in metrics
            else "-"
            for d in defenses
        ]
        print(f"| {attack} | {version} | " + " | ".join(cells) + " |")
    print("\ncost relative to cgd (seconds / cgd seconds), per attack:")
    print("| attack | " + " | ".join(defenses) + " |")
    print("|---|" + "---|" * len(defenses))
    for attack, _, metrics in rows:
        base = metrics.get("cgd", {}).get("seconds")
        cells = [
            f"{metrics[d]['seconds'] / base:.2f}x" if base and d in metrics else "-"
            for d in defenses
        ]
        print(f"| {attack} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
