"""Input-Aware: per-input trigger x' = x + m * (p - x) from learnt networks; cover samples use
the trigger of another image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgd_kedro.attacks.base import ATTACK_REGISTRY, AttackContext
from cgd_kedro.attacks.inputaware import (
    InputAware,
    _trigger,
    diversity_loss,
    input_aware_trigger,
    nets_from_state,
    nets_state,
    other_image_index,
    threshold,
    train_mask_network,
    train_pattern_generator,
)
from cgd_kedro.data.world import generate_world

CPU = torch.device("cpu")
# Small enough for a CPU test: 16x16 images, width-4 networks and surrogate.
TINY = {"width": 4, "surrogate_width": 4, "batch_size": 32, "poison_rate": 0.125}


@pytest.fixture(scope="module")
def world():
    train, test, _, _ = generate_world(seed=0, n_train=256, n_test=64, n_captions=0, image_size=16)
    return train, test


@pytest.fixture(scope="module")
def trained(world):
    """Mask network (200 steps: at 100 the density hinge has not yet pulled the mean mask
    under its target, 0.049 on torch 2.14) and pattern generator (30 joint steps) on 256 tiny
    images."""
    train, _ = world
    mask_net = train_mask_network(train["images"], width=4, steps=200, batch_size=32, seed=0)
    pattern_net, metrics = train_pattern_generator(
        train["images"],
        train["labels"],
        mask_net,
        num_classes=10,
        target=0,
        steps=30,
        seed=1,
        width=4,
        surrogate_width=4,
        batch_size=32,
        poison_rate=0.125,
    )
    return pattern_net, mask_net, metrics


def _context(train, seed=0):
    return AttackContext(
        train_set=train,
        num_classes=10,
        target=0,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
    )


class _Constant(nn.Module):
    """A stand-in network whose output is a fixed map (broadcast over the batch)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x):
        return self.value.expand(x.shape[0], *self.value.shape[1:])


def test_registered():
    assert ATTACK_REGISTRY["inputaware"] is InputAware
    assert not InputAware.clean_label and not InputAware.needs_surrogate
    assert InputAware.cover_ratio == 1.0 and not InputAware.supports_all_to_all


def test_trigger_formula_with_known_pattern_and_mask():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)
    before = images.clone()
    pattern = torch.rand(1, 3, 8, 8, generator=g)
    raw_mask = torch.zeros(1, 1, 8, 8)
    raw_mask[..., 2:4, 5:8] = 1.0  # threshold(1) = 1 - 2e-9, threshold(0) = 2e-9
    out = input_aware_trigger(images, _Constant(pattern), _Constant(raw_mask))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    on = raw_mask[0, 0].bool()
    expected = (pattern.expand(3, -1, -1, -1) * 255).round().to(torch.uint8)
    assert torch.equal(out[:, :, on], expected[:, :, on])  # the pattern inside the mask
    assert torch.equal(out[:, :, ~on], images[:, :, ~on])  # the image everywhere else
    assert torch.equal(images, before)
    # Float images: the same, up to the soft threshold's 2e-9.
    out_f = input_aware_trigger(images.float() / 255, _Constant(pattern), _Constant(raw_mask))
    assert out_f.dtype == torch.float32
    assert torch.allclose(out_f, out.float() / 255, atol=0.5 / 255 + 1e-6)
    # A half-open mask (raw 0.5 -> m = 0.5) gives the average of image and pattern.
    half = input_aware_trigger(
        images.float() / 255, _Constant(pattern), _Constant(torch.full((1, 1, 8, 8), 0.5))
    )
    assert torch.allclose(half, (images.float() / 255 + pattern) / 2, atol=1e-6)


def test_threshold_is_a_soft_step_in_0_1():
    values = threshold(torch.tensor([-5.0, 0.0, 0.4, 0.5, 0.6, 1.0, 5.0]))
    assert values.min() >= 0 and values.max() <= 1
    assert values[1] < 1e-6 and values[5] > 1 - 1e-6 and abs(values[3].item() - 0.5) < 1e-6
    assert values[2] < 0.02 and values[4] > 0.98


def test_other_image_index_is_a_derangement():
    for n in range(2, 12):
        partner = other_image_index(n, torch.Generator().manual_seed(n))
        assert sorted(partner.tolist()) == list(range(n))
        assert bool((partner != torch.arange(n)).all())
    assert other_image_index(1, torch.Generator()).tolist() == [0]
    assert torch.equal(
        other_image_index(9, torch.Generator().manual_seed(3)),
        other_image_index(9, torch.Generator().manual_seed(3)),
    )


