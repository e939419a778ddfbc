"""Nodes of the ``abd_defense`` pipeline: thin adapters to ``cgd_kedro.clip`` (triggers, contrastive
fine-tuning, the adversarial patch, the defenses and their metrics).

The defenses see the backdoored CLIP and clean defense pairs only; the test set reaches them only
to record CA/ASR per epoch for the report, and the poisoned pairs' flags are never read by them.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import torch
from matplotlib.figure import Figure

from cgd_kedro.clip.adversarial_patch import AdversarialPatchConfig, optimise_adversarial_patch
from cgd_kedro.clip.backdoor_metrics import zero_shot_backdoor_metrics
from cgd_kedro.clip.corpora import ClipCorpusConfig, templated_corpora, world_corpora
from cgd_kedro.clip.defenses import ClipDefenseConfig, defend_clip
from cgd_kedro.clip.factory import get_tokenizer, preprocess_config, to_clip_checkpoint
from cgd_kedro.clip.figures import plot_abd_sample_grid, plot_defense_curves, plot_similarity_panel
from cgd_kedro.clip.pretrain import train_contrastive
from cgd_kedro.clip.reference import ClipConfig, model_from_checkpoint
from cgd_kedro.clip.triggers import (
    CLIP_NAMESPACE_PREFIX,
    ClipAttackConfig,
    apply_trigger,
    optimise_badclip_patch,
    poison_pairs,
    static_trigger,
)
from cgd_kedro.clip.zero_shot import class_text_embeddings, image_embeddings
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.sources import DatasetConfig
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.runtime import derive_seed, seed_everything

log = logging.getLogger(__name__)


def build_clip_corpora(
    dataset: dict,
    train_set: ImageSet,
    dataset_info: dict,
    clip_corpus: dict,
    clip: dict,
    runtime: dict,
) -> tuple[dict, dict]:
    """The pairs the attacker poisons and the disjoint clean pairs the defender fine-tunes on."""
    config = ClipCorpusConfig.from_params(clip_corpus)
    data = DatasetConfig.from_params(dataset)
    if data.name == "embedded":
        w = data.world
        return world_corpora(config, seed=w.seed, image_size=w.image_size, difficulty=w.difficulty)
    templates = ClipConfig.from_params(clip).templates_for(data.name)
    generator = seed_everything(
        derive_seed(RuntimeConfig.from_params(runtime).seed, "clip-corpora")
    )
    return templated_corpora(config, train_set, dataset_info["class_names"], templates, generator)


def make_clip_trigger(
    reference_clip: dict,
    clip_finetune_pairs: dict,
    dataset_info: dict,
    clip_attack: dict,
    own_attack: dict,
    runtime: dict,
) -> dict:
    """The attack's trigger ``{pattern, mask}``;
    BadCLIP's patch is optimised on the clean reference CLIP."""
    config = ClipAttackConfig.from_shared(clip_attack, own_attack)
    run = RuntimeConfig.from_params(runtime)
    generator = seed_everything(derive_seed(run.seed, f"clip-trigger-{config.attack}"))
    images = clip_finetune_pairs["images"]
    if config.attack != "badclip":
        return static_trigger(config, images.shape[-1], images.shape[1], generator)
    model = model_from_checkpoint(reference_clip)
    name = reference_clip["model_name"]
    templates = config.caption_templates
    target_text = class_text_embeddings(
        model,
        get_tokenizer(name),
        [dataset_info["class_names"][config.target]],
        templates,
        run.torch_device,
    )[0]
    return optimise_badclip_patch(
        model,
        images,
        clip_finetune_pairs["labels"],
        target_text,
        config,
        preprocess_config(model),
        device=run.torch_device,
        generator=generator,
    )


def poison_clip_pairs(
    clip_finetune_pairs: dict,
    clip_trigger: dict,
    dataset_info: dict,
    clip_attack: dict,
    own_attack: dict,
    runtime: dict,
) -> dict:
    """The fine-tuning pairs with ``poison_ratio`` of them triggered
    and captioned with the target."""
    config = ClipAttackConfig.from_shared(clip_attack, own_attack)
    generator = seed_everything(
        derive_seed(RuntimeConfig.from_params(runtime).seed, f"clip-poison-{config.attack}")
    )
    poisoned = poison_pairs(
        clip_finetune_pairs["images"],
        clip_finetune_pairs["captions"],
        clip_finetune_pairs["labels"],
        clip_trigger,
        config,
        dataset_info["class_names"],
        generator,
    )
    log.info(
        "%s: poisoned %d of %d pairs",
        config.attack,
        int(poisoned["poisoned"].sum()),
        len(poisoned["captions"]),
    )
    return poisoned | {"labels": clip_finetune_pairs["labels"]}


