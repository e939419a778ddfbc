"""Nodes of the ``clip_split`` pipeline: thin adapters to ``cgd_kedro.clip`` and ``cgd_kedro.cgd``.

Only ``evaluate_split`` and ``export_reference_files`` read the ground-truth poison flags; the
split itself sees the images' given labels and the two models' logits, nothing else.
"""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure

from cgd_kedro.cgd.entropy_map import plot_entropy_map
from cgd_kedro.cgd.split import SplitConfig, cgd_split, split_quality
from cgd_kedro.cgd.suspicious import SuspiciousConfig, suspicious_logits
from cgd_kedro.clip.reference import ClipConfig, clip_logits, model_from_checkpoint
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)


def score_with_clip(
    poisoned_train: ImageSet, reference_clip: dict, dataset_info: dict, clip: dict, runtime: dict
) -> dict:
    """CLIP's zero-shot logits (``N x K``) and unit image embeddings
    (``N x D``) of every training image."""
    config = ClipConfig.from_params(clip)
    logits, features = clip_logits(
        model_from_checkpoint(reference_clip),
        reference_clip["model_name"],
        poisoned_train["images"],
        dataset_info["class_names"],
        config.templates_for(dataset_info["name"]),
        logit_scale=config.logit_scale,
        batch_size=config.batch_size,
        device=RuntimeConfig.from_params(runtime).torch_device,
        with_features=True,
    )
    return {"logits": logits, "image_features": features}


def train_suspicious_models(
    poisoned_train: ImageSet, dataset_info: dict, suspicious: dict, runtime: dict
) -> tuple[dict, list]:
    """Mean logits of the suspicious models on the training set they were trained on."""
    run = RuntimeConfig.from_params(runtime)
    logits, histories = suspicious_logits(
        poisoned_train["images"],
        poisoned_train["labels"],
        SuspiciousConfig.from_params(suspicious),
        num_classes=dataset_info["num_classes"],
        mean=dataset_info["mean"],
        std=dataset_info["std"],
        device=run.torch_device,
        seed=run.seed,
    )
    return {"logits": logits}, histories


def split_training_set(
    poisoned_train: ImageSet, clip_logits: dict, suspicious_logits: dict, split: dict, runtime: dict
) -> dict:
    """Rank scores and the clean / triggered split, from the given labels only (no poison flags)."""
    config = SplitConfig.from_params(split)
    generator = seed_everything(derive_seed(RuntimeConfig.from_params(runtime).seed, "cgd_split"))
    result = cgd_split(
        poisoned_train["labels"],
        clip_logits["logits"],
        suspicious_logits["logits"],
        config,
        generator,
    )
    log.info(
        "split: %d clean (%d after balancing), %d triggered, of %d",
        int(result["clean"].sum()),
        result["clean_indices"].numel(),
        int(result["triggered"].sum()),
        result["clean"].numel(),
    )
    return result | {"labels": poisoned_train["labels"]}


def evaluate_split(
    cgd_split: dict, poisoned_train: ImageSet, split: dict
) -> tuple[dict, pd.DataFrame, Figure]:
    """Split quality against the ground truth,
    the entropy-score table and the entropy-map figure."""
    config = SplitConfig.from_params(split)
    poison = poisoned_train["poison"]
    metrics = split_quality(
        cgd_split["clean_indices"],
        cgd_split["triggered"],
        poison,
        cgd_split["r_clip"],
        cgd_split["r_sus"],
    )
    metrics |= {
        "n_train": int(poison.numel()),
        "poison_count": int(poison.sum()),
        "clean_unique": int(cgd_split["clean"].sum()),
    }
    log.info(
        "split quality: clean poisoned fraction %.4f, triggered recall %.4f, precision "
        "%.4f, AUROC combined %.4f",
        metrics["clean_poisoned_fraction"],
        metrics["triggered_recall"],
        metrics["triggered_precision"],
        metrics["auroc_combined"],
    )
    table = pd.DataFrame(
        {
            "r_clip": cgd_split["r_clip"].numpy(),
            "r_sus": cgd_split["r_sus"].numpy(),
            "given_label": cgd_split["labels"].numpy(),
            "is_poisoned": poison.numpy(),
            "is_cover": poisoned_train["cover"].numpy(),
            "clean": cgd_split["clean"].numpy(),
            "triggered": cgd_split["triggered"].numpy(),
        }
    )
    figure = plot_entropy_map(
        cgd_split["r_clip"],
        cgd_split["r_sus"],
        poison,
        sigma1=config.sigma1,
        sigma2=config.sigma2,
        title=(
            f"entropy map: recall {metrics['triggered_recall']:.3f}, clean poisoned "
            f"{metrics['clean_poisoned_fraction']:.4f}"
        ),
    )
    return metrics, table, figure


def export_reference_files(
    cgd_split: dict,
    clip_logits: dict,
    suspicious_logits: dict,
    poisoned_train: ImageSet,
    dataset_info: dict,
) -> tuple[list, dict, dict]:
    """The CGD reference repository's files, in exactly the shapes its scripts read
    (REFERENCE.md §1.2):

    - ``clean_indices.json``: a list of ints, the class-balanced (oversampled) clean indices;
    - ``entropy_score.json``: an object keyed by the sample index as a string, ``"0"`` .. ``"N-1"``,
      each ``[r_clip, r_sus, is_poisoned]`` (``is_poisoned`` is ground truth, for evaluation only);
    - ``logits.pt``: a dict with ``logits_clip`` (N x C) and ``num_classes``, plus what the
      reference also stores: ``logits_kfold`` (the averaged suspicious logits),
      ``poisoned_indices``, ``poison_labels`` (given labels), ``clean_labels`` (true
      labels) and ``image_features``.
    """
    poison = poisoned_train["poison"]
    scores = {
        str(i): [r_clip, r_sus, bool(flag)]
        for i, (r_clip, r_sus, flag) in enumerate(
            zip(
                cgd_split["r_clip"].tolist(),
                cgd_split["r_sus"].tolist(),
                poison.tolist(),
                strict=True,
            )
        )
    }
    logits = {
        "logits_clip": clip_logits["logits"].float().clone(),
        "num_classes": int(dataset_info["num_classes"]),
        "logits_kfold": suspicious_logits["logits"].float().clone(),
        "poisoned_indices": poison.nonzero().squeeze(1),
        "poison_labels": poisoned_train["labels"].clone(),
        "clean_labels": poisoned_train.get("original_labels", poisoned_train["labels"]).clone(),
    }
    if "image_features" in clip_logits:
        logits["image_features"] = clip_logits["image_features"].float().clone()
    return cgd_split["clean_indices"].tolist(), scores, logits
