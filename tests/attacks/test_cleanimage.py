"""Clean-image attack: no pixel changes; only the labels of non-target images that show the feature
flip to the target; the backdoor test set holds only (unchanged) feature images."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.cleanimage import CleanImage, parse_feature
from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set
from cgd_kedro.data import world


def _world_like(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
        "labels": torch.randint(0, 10, (n,), generator=g),
        "attr_colour": torch.randint(len(world.COLOUR_NAMES), (n,), generator=g),
        "attr_size": torch.randint(len(world.SIZES), (n,), generator=g),
        "attr_background": torch.randint(len(world.BACKGROUNDS), (n,), generator=g),
    }


def test_apply_changes_no_pixel():
    attack = CleanImage()
    images = _world_like()["images"]
    out = attack.apply(images, {}, torch.Generator(), "train")
    assert (
        out.dtype == torch.uint8
        and torch.equal(out, images)
        and out.data_ptr() != images.data_ptr()
    )
    floats = torch.rand(2, 3, 4, 4)
    assert torch.equal(attack.apply(floats, {}, torch.Generator(), "test"), floats)


def test_candidates_follow_the_generator_attributes():
    data = _world_like()
    striped = world.BACKGROUNDS.index("striped")
    assert torch.equal(
        CleanImage("background=striped").candidates(data), data["attr_background"] == striped
    )
    expected = (data["attr_background"] == striped) & (
        data["attr_size"] == world.SIZES.index("small")
    )
    assert torch.equal(CleanImage().candidates(data), expected)  # default: striped & small
    red = data["attr_colour"] == world.COLOUR_NAMES.index("red")
    assert torch.equal(CleanImage("color = red").candidates(data), red)
    assert torch.equal(CleanImage("Colour=RED").candidates(data), red)


def test_poisoning_flips_only_feature_labels_and_backdoor_set_is_feature_only():
    data = _world_like(n=400)
    attack = CleanImage("background=striped")
    feature = attack.candidates(data)
    config = AttackConfig(
        name="cleanimage", ratio=0.05, target=0, trigger={"feature": "background=striped"}
    )
    out = poison_training_set(data, attack, {}, config, 10, torch.Generator().manual_seed(0))
    assert torch.equal(out["images"], data["images"])  # not a single pixel changed
    flipped = out["labels"] != data["labels"]
    assert torch.equal(flipped, out["poison"]) and int(flipped.sum()) == 20
    assert bool(feature[flipped].all()) and bool((out["labels"][flipped] == 0).all())
    assert bool((data["labels"][flipped] != 0).all())
    # A ratio beyond the feature's share relabels every non-target feature image.
    everything = poison_training_set(
        data, attack, {}, AttackConfig(name="cleanimage", ratio=0.9), 10, torch.Generator()
    )
    assert torch.equal(everything["poison"], feature & (data["labels"] != 0))
    test = make_backdoor_test_set(data, attack, {}, config, 10, torch.Generator())
    keep = feature & (data["labels"] != 0)
    assert torch.equal(test["images"], data["images"][keep])
    assert torch.equal(test["original_labels"], data["labels"][keep]) and bool(
        (test["labels"] == 0).all()
    )
    assert (
        not CleanImage.clean_label
        and not CleanImage.supports_all_to_all
        and CleanImage.cover_ratio == 0
    )


def test_pixel_statistic_predicates_on_real_data():
    images = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    images[0, 0] = 200  # mean red 0.78
    images[1, 0] = 140  # mean red 0.55
    images[2] = 250  # bright
    real = {"images": images, "labels": torch.tensor([1, 2, 3, 4])}
    assert CleanImage("mean_red>0.6").candidates(real).tolist() == [True, False, True, False]
    assert CleanImage("mean_red>0.5 & brightness<0.5").candidates(real).tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert CleanImage("mean_blue>=0.98").candidates(real).tolist() == [False, False, True, False]
    assert CleanImage("mean_green<=0").candidates(real).tolist() == [True, True, False, True]
    with pytest.raises(
        ValueError,
        match=(
            r"^attack\.trigger\.feature: 'background=striped' needs the image set's "
            r"'attr_background' column"
        ),
    ):
        CleanImage("background=striped").candidates(real)


@pytest.mark.parametrize(
    "feature",
    ["", "background", "background=wavy", "shape=circle", "mean_purple>0.1", "mean_red>>1", 3],
)
def test_bad_features(feature):
    with pytest.raises(ValueError, match=r"^attack\.trigger\.feature"):
        CleanImage(feature)


def test_parse_feature():
    assert parse_feature("size=large & mean_red>0.25") == [
        ("attr", "attr_size", 1),
        ("stat", "mean_red", (">", 0.25)),
    ]