def implant_clip_backdoor(
    reference_clip: dict, poisoned_pairs: dict, clip_attack: dict, own_attack: dict, runtime: dict
) -> tuple[dict, dict]:
    """Fine-tune the reference CLIP on the poisoned pairs: the backdoored CLIP and its history."""
    config = ClipAttackConfig.from_shared(clip_attack, own_attack)
    run = RuntimeConfig.from_params(runtime)
    model = model_from_checkpoint(reference_clip)
    name = reference_clip["model_name"]
    start = time.perf_counter()
    history = train_contrastive(
        model,
        get_tokenizer(name),
        poisoned_pairs["images"],
        poisoned_pairs["captions"],
        config.finetune,
        preprocess_config(model),
        device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, f"clip-implant-{config.attack}")),
        description=f"backdoor {config.attack}",
    )
    report = {
        "attack": config.as_dict(),
        "seconds": time.perf_counter() - start,
        "history": history,
    }
    return to_clip_checkpoint(model, name), report


def zero_shot_metrics(
    model,
    model_name: str,
    test_set: ImageSet,
    dataset_info: dict,
    clip: dict,
    trigger: dict,
    target: int,
    device,
) -> dict:
    """Zero-shot ``{clean_acc, asr}`` of ``model`` on the test set
    with the dataset's prompt templates."""
    templates = ClipConfig.from_params(clip).templates_for(dataset_info["name"])
    return zero_shot_backdoor_metrics(
        model,
        model_name,
        test_set["images"],
        test_set["labels"],
        dataset_info["class_names"],
        templates,
        trigger,
        target,
        device=device,
    )


def craft_adversarial_patch(
    backdoored_clip: dict, clip_defense_pairs: dict, abd: dict, runtime: dict
) -> tuple[dict, dict]:
    """ABD's universal adversarial patch for the backdoored CLIP, from clean defense pairs."""
    config = AdversarialPatchConfig.from_params(dict(abd.get("patch") or {}))
    run = RuntimeConfig.from_params(runtime)
    model = model_from_checkpoint(backdoored_clip)
    start = time.perf_counter()
    patch, losses = optimise_adversarial_patch(
        model,
        get_tokenizer(backdoored_clip["model_name"]),
        clip_defense_pairs["images"],
        clip_defense_pairs["captions"],
        config,
        preprocess_config(model),
        device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, "abd-patch")),
    )
    return patch, {
        "seconds": time.perf_counter() - start,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "config": config.as_dict(),
    }


def defend_backdoored_clip(
    defense: str,
    backdoored_clip: dict,
    clip_defense_pairs: dict,
    clip_trigger: dict,
    test_set: ImageSet,
    dataset_info: dict,
    clip_defense: dict,
    clip: dict,
    clip_attack: dict,
    own_attack: dict,
    runtime: dict,
    adversarial_patch: dict | None = None,
) -> dict:
    """Fine-tune a copy of the backdoored CLIP with ``defense``;
    ``{clean_acc, asr, seconds, history}``. The test set and trigger only measure CA/ASR
    after each epoch for the report."""
    config = ClipDefenseConfig.from_params(clip_defense)
    target = ClipAttackConfig.from_shared(clip_attack, own_attack).target
    run = RuntimeConfig.from_params(runtime)
    model = model_from_checkpoint(backdoored_clip)
    name = backdoored_clip["model_name"]
    reporting_seconds = 0.0

    def test_figures(m) -> dict:
        # Timed apart: the per-epoch test evaluation is for the report, not the defense's cost.
        nonlocal reporting_seconds
        started = time.perf_counter()
        figures = zero_shot_metrics(
            m, name, test_set, dataset_info, clip, clip_trigger, target, run.torch_device
        )
        reporting_seconds += time.perf_counter() - started
        return {f"test_{k}": v for k, v in figures.items()}

    start = time.perf_counter()
    history = defend_clip(
        model,
        get_tokenizer(name),
        clip_defense_pairs["images"],
        clip_defense_pairs["captions"],
        defense,
        config,
        preprocess_config(model),
        patch=adversarial_patch,
        device=run.torch_device,
        generator=seed_everything(derive_seed(run.seed, f"clip-defense-{defense}")),
        on_epoch_end=test_figures,
    )
    seconds = time.perf_counter() - start - reporting_seconds
    final = {"clean_acc": history[-1]["test_clean_acc"], "asr": history[-1]["test_asr"]}
    log.info(
        "%s: clean_acc %.4f, asr %.4f, %.0f s", defense, final["clean_acc"], final["asr"], seconds
    )
    return final | {"seconds": seconds, "history": history}


def defend_with_ft(*args, **kwargs) -> dict:
    return defend_backdoored_clip("ft", *args, **kwargs)


def defend_with_cleanclip(*args, **kwargs) -> dict:
    return defend_backdoored_clip("cleanclip", *args, **kwargs)


def defend_with_abd(*args, **kwargs) -> dict:
    return defend_backdoored_clip("abd", *args, **kwargs)


