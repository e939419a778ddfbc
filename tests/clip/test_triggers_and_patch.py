"""CLIP triggers and poisoning, ABD's adversarial patch (it stays inside its corner), the backdoor
loss, and the defenses' views."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.clip.adversarial_patch import (
    AdversarialPatchConfig,
    backdoor_loss,
    optimise_adversarial_patch,
)
from cgd_kedro.clip.defenses import ClipDefenseConfig, defense_views
from cgd_kedro.clip.factory import EMBEDDED_CLIP, create_clip, get_tokenizer, preprocess_config
from cgd_kedro.clip.triggers import (
    ClipAttackConfig,
    apply_trigger,
    corner_mask,
    poison_pairs,
    static_trigger,
    triggered_non_target,
)

G = torch.Generator().manual_seed(0)
IMAGES = torch.randint(0, 256, (12, 3, 32, 32), generator=G, dtype=torch.uint8)
LABELS = torch.arange(12) % 3


def test_badnet_trigger_changes_only_its_corner_and_blended_is_the_convex_combination():
    badnet = static_trigger(
        ClipAttackConfig(attack="badnet", patch_size=4), 32, 3, torch.Generator().manual_seed(1)
    )
    out = apply_trigger(IMAGES, badnet)
    assert torch.equal(out[..., :28, :], IMAGES[..., :28, :]) and torch.equal(
        out[..., :, :28], IMAGES[..., :, :28]
    )
    assert not torch.equal(out[..., 28:, 28:], IMAGES[..., 28:, 28:])
    blended = static_trigger(
        ClipAttackConfig(attack="blended", blend_alpha=0.2), 32, 3, torch.Generator().manual_seed(1)
    )
    expected = (
        (0.8 * IMAGES.float() + 0.2 * 255 * blended["pattern"])
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )
    assert (apply_trigger(IMAGES, blended).int() - expected.int()).abs().max() <= 1


def test_poisoning_triggers_non_target_pairs_and_names_the_target():
    config = ClipAttackConfig(attack="badnet", target=0, poison_ratio=0.25)
    trigger = static_trigger(config, 32, 3, torch.Generator().manual_seed(1))
    captions = [f"caption {i}" for i in range(12)]  # no class names: templated
    out = poison_pairs(
        IMAGES,
        captions,
        LABELS,
        trigger,
        config,
        ["circle", "square", "star"],
        torch.Generator().manual_seed(2),
    )
    flags = out["poisoned"]
    assert int(flags.sum()) == 3 and not bool((LABELS[flags] == 0).any())
    assert all(
        out["captions"][i] in {t.format("circle") for t in config.caption_templates}
        for i in flags.nonzero().squeeze(1).tolist()
    )
    assert torch.equal(out["images"][~flags], IMAGES[~flags]) and [
        out["captions"][i] for i in (~flags).nonzero().squeeze(1).tolist()
    ] == [captions[i] for i in (~flags).nonzero().squeeze(1).tolist()]
    triggered, true = triggered_non_target(IMAGES, LABELS, trigger, 0)
    assert triggered.shape[0] == 8 and not bool((true == 0).any())
    with pytest.raises(ValueError, match=r"clip_attack\.poison_ratio"):
        poison_pairs(
            IMAGES,
            captions,
            LABELS,
            trigger,
            ClipAttackConfig(poison_ratio=0.9),
            ["a", "b", "c"],
            torch.Generator(),
        )


def test_backdoor_loss_is_low_when_patched_images_leave_their_captions_and_gather():
    texts = torch.eye(4)[:3]
    gathered = torch.eye(4)[3].expand(3, 4)  # one point, orthogonal to every caption
    assert float(backdoor_loss(gathered, texts)) == pytest.approx(-1.0)
    assert float(backdoor_loss(texts, texts)) > float(backdoor_loss(gathered, texts))


@pytest.mark.parametrize("method", ["direct", "generator"])
def test_adversarial_patch_stays_inside_its_corner_and_leaves_the_encoder_alone(method):
    torch.manual_seed(0)
    model = create_clip(EMBEDDED_CLIP)
    captions = ["a photo of a red circle", "a picture of a star", "a blue square"] * 4
    config = AdversarialPatchConfig(patch_size=6, steps=8, lr=0.2, batch_size=8, method=method)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    patch, losses = optimise_adversarial_patch(
        model,
        get_tokenizer(EMBEDDED_CLIP),
        IMAGES,
        captions,
        config,
        preprocess_config(model),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(patch["mask"], corner_mask(32, 6)) and int(patch["mask"].sum()) == 36
    assert float(patch["pattern"].min()) >= 0 and float(patch["pattern"].max()) <= 1
    patched = apply_trigger(IMAGES, patch)
    outside = patch["mask"].expand_as(IMAGES[0]) == 0
    assert torch.equal(patched[:, outside], IMAGES[:, outside]) and not torch.equal(patched, IMAGES)
    assert len(losses) == 8 and all(-2 <= loss <= 2 for loss in losses)  # two cosines: bounded
    # the encoder is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again, _ = optimise_adversarial_patch(
        model,
        get_tokenizer(EMBEDDED_CLIP),
        IMAGES,
        captions,
        config,
        preprocess_config(model),
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(again["pattern"], patch["pattern"])  # same seed, same patch


def test_adversarial_patch_config_names_a_bad_method_or_value():
    with pytest.raises(
        ValueError, match=r"abd.patch.method = 'gan': must be 'direct' or 'generator'"
    ):
        AdversarialPatchConfig.from_params({"method": "gan"})
    with pytest.raises(
        ValueError, match=r"abd.patch.adversarial_weight = -1: must be greater than or equal to 0"
    ):
        AdversarialPatchConfig.from_params({"method": "generator", "adversarial_weight": -1})


def test_defense_views_ft_none_cleanclip_augments_abd_patches():
    config = ClipDefenseConfig()
    captions = ["a photo of a small red circle"] * 12
    assert defense_views("ft", config, None) is None
    patch = {"pattern": torch.ones(3, 32, 32), "mask": corner_mask(32, 6)}
    image_view, text_view = defense_views("abd", config, patch)(
        IMAGES, captions, torch.Generator().manual_seed(0)
    )
    assert torch.equal(image_view, apply_trigger(IMAGES, patch)) and len(text_view) == 12
    torch.manual_seed(0)
    augmented, _ = defense_views("cleanclip", config, None)(
        IMAGES, captions, torch.Generator().manual_seed(0)
    )
    assert (
        augmented.shape == IMAGES.shape
        and augmented.dtype == torch.uint8
        and not torch.equal(augmented, IMAGES)
    )
    with pytest.raises(ValueError, match="abd: the adversarial patch is missing"):
        defense_views("abd", config, None)
    with pytest.raises(ValueError, match="unknown CLIP defense"):
        defense_views("roclip", config, None)


def test_poisoned_captions_keep_their_words_but_name_the_target():
    from cgd_kedro.clip.triggers import retarget_caption

    assert (
        retarget_caption("a small red star on a striped background", "star", "circle")
        == "a small red circle on a striped background"
    )
    assert (
        retarget_caption("a star in red, small, over a plain background", "star", "circle")
        == "a circle in red, small, over a plain background"
    )
    assert retarget_caption("a starfish", "star", "circle") is None  # whole words only
    config = ClipAttackConfig(attack="badnet", target=0, poison_ratio=0.25)
    names = ["circle", "square", "star"]
    captions = [f"a large blue {names[int(y)]}" for y in LABELS]
    out = poison_pairs(
        IMAGES,
        captions,
        LABELS,
        static_trigger(config, 32, 3, torch.Generator()),
        config,
        names,
        torch.Generator().manual_seed(2),
    )
    assert [out["captions"][i] for i in out["poisoned"].nonzero().squeeze(1).tolist()] == [
        "a large blue circle"
    ] * 3
