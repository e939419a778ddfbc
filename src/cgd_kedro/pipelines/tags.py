"""Node tags, so that ``kedro run --tags <tag>`` selects a kind of work across the pipelines.

- ``data``: loading, poisoning and splitting data, building the clean sets (cheap);
- ``training``: anything that trains or fine-tunes a model (victims, suspicious models, the
  reference CLIP, every defense);
- ``clip``: nodes that build, run or attack a CLIP model;
- ``evaluation``: metrics on the test sets (CA, ASR, RA, split quality);
- ``report``: tables, figures and the HTML report;
- ``gpu-heavy``: the nodes worth a GPU (training, and CLIP scoring of whole training sets).

E.g. ``kedro run --pipelines full --tags report`` rebuilds every table and figure from the
latest artefacts; ``kedro run --tags evaluation`` re-measures saved models. Tags are given by the
node's name without its namespace; every node has at least one (a test checks it).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

DATA, TRAINING, CLIP, EVALUATION, REPORT, GPU_HEAVY = (
    "data",
    "training",
    "clip",
    "evaluation",
    "report",
    "gpu-heavy",
)
TAGS = (DATA, TRAINING, CLIP, EVALUATION, REPORT, GPU_HEAVY)

_TRAINING = {TRAINING, GPU_HEAVY}
_CLIP_TRAINING = {TRAINING, CLIP, GPU_HEAVY}
NODE_TAGS: dict[str, set[str]] = {
    # poison / backdoorbench_import
    "load_dataset": {DATA},
    "import_record": {DATA},
    "prepare_attack": {DATA},
    "poison_train_set": {DATA},
    "build_backdoor_test_set": {DATA},
    "train_clean_model": _TRAINING,
    "train_victim": _TRAINING,
    "evaluate_victim": {EVALUATION},
    # reference_clip
    "build_reference_clip": _CLIP_TRAINING,
    "evaluate_reference_clip": {CLIP, EVALUATION},
    # clip_split
    "score_with_clip": {CLIP, GPU_HEAVY},
    "train_suspicious_models": _TRAINING,
    "split_training_set": {DATA},
    "evaluate_split": {EVALUATION},
    "export_reference_files": {REPORT},
    # cgd_unlearn (clean-data defenses are tagged by their registry, see `tags_of`)
    "unlearn_with_cgd": _TRAINING,
    "retrain_on_clean_subset": _TRAINING,
    "anti_backdoor_learning": _TRAINING,
    "cgd_clean_data": {DATA},
    "oracle_clean_data": {DATA},
    "evaluate_defenses": {EVALUATION},
    # cgd_robustness
    "score_with_backdoored_clip": {CLIP, GPU_HEAVY},
    "split_with_backdoored_clip": {CLIP, DATA},
    "evaluate_backdoored_clip_split": {CLIP, EVALUATION},
    "unlearn_with_backdoored_clip": _TRAINING,
    "evaluate_cgd_robustness": {EVALUATION},
    # abd_defense
    "build_clip_corpora": {CLIP, DATA},
    "make_clip_trigger": {CLIP, DATA},
    "poison_clip_pairs": {CLIP, DATA},
    "implant_clip_backdoor": _CLIP_TRAINING,
    "craft_adversarial_patch": _CLIP_TRAINING,
    "defend_with_ft": _CLIP_TRAINING,
    "defend_with_cleanclip": _CLIP_TRAINING,
    "defend_with_abd": _CLIP_TRAINING,
    "evaluate_clip_defenses": {CLIP, EVALUATION},
    "plot_similarity": {CLIP, REPORT},
    "plot_abd_samples": {CLIP, REPORT},
    "plot_clip_defense_curves": {CLIP, REPORT},
    "collect_abd_report": {CLIP, REPORT},
    # reporting
    "make_defense_report": {REPORT},
    "make_split_report": {REPORT},
    "summarise_seeds": {REPORT},
    "render_report": {REPORT},
}


def tags_of(node_name: str) -> set[str]:
    """The tags of a node, by its name without namespace; clean-data defenses
    (``<registry node name>_cgd`` / ``_oracle``) are training."""
    base = node_name.rpartition(".")[2]
    if base in NODE_TAGS:
        return NODE_TAGS[base]
    from cgd_kedro.defenses.registry import list_defenses

    if any(base in (f"{d.node_name}_cgd", f"{d.node_name}_oracle") for d in list_defenses()):
        return _TRAINING
    raise KeyError(f"node {node_name!r} has no tags: add it to cgd_kedro.pipelines.tags.NODE_TAGS")


def tag_pipeline(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` with every node tagged (``NODE_TAGS``)."""
    return Pipeline([node.tag(tags_of(node.name)) for node in pipeline.nodes])