def evaluate_clip_defenses(
    backdoored_clip: dict,
    backdoor_report: dict,
    clip_trigger: dict,
    test_set: ImageSet,
    dataset_info: dict,
    clip: dict,
    clip_attack: dict,
    own_attack: dict,
    runtime: dict,
    ft_report: dict,
    cleanclip_report: dict,
    abd_report: dict,
    patch_report: dict,
) -> dict:
    """``{defense: {clean_acc, asr, seconds}}`` with ``none`` = the backdoored CLIP; ABD's seconds
    include crafting its patch."""
    config = ClipAttackConfig.from_shared(clip_attack, own_attack)
    run = RuntimeConfig.from_params(runtime)
    model = model_from_checkpoint(backdoored_clip)
    none = zero_shot_metrics(
        model,
        backdoored_clip["model_name"],
        test_set,
        dataset_info,
        clip,
        clip_trigger,
        config.target,
        run.torch_device,
    )
    log.info(
        "backdoored CLIP (%s): clean_acc %.4f, asr %.4f",
        config.attack,
        none["clean_acc"],
        none["asr"],
    )
    rows = {"none": none | {"seconds": 0.0, "implant_seconds": backdoor_report["seconds"]}}
    for name, report in (("ft", ft_report), ("cleanclip", cleanclip_report), ("abd", abd_report)):
        rows[name] = {
            "clean_acc": report["clean_acc"],
            "asr": report["asr"],
            "seconds": report["seconds"],
        }
    rows["abd"]["seconds"] += patch_report["seconds"]
    # Named as its namespace (clip_badnet), never as the classifier attacks
    # (badnets): one table holds both.
    return {
        "attack": CLIP_NAMESPACE_PREFIX + config.attack,
        "target": config.target,
        "defenses": rows,
    }


def plot_abd_samples(
    clip_defense_pairs: dict,
    clip_trigger: dict,
    adversarial_patch: dict,
    clip_attack: dict,
    own_attack: dict,
) -> Figure:
    """Clean images, the same with the attack's trigger, and with ABD's adversarial patch."""
    attack = ClipAttackConfig.from_shared(clip_attack, own_attack).attack
    return plot_abd_sample_grid(
        clip_defense_pairs["images"],
        {attack: clip_trigger},
        {attack: adversarial_patch},
        title=f"{attack}: clean, backdoored and adversarial samples",
    )


@torch.no_grad()
def plot_similarity(
    backdoored_clip: dict,
    clip_defense_pairs: dict,
    clip_trigger: dict,
    adversarial_patch: dict,
    dataset_info: dict,
    clip_attack: dict,
    own_attack: dict,
    runtime: dict,
) -> Figure:
    """Under the backdoored CLIP: each image's cosine similarity to its own caption, the target
    caption and an unrelated caption, for clean, triggered and ABD-patched images."""
    config = ClipAttackConfig.from_shared(clip_attack, own_attack)
    device = RuntimeConfig.from_params(runtime).torch_device
    model = model_from_checkpoint(backdoored_clip)
    tokenizer = get_tokenizer(backdoored_clip["model_name"])
    keep = (clip_defense_pairs["labels"] != config.target).nonzero().squeeze(1)[:256]
    images = clip_defense_pairs["images"][keep]
    captions = [clip_defense_pairs["captions"][i] for i in keep.tolist()]
    own = model.to(device).encode_text(tokenizer(captions).to(device), normalize=True).float().cpu()
    target = config.caption_templates[0].format(dataset_info["class_names"][config.target])
    fixed = (
        model.encode_text(
            tokenizer([target, "a photo of nothing in particular"]).to(device), normalize=True
        )
        .float()
        .cpu()
    )
    preprocess = preprocess_config(model)
    panel = {}
    for group, batch in (
        ("clean", images),
        ("triggered", apply_trigger(images, clip_trigger)),
        ("ABD patched", apply_trigger(images, adversarial_patch)),
    ):
        features = image_embeddings(model, batch, preprocess, device)
        panel[group] = {
            "own caption": (features * own).sum(-1).tolist(),
            "target caption": (features @ fixed[0]).tolist(),
            "unrelated caption": (features @ fixed[1]).tolist(),
        }
    return plot_similarity_panel(
        panel, title=f"backdoored CLIP ({config.attack}): cosine similarity"
    )


def plot_clip_defense_curves(
    clip_defense_metrics: dict, ft_report: dict, cleanclip_report: dict, abd_report: dict
) -> Figure:
    """CA/ASR per epoch of FT, CleanCLIP and ABD."""
    before = clip_defense_metrics["defenses"]["none"]
    histories = {
        "ft": ft_report["history"],
        "cleanclip": cleanclip_report["history"],
        "abd": abd_report["history"],
    }
    return plot_defense_curves(
        histories, before=before, title=f"defenses against {clip_defense_metrics['attack']}"
    )


def collect_abd_report(
    dataset_info: dict, runtime: dict, **clip_defense_metrics: dict
) -> pd.DataFrame:
    """``abd_report``: one row per (CLIP attack, defense)
    with ``clean_acc``, ``asr``, ``seconds``."""
    seed = RuntimeConfig.from_params(runtime).seed
    rows = [
        {
            "dataset": dataset_info["name"],
            "attack": metrics["attack"],
            "defense": defense,
            "clean_acc": values["clean_acc"],
            "asr": values["asr"],
            "seconds": values["seconds"],
            "seed": seed,
        }
        for _, metrics in sorted(clip_defense_metrics.items())
        for defense, values in metrics["defenses"].items()
    ]
    return pd.DataFrame(
        rows, columns=["dataset", "attack", "defense", "clean_acc", "asr", "seconds", "seed"]
    )
