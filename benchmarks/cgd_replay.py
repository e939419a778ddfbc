"""Replay CGD's unlearning on one attack's saved artefacts with changed ``cgd`` parameters.

Loads the latest ``<attack>.victim_model``, ``poisoned_train``, ``cgd_split`` and ``clip_logits`` of
the project (or of ``--env``), runs ``cgd_unlearn`` with the base ``cgd`` parameters overridden by
``key=value`` pairs, and prints one line per epoch: validation CA on the held-out clean slice and
the triggered agreement, the training-side figures a budget may be chosen on. ``--test`` adds test
CA / ASR per epoch, for reporting only (never choose parameters on them). Nothing is saved.

    python benchmarks/cgd_replay.py blended --epochs 6 lr=0.05 schedule=constant
    python benchmarks/cgd_replay.py blended --epochs 6 lr=0.05 alpha=0 beta=0
        # plain CE fine-tuning
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from cgd_kedro.cgd.unlearn import UnlearnConfig, cgd_unlearn
from cgd_kedro.metrics import evaluate_backdoor
from cgd_kedro.models.classifier import from_checkpoint
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.runtime import derive_seed, seed_everything

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attack")
    parser.add_argument("overrides", nargs="*", help="cgd.<key>=<value> as key=value (YAML values)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--env", default=None)
    parser.add_argument(
        "--test", action="store_true", help="also print test CA / ASR per epoch (reporting only)"
    )
    args = parser.parse_intermixed_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=args.env) as session:
        catalog = session.load_context().catalog
        load = lambda name: catalog.load(f"{args.attack}.{name}")  # noqa: E731
        victim, train, split, clip = (
            load("victim_model"),
            load("poisoned_train"),
            load("cgd_split"),
            load("clip_logits"),
        )
        params, runtime = dict(catalog.load("params:cgd")), catalog.load("params:runtime")
        test, backdoor_test = (
            (catalog.load("test_set"), load("backdoor_test")) if args.test else (None, None)
        )
    for pair in args.overrides:
        key, _, value = pair.partition("=")
        params[key] = yaml.safe_load(value)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    config = UnlearnConfig.from_params(params)
    run = RuntimeConfig.from_params(runtime)
    device = run.torch_device
    model = from_checkpoint(victim, device, source=f"{args.attack}.victim_model")
    figures = (
        (lambda m: evaluate_backdoor(m, test, backdoor_test, device=device)) if args.test else None
    )
    started = time.perf_counter()
    history = cgd_unlearn(
        model,
        train["images"],
        train["labels"],
        split["clean_indices"],
        split["triggered"].nonzero().squeeze(1),
        clip["logits"],
        config,
        device=device,
        generator=seed_everything(derive_seed(run.seed, "cgd_unlearn")),
        on_epoch_end=figures,
    )
    print(f"{args.attack}: {config}\n")
    print(
        "| epoch | val CA | triggered agreement |"
        + (" test CA | test ASR |" if args.test else "")
        + " note |"
    )
    print("|---|---|---|" + ("---|---|" if args.test else "") + "---|")
    for h in history:
        test_cells = f" {h['clean_acc']:.4f} | {h['asr']:.4f} |" if args.test else ""
        print(
            f"| {h['epoch']} | {h['val_clean_acc']:.4f} | {h['triggered_agreement']:.4f} "
            f"|{test_cells} {h.get('stopped', '')} |"
        )
    print(f"\n{time.perf_counter() - started:.0f} s on {device}")


if __name__ == "__main__":
    main()
