"""ABD's adversarial patch: direct optimisation vs the paper's generator with a discriminator.

On the latest backdoored CLIP of one CLIP attack (run `kedro run --pipelines abd_defense` first),
craft the patch with each method, then report, per method:

- ``L_bd``: the backdoor loss of the last step (lower: patched images
  leave their captions and gather);
- ``patch ASR``: the share of non-target test images that the *backdoored* CLIP classifies as the
  attack's target when they carry the adversarial patch instead of the real trigger (evaluation
  only: the defender never knows the target). High means the patch reaches the real backdoor;
- ABD's CA / ASR after fine-tuning the backdoored CLIP with that patch (the defense's real test).

    python benchmarks/abd_patch_methods.py [--attack clip_badnet] [--env base] [--seeds 0]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from cgd_kedro.clip.reference import model_from_checkpoint
from cgd_kedro.clip.triggers import ClipAttackConfig
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.pipelines.abd_defense.nodes import (
    craft_adversarial_patch,
    defend_backdoored_clip,
    zero_shot_metrics,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attack",
        default="clip_badnet",
        help="CLIP attack namespace (clip_badnet, clip_blended, clip_badclip)",
    )
    parser.add_argument("--env", default=None)
    parser.add_argument("--seeds", default="0", help="comma-separated runtime seeds")
    args = parser.parse_args()
    project = Path(__file__).resolve().parents[1]
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        ns = args.attack
        backdoored = catalog.load(f"{ns}.backdoored_clip")
        pairs, trigger = catalog.load("clip_defense_pairs"), catalog.load(f"{ns}.clip_trigger")
        test_set, info = catalog.load("test_set"), catalog.load("dataset_info")
        attack = params[ns]["attack"]
        target = ClipAttackConfig.from_shared(params["clip_attack"], attack).target
        rows = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            runtime = params["runtime"] | {"seed": seed}
            device = RuntimeConfig.from_params(runtime).torch_device
            for method in ("direct", "generator"):
                abd = {"patch": dict(params["abd"]["patch"]) | {"method": method}}
                patch, report = craft_adversarial_patch(backdoored, pairs, abd, runtime)
                patch_asr = zero_shot_metrics(
                    model_from_checkpoint(backdoored),
                    backdoored["model_name"],
                    test_set,
                    info,
                    params["clip"],
                    patch,
                    target,
                    device,
                )["asr"]
                started = time.perf_counter()
                defended = defend_backdoored_clip(
                    "abd",
                    backdoored,
                    pairs,
                    trigger,
                    test_set,
                    info,
                    params["clip_defense"],
                    params["clip"],
                    params["clip_attack"],
                    attack,
                    runtime,
                    adversarial_patch=patch,
                )
                rows.append(
                    (
                        seed,
                        method,
                        report["seconds"],
                        report["loss_last"],
                        patch_asr,
                        defended["clean_acc"],
                        defended["asr"],
                        time.perf_counter() - started,
                    )
                )
    print(f"\nABD patch methods on {ns} (backdoored CLIP: latest version)\n")
    print(
        "| seed | method | patch seconds | last L_bd | patch ASR | ABD CA | ABD ASR | ABD seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for seed, method, seconds, loss, patch_asr, ca, asr, abd_seconds in rows:
        print(
            f"| {seed} | {method} | {seconds:.0f} | {loss:.3f} | {patch_asr:.3f} | {ca:.3f} | "
            f"{asr:.3f} | {abd_seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
