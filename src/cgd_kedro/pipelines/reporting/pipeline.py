"""The ``reporting`` pipeline: the last step, reading the latest artefacts of every other pipeline.

Per attack it reads ``defense_metrics``, ``split_metrics``, ``cgd_report``, ``entropy_scores`` and
``cgd_robustness`` (CGD with a backdoored reference CLIP);
for the CLIP defenses ``abd_report`` and, per CLIP attack, its trigger and ABD's patch; for the
summary over seeds every saved ``defense_report`` (run once per seed with
``--params runtime.seed=<s>``). ``kedro run --pipelines reporting`` rebuilds the tables, figures and
report of the default attacks without recomputing anything; ``reporting_full`` does the same
for every attack in the library.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from cgd_kedro.pipelines.abd_defense.pipeline import DEFAULT_CLIP_ATTACKS
from cgd_kedro.pipelines.cgd_robustness.pipeline import DEFAULT_ROBUSTNESS_ATTACKS
from cgd_kedro.pipelines.poison.pipeline import DEFAULT_ATTACKS
from cgd_kedro.pipelines.reporting import nodes

SEP = nodes.SEPARATOR


def per_attack(group: str, dataset: str, attacks: Sequence[str]) -> dict[str, str]:
    """Node inputs ``{<group>__<attack>: <attack>.<dataset>}``."""
    return {f"{group}{SEP}{attack}": f"{attack}.{dataset}" for attack in attacks}


def create_pipeline(
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    clip_attacks: Sequence[str] = DEFAULT_CLIP_ATTACKS,
    robustness_attacks: Sequence[str] = DEFAULT_ROBUSTNESS_ATTACKS,
    **kwargs,
) -> Pipeline:
    curves = per_attack("cgd", "cgd_report", attacks)
    entropy = per_attack("entropy", "entropy_scores", attacks)
    robustness = per_attack("robustness", "cgd_robustness", robustness_attacks)
    samples = (
        {"clip_defense_pairs": "clip_defense_pairs"}
        | per_attack("trigger", "clip_trigger", clip_attacks)
        | per_attack("patch", "adversarial_patch", clip_attacks)
    )
    return Pipeline(
        [
            node(
                nodes.make_defense_report,
                {
                    "dataset_info": "dataset_info",
                    "runtime": "params:runtime",
                    "abd_report": "abd_report",
                }
                | per_attack("defense", "defense_metrics", attacks)
                | robustness,
                "defense_report",
                name="make_defense_report",
            ),
            node(
                nodes.make_split_report,
                {"dataset_info": "dataset_info", "runtime": "params:runtime"}
                | per_attack("split", "split_metrics", attacks),
                "split_report",
                name="make_split_report",
            ),
            node(
                nodes.summarise_seeds,
                ["defense_report", "defense_report_versions", "params:reporting"],
                "defense_summary",
                name="summarise_seeds",
            ),
            node(
                nodes.render_report,
                {
                    "defense_report": "defense_report",
                    "split_report": "split_report",
                    "defense_summary": "defense_summary",
                    "reference_clip_metrics": "reference_clip_metrics",
                }
                | curves
                | per_attack("defense", "defense_metrics", attacks)
                | entropy
                | robustness
                | samples,
                ["report_html", "report_md", *nodes.REPORT_FIGURES],
                name="render_report",
            ),
        ]
    )
