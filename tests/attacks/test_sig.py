"""SIG: the added signal is exactly delta * sin(2 pi j f / W), the same on every row and channel."""

from __future__ import annotations

import math

import pytest
import torch

from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set
from cgd_kedro.attacks.sig import SIG, add_sinusoid, sinusoid


def _expected(width, delta=40.0, frequency=6.0):
    j = torch.arange(width, dtype=torch.float64)
    return delta * torch.sin(2 * math.pi * j * frequency / width)  # 0-255 scale


def test_float_signal_is_the_sinusoid_where_not_clipped():
    g = torch.Generator().manual_seed(0)
    # away from 0 and 1: nothing clips at delta 20
    images = 0.2 + 0.6 * torch.rand(3, 3, 8, 32, generator=g)
    out = add_sinusoid(images, delta=20, frequency=6)
    assert out.dtype == torch.float32 and out.shape == images.shape
    added = (out - images).double() * 255
    expected = _expected(32, 20.0, 6.0).view(1, 1, 1, -1).expand_as(added)
    assert torch.allclose(added, expected, atol=1e-4)
    # Constant along rows and identical in every channel.
    assert torch.allclose(added, added[:, :1, :1, :].expand_as(added), atol=1e-4)
    assert float(added[..., 0].abs().max()) < 1e-4  # sin(0) = 0: first column unchanged


def test_uint8_is_the_rounded_sinusoid_and_clips():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 16, 32), generator=g, dtype=torch.uint8)
    out = add_sinusoid(images, delta=40)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    exact = images.double() + _expected(32).view(1, 1, 1, -1)
    inside = (exact >= 0) & (exact <= 255)
    assert float((out.double() - exact)[inside].abs().max()) <= 0.5 + 1e-4
    assert bool((out[~(exact <= 255)] == 255).all()) and bool((out[~(exact >= 0)] == 0).all())
    # A white image only gets darker where the sinusoid is negative.
    white = add_sinusoid(torch.full((1, 3, 4, 32), 255, dtype=torch.uint8), delta=40)
    negative = _expected(32) < -0.5
    assert bool((white[..., ~negative] == 255).all()) and bool((white[..., negative] < 255).all())


def test_sinusoid_helper_and_frequency():
    signal = sinusoid(32, delta=255.0, frequency=6.0)
    assert torch.allclose(signal.double(), _expected(32, 255.0, 6.0) / 255, atol=1e-6)
    # f periods across the width: f = 1 on 4 columns gives 0, +, 0, -.
    quarter = sinusoid(4, delta=255.0, frequency=1.0)
    assert torch.allclose(quarter, torch.tensor([0.0, 1.0, 0.0, -1.0]), atol=1e-6)


def test_attack_class_and_clean_label_poisoning():
    assert SIG().delta == 40.0 and SIG().frequency == 6.0
    assert (
        SIG.clean_label
        and not SIG.supports_all_to_all
        and not SIG.needs_surrogate
        and SIG.cover_ratio == 0
    )
    attack = SIG(delta=20, frequency=6)
    images = torch.randint(
        0, 256, (20, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8
    )
    labels = torch.arange(20) % 4
    train = {"images": images, "labels": labels}
    config = AttackConfig(name="sig", ratio=0.2, target=1, trigger={"delta": 20})
    poisoned = poison_training_set(train, attack, {}, config, 4, torch.Generator().manual_seed(0))
    assert torch.equal(poisoned["labels"], labels)  # clean label: no label changes
    assert bool((labels[poisoned["poison"]] == 1).all()) and int(poisoned["poison"].sum()) == 4
    changed = (poisoned["images"] != images).flatten(1).any(1)
    assert bool((changed <= poisoned["poison"]).all())
    test = make_backdoor_test_set(train, attack, {}, config, 4, torch.Generator())
    assert bool((test["labels"] == 1).all()) and bool((test["original_labels"] != 1).all())
    assert torch.equal(test["images"], add_sinusoid(images[labels != 1], delta=20))
    # Deterministic (no randomness at all) and the input is never modified.
    before = images.clone()
    assert torch.equal(
        attack.apply(images, {}, torch.Generator()), attack.apply(images, {}, torch.Generator())
    )
    assert torch.equal(images, before)


@pytest.mark.parametrize(
    ("param", "value"), [("delta", -1), ("delta", 300), ("delta", "20"), ("frequency", -2)]
)
def test_bad_parameters(param, value):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        SIG(**{param: value})