def test_diversity_loss_is_image_distance_over_trigger_distance():
    x1, x2 = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    t1, t2 = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.25)
    assert abs(diversity_loss(x1, x2, t1, t2).item() - 2.0) < 1e-5


def test_mask_density_close_to_target_after_training(world, trained):
    _, test = world
    pattern_net, mask_net, _ = trained
    with torch.no_grad():
        pattern, mask = _trigger(test["images"].float() / 255, pattern_net, mask_net)
    assert mask.shape == (64, 1, 16, 16) and pattern.shape == (64, 3, 16, 16)
    assert mask.min() >= 0 and mask.max() <= 1 and pattern.min() >= 0 and pattern.max() <= 1
    assert abs(mask.mean().item() - 0.032) <= 0.016  # target 0.032
    assert 0.005 <= (mask > 0.5).float().mean().item() <= 0.064  # a sparse, near-binary mask
    # A larger target density gives a denser mask.
    denser = train_mask_network(
        world[0]["images"], mask_density=0.2, width=4, steps=200, batch_size=32, seed=0
    )
    with torch.no_grad():
        _, dense_mask = _trigger(test["images"].float() / 255, pattern_net, denser)
    assert dense_mask.mean().item() > mask.mean().item() + 0.01


def test_triggers_differ_between_inputs(world, trained):
    _, test = world
    pattern_net, mask_net, metrics = trained
    assert set(metrics) == {"clean_acc", "bd_acc", "cross_acc", "mask_density"}
    with torch.no_grad():
        pattern, mask = _trigger(test["images"].float() / 255, pattern_net, mask_net)
    pattern_distance = (pattern[:32] - pattern[32:]).pow(2).mean(dim=(1, 2, 3)).sqrt()
    mask_distance = (mask[:32] - mask[32:]).abs().mean(dim=(1, 2, 3))
    assert bool((pattern_distance > 0.05).all())  # every pair of inputs has its own pattern
    assert (mask_distance > 0).float().mean().item() == 1.0
    assert mask_distance.mean().item() > 0.01


def test_prepare_apply_cover(world):
    train, test = world
    attack = InputAware(train_images=128, mask_steps=20, train_steps=5, **TINY)
    state = attack.prepare(_context(train, seed=7))
    assert all(k.startswith(("generator.", "mask.")) for k in state)
    assert any(k.startswith("generator.") for k in state) and any(
        k.startswith("mask.") for k in state
    )
    again = attack.prepare(_context(train, seed=7))
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)

    images = test["images"][:10]
    out = attack.apply(images, state, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    # deterministic
    assert torch.equal(attack.apply(images, state, torch.Generator().manual_seed(5), "test"), out)
    out_f = attack.apply(images.float() / 255, state, torch.Generator())
    assert (
        out_f.dtype == torch.float32
        and (out_f * 255 - out.float()).abs().max().item() <= 0.5 + 1e-3
    )

    # State round trip: rebuilt networks give identical outputs.
    pattern_net, mask_net = nets_from_state({k: v.clone() for k, v in state.items()})
    assert torch.equal(input_aware_trigger(images, pattern_net, mask_net), out)
    assert set(nets_state(pattern_net, mask_net)) == set(state)

    # Cover: the trigger and mask of ANOTHER image of the batch, different from the own trigger.
    cover = attack.cover(images, state, torch.Generator().manual_seed(1))
    assert torch.equal(cover, attack.cover(images, state, torch.Generator().manual_seed(1)))
    partner = other_image_index(10, torch.Generator().manual_seed(1))
    assert torch.equal(
        cover, input_aware_trigger(images, pattern_net, mask_net, source=images[partner])
    )
    assert not torch.equal(cover, out)
    assert all(not torch.equal(cover[i], out[i]) for i in range(10))
    single = attack.cover(images[:1], state, torch.Generator())
    assert torch.equal(
        single,
        input_aware_trigger(images[:1], pattern_net, mask_net, source=images[:1].flip(-2, -1)),
    )
    with pytest.raises(ValueError, match="inputaware state"):
        attack.apply(images, {}, torch.Generator())


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("mask_density", -0.1),
        ("mask_density", 1.5),
        ("lambda_div", -1.0),
        ("lambda_norm", -1.0),
        ("poison_rate", 0.6),
        ("poison_rate", 0.001),
        ("width", 0),
        ("surrogate_width", 0),
        ("train_images", 1),
        ("mask_steps", -1),
        ("train_steps", 0),
        ("batch_size", 2),
        ("lr_generator", 0.0),
        ("lr_classifier", -1.0),
    ],
)
def test_bad_trigger_parameters(param, value):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        InputAware(**{param: value})
