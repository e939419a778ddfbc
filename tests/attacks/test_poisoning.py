"""Poisoning of training/test sets and the attack's parameter checks."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set

K = 10


def _train_set(n=200, seed=0, size=12):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 255, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % K  # every class present, 20 each for n=200
    labels = labels[torch.randperm(n, generator=g)]
    return {"images": images, "labels": labels, "attr_colour": torch.arange(n) * 3}


def _has_trigger(images: torch.Tensor) -> torch.Tensor:
    return (images[..., -3:, -3:] == 255).flatten(1).all(1)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.333, 0.05])
def test_all_to_one_poisoning(ratio):
    train = _train_set()
    before = {k: v.clone() for k, v in train.items()}
    config = AttackConfig.from_params({"name": "badnets", "target": 3, "ratio": ratio}, K)
    poisoned = poison_training_set(
        train, config.build(), {}, config, K, torch.Generator().manual_seed(0)
    )
    n = 200
    flags = poisoned["poison"]
    assert flags.dtype == torch.bool and poisoned["cover"].dtype == torch.bool
    assert int(flags.sum()) == round(ratio * n)
    assert not bool(poisoned["cover"].any())
    # Poisoned: target label, never from the target class, trigger stamped, rest of image intact.
    assert bool((poisoned["labels"][flags] == 3).all())
    assert not bool((train["labels"][flags] == 3).any())
    assert bool(_has_trigger(poisoned["images"][flags]).all())
    assert torch.equal(poisoned["images"][flags][..., :-3, :], train["images"][flags][..., :-3, :])
    assert torch.equal(poisoned["images"][flags][..., :, :-3], train["images"][flags][..., :, :-3])
    # Unpoisoned images and labels are byte-for-byte unchanged.
    assert torch.equal(poisoned["images"][~flags], train["images"][~flags])
    assert torch.equal(poisoned["labels"][~flags], train["labels"][~flags])
    assert torch.equal(poisoned["original_labels"], train["labels"])
    assert poisoned["original_labels"].dtype == torch.int64
    # Extra columns carried over; the input set is not modified.
    assert torch.equal(poisoned["attr_colour"], train["attr_colour"])
    for key in train:
        assert torch.equal(train[key], before[key]), key


def test_poisoning_with_ratio_one_is_refused_when_target_images_cannot_be_relabelled():
    train = _train_set()
    config = AttackConfig.from_params({"name": "badnets", "target": 0, "ratio": 1.0}, K)
    with pytest.raises(
        ValueError, match=r"attack\.ratio: 1\.0 asks for 200 poisoned images but only 180"
    ):
        poison_training_set(train, config.build(), {}, config, K, torch.Generator().manual_seed(0))


def test_all_to_all_labels_are_next_class():
    train = _train_set()
    config = AttackConfig.from_params({"name": "badnets", "ratio": 0.5, "mode": "all_to_all"}, K)
    poisoned = poison_training_set(
        train, config.build(), {}, config, K, torch.Generator().manual_seed(1)
    )
    flags = poisoned["poison"]
    assert int(flags.sum()) == 100
    assert torch.equal(poisoned["labels"][flags], (train["labels"][flags] + 1) % K)
    assert torch.equal(poisoned["labels"][~flags], train["labels"][~flags])
    # Class K-1 wraps to 0 and is poisonable in all_to_all.
    assert bool((train["labels"][flags] == K - 1).any())
    wrapped = flags & (train["labels"] == K - 1)
    assert bool((poisoned["labels"][wrapped] == 0).all())


def test_all_to_all_ratio_one_poisons_everything():
    train = _train_set(n=30)
    config = AttackConfig.from_params({"name": "badnets", "ratio": 1, "mode": "all_to_all"}, K)
    poisoned = poison_training_set(
        train, config.build(), {}, config, K, torch.Generator().manual_seed(1)
    )
    assert bool(poisoned["poison"].all())
    assert torch.equal(poisoned["labels"], (train["labels"] + 1) % K)


def test_same_generator_seed_gives_same_indices_and_different_seed_differs():
    train = _train_set()
    config = AttackConfig.from_params({"name": "badnets", "target": 1, "ratio": 0.1}, K)
    a = poison_training_set(train, config.build(), {}, config, K, torch.Generator().manual_seed(42))
    b = poison_training_set(train, config.build(), {}, config, K, torch.Generator().manual_seed(42))
    c = poison_training_set(train, config.build(), {}, config, K, torch.Generator().manual_seed(43))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["poison"], c["poison"])


def test_trigger_parameters_are_used():
    train = _train_set(n=50, size=16)
    config = AttackConfig.from_params(
        {"name": "badnets", "ratio": 0.2, "trigger": {"patch_size": 5}}, K
    )
    poisoned = poison_training_set(
        train, config.build(), {}, config, K, torch.Generator().manual_seed(0)
    )
    flags = poisoned["poison"]
    assert bool((poisoned["images"][flags][..., -5:, -5:] == 255).all())
    changed = (poisoned["images"] != train["images"]).flatten(1).sum(1)
    assert int(changed[~flags].sum()) == 0
    # Only pixels in the 5x5 corner (3 channels) can change.
    assert int(changed.max()) <= 3 * 25


def test_make_backdoor_test_set_all_to_one():
    test = _train_set(n=60, seed=5)
    config = AttackConfig.from_params({"name": "badnets", "target": 4, "ratio": 0.1}, K)
    backdoor = make_backdoor_test_set(test, config.build(), {}, config, K, torch.Generator())
    keep = test["labels"] != 4
    assert set(backdoor) == {"images", "labels", "original_labels"}
    assert backdoor["images"].shape[0] == int(keep.sum()) == 54
    assert bool((backdoor["labels"] == 4).all())
    assert torch.equal(backdoor["original_labels"], test["labels"][keep])
    assert not bool((backdoor["original_labels"] == 4).any())
    assert bool(_has_trigger(backdoor["images"]).all())
    assert torch.equal(backdoor["images"][..., :-3, :], test["images"][keep][..., :-3, :])


def test_make_backdoor_test_set_all_to_all_keeps_everything():
    test = _train_set(n=40, seed=6)
    config = AttackConfig.from_params({"name": "badnets", "mode": "all_to_all"}, K)
    backdoor = make_backdoor_test_set(test, config.build(), {}, config, K, torch.Generator())
    assert torch.equal(backdoor["original_labels"], test["labels"])
    assert torch.equal(backdoor["labels"], (test["labels"] + 1) % K)


def test_from_params_defaults_and_values():
    config = AttackConfig.from_params({"name": "badnets"}, K)
    assert (config.target, config.ratio, config.mode, config.trigger) == (0, 0.1, "all_to_one", {})
    config = AttackConfig.from_params(
        {"name": "badnets", "target": 9, "ratio": 1, "trigger": None}, K
    )
    assert config.target == 9 and config.trigger == {}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"name": "badnets", "ratio": 0}, r"attack\.ratio = 0: must be greater than 0"),
        (
            {"name": "badnets", "ratio": 1.5},
            r"attack\.ratio = 1\.5: must be less than or equal to 1",
        ),
        ({"name": "badnets", "ratio": -0.1}, r"attack\.ratio"),
        ({"name": "badnets", "ratio": "0.1"}, r"attack\.ratio"),
        (
            {"name": "badnets", "target": 10},
            r"attack\.target = 10: must be a class index in \[0, 9\]",
        ),
        ({"name": "badnets", "target": -1}, r"attack\.target"),
        ({"name": "badnets", "target": 1.0}, r"attack\.target"),
        (
            {"name": "badnets", "mode": "one_to_one"},
            r"attack\.mode = 'one_to_one': must be 'all_to_one' or 'all_to_all'",
        ),
        ({"name": "blendd"}, r"attack\.name: unknown attack 'blendd'"),
        (
            {"name": "badnets", "ratoi": 0.1},
            r"attack\.ratoi: unknown parameter; did you mean 'ratio'\?",
        ),
    ],
)
def test_from_params_errors_name_the_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        AttackConfig.from_params(params, K)


def test_target_is_checked_against_the_number_of_classes():
    assert AttackConfig.from_params({"name": "badnets", "target": 42}, 43).target == 42
    with pytest.raises(ValueError, match=r"attack\.target = 2: must be a class index in \[0, 1\]"):
        AttackConfig.from_params({"name": "badnets", "target": 2}, 2)


def test_missing_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"attack\.name"):
        AttackConfig.from_params({"ratio": 0.1}, K)


def test_bad_trigger_arguments_fail_fast():
    with pytest.raises(ValueError, match=r"attack\.trigger"):
        AttackConfig.from_params({"name": "badnets", "trigger": {"patch_size": 0}}, K)
