"""Run clean-data defenses on one attack's saved artefacts, CGD-fed and oracle, and print a table.

Loads the latest ``<attack>.victim_model``, ``poisoned_train`` and ``cgd_split``, the clean
``train_set`` and the test sets of the project (or of ``--env``), builds the two clean sets exactly
as ``cgd_unlearn`` does (CGD's clean subset with its triggered subset; a random ``oracle_fraction``
of the unpoisoned set), runs each defense of ``--defenses`` (``fp``, ``anp``, ``mcr``, ``ibau``)
with the environment's parameters overridden by ``section.key=value`` pairs, and prints CA / ASR /
RA and seconds per defense. A quick look before a full ``kedro run --pipelines cgd_unlearn``;
nothing is saved.

    python benchmarks/clean_data_replay.py badnets --defenses mcr ibau
    python benchmarks/clean_data_replay.py badnets mcr.curve_lr=0.01 --defenses mcr
        # overrides before --defenses
    python benchmarks/clean_data_replay.py badnets --env cifar10 --version 2026-12-01T10.10.17.089Z
        # one run's artefacts
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path, PurePath

import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from cgd_kedro.defenses.registry import list_defenses
from cgd_kedro.metrics import evaluate_backdoor
from cgd_kedro.models.classifier import from_checkpoint
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.pipelines.cgd_unlearn import nodes
from cgd_kedro.pipelines.cgd_unlearn.pipeline import clean_data_node_function

ROOT = Path(__file__).resolve().parents[1]
# Every registered clean-data defense: (node function, parameter section), by name
DEFENSES = {d.name: (clean_data_node_function(d), d.section) for d in list_defenses()}


def load_at(catalog, name: str, version: str | None):
    """``name`` at ``version`` where that run wrote it, else its latest version; says which."""
    dataset = catalog.get(name)
    versions = (
        [PurePath(p).parent.name for p in dataset._get_versions()]
        if getattr(dataset, "_version", None) is not None
        else []
    )
    chosen = version if version in versions else (versions[0] if versions else None)
    print(f"{name}: version {chosen}")
    return catalog.load(name, version=chosen) if chosen else catalog.load(name)


def describe_choice(report: dict) -> str:
    """What the defense settled on:
    MCR's t, the channels a pruning defense removed, I-BAU's last |δ|."""
    if "t" in report:
        return f"t = {report['t']}"
    if "pruned" in report:
        return f"pruned {report['pruned']}"
    if report.get("history") and "perturbation_norm" in report["history"][-1]:
        return f"last |δ| {report['history'][-1]['perturbation_norm']:.2f}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack")
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value (YAML values), e.g. mcr.curve_epochs=20"
    )
    parser.add_argument("--defenses", nargs="+", default=["mcr", "ibau"], choices=sorted(DEFENSES))
    parser.add_argument("--env", default=None)
    parser.add_argument(
        "--version",
        default=None,
        help="load the artefacts written by the run of this version (where it wrote them)",
    )
    args = parser.parse_intermixed_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=args.env) as session:
        catalog = session.load_context().catalog
        load = lambda name: load_at(catalog, f"{args.attack}.{name}", args.version)  # noqa: E731
        victim, poisoned, split, backdoor_test = (
            load("victim_model"),
            load("poisoned_train"),
            load("cgd_split"),
            load("backdoor_test"),
        )
        train_set, test_set = (
            load_at(catalog, "train_set", args.version),
            load_at(catalog, "test_set", args.version),
        )
        params = {
            name: dict(catalog.load(f"params:{section}")) for name, (_, section) in DEFENSES.items()
        }
        runtime, oracle_fraction = (
            catalog.load("params:runtime"),
            catalog.load("params:oracle_fraction"),
        )
    sections = {section: name for name, (_, section) in DEFENSES.items()}
    for pair in args.overrides:
        key, _, value = pair.partition("=")
        section, _, field = key.partition(".")
        if section not in sections:
            raise SystemExit(
                f"{key}: expected <section>.<key> with a section of {sorted(sections)}"
            )
        params[sections[section]][field] = yaml.safe_load(value)
    clean_sets = {
        "cgd": nodes.cgd_clean_data(poisoned, split),
        "oracle": nodes.oracle_clean_data(train_set, oracle_fraction, runtime),
    }
    device = RuntimeConfig.from_params(runtime).torch_device
    undefended = evaluate_backdoor(
        from_checkpoint(victim, device), test_set, backdoor_test, device=device
    )
    print(
        f"{args.attack}: {len(clean_sets['cgd']['labels'])} CGD-clean samples, "
        f"{len(clean_sets['oracle']['labels'])} oracle ones\n"
    )
    print("| defense | CA | ASR | RA | seconds | chosen |\n|---|---|---|---|---|---|")
    print(
        f"| none | {undefended['clean_acc']:.4f} | {undefended['asr']:.4f} | "
        f"{undefended['ra']:.4f} | 0 | |"
    )
    for name in args.defenses:
        function, _ = DEFENSES[name]
        for source, clean in clean_sets.items():
            started = time.perf_counter()
            # MCR also returns its curve
            checkpoint, report, *_ = function(victim, clean, params[name], runtime)
            seconds = time.perf_counter() - started
            after = evaluate_backdoor(
                from_checkpoint(checkpoint, device), test_set, backdoor_test, device=device
            )
            chosen = describe_choice(report)
            print(
                f"| {name}_{source} | {after['clean_acc']:.4f} | {after['asr']:.4f} | "
                f"{after['ra']:.4f} | {seconds:.0f} | {chosen} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
