"""Adap-Blend: in training exactly half of the 4x4 pieces carry the blended trigger (alpha 0.15),
nothing outside them changes; the test trigger is the whole pattern at alpha 0.2."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.adapblend import AdaptiveBlend, masked_blend, piece_index, random_piece_masks
from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.poisoning import AttackConfig, poison_training_set


def _setup(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = 0.4 * torch.rand(n, 3, size, size, generator=g)  # in [0, 0.4]
    # in [0.6, 1]: K - x != 0 everywhere
    pattern = 0.6 + 0.4 * torch.rand(3, size, size, generator=g)
    return images, {"pattern": pattern}


def _changed_pieces(difference, size, grid=4):
    cells = piece_index(size, size, grid)
    changed = difference.abs().amax(dim=1) > 0  # n x H x W
    return torch.stack(
        [
            torch.stack([changed[i][cells == p].any() for p in range(grid * grid)])
            for i in range(changed.shape[0])
        ]
    )


@pytest.mark.parametrize("size", [32, 30])
def test_train_phase_changes_exactly_half_of_the_pieces(size):
    images, state = _setup(size=size)
    out = AdaptiveBlend().apply(images, state, torch.Generator().manual_seed(1), "train")
    assert out.dtype == torch.float32 and out.shape == images.shape
    difference = out - images
    pieces = _changed_pieces(difference, size)
    assert pieces.sum(1).tolist() == [8] * images.shape[0]
    cells = piece_index(size, size, 4)
    for i in range(images.shape[0]):
        inside = pieces[i][cells]  # H x W: pixel lies in a chosen piece
        assert torch.equal(out[i][:, ~inside], images[i][:, ~inside])  # untouched outside, exactly
        expected = 0.15 * (state["pattern"] - images[i])
        assert torch.allclose(difference[i][:, inside], expected[:, inside], atol=1e-6)
        # Whole pieces: every pixel of a chosen piece changed.
        assert bool((difference[i][:, inside] != 0).all())
    assert len({tuple(p.tolist()) for p in pieces}) > 1  # pieces drawn per image


def test_test_phase_blends_the_whole_trigger_at_0_2():
    images, state = _setup(n=3)
    out = AdaptiveBlend().apply(images, state, torch.Generator(), "test")
    assert torch.allclose(out - images, 0.2 * (state["pattern"] - images), atol=1e-6)
    with pytest.raises(ValueError, match="phase"):
        AdaptiveBlend().apply(images, state, torch.Generator(), "eval")


def test_uint8_determinism_and_cover():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (5, 3, 16, 16), generator=g, dtype=torch.uint8)
    before = images.clone()
    attack = AdaptiveBlend()
    context = AttackContext(
        {"images": images, "labels": torch.zeros(5, dtype=torch.long)},
        10,
        0,
        torch.device("cpu"),
        torch.Generator().manual_seed(0),
    )
    state = attack.prepare(context)
    again = attack.prepare(
        AttackContext(
            context.train_set, 10, 0, torch.device("cpu"), torch.Generator().manual_seed(0)
        )
    )
    assert state["pattern"].dtype == torch.uint8 and state["pattern"].shape == (3, 16, 16)
    assert torch.equal(state["pattern"], again["pattern"])
    a = attack.apply(images, state, torch.Generator().manual_seed(3))
    b = attack.apply(images, state, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, attack.apply(images, state, torch.Generator().manual_seed(4)))
    cover = attack.cover(images, state, torch.Generator().manual_seed(3))
    assert torch.equal(cover, a)  # cover samples get the same train-phase (masked) trigger
    assert torch.equal(images, before)


def test_masks_and_blend_helpers():
    masks = random_piece_masks(4, 8, 8, torch.Generator().manual_seed(0), pieces=16, kept=8)
    # 8 pieces of 2x2
    assert masks.shape == (4, 1, 8, 8) and masks.sum((1, 2, 3)).tolist() == [32.0] * 4
    x = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    k = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    assert int(masked_blend(x, k, torch.ones(1, 1, 4, 4), alpha=0.2).unique()) == 51
    assert piece_index(4, 4, 2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_poisoning_with_cover_samples():
    images = torch.randint(
        0, 256, (40, 3, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.uint8
    )
    labels = torch.arange(40) % 4
    attack = AdaptiveBlend()
    assert not AdaptiveBlend.clean_label and attack.cover_ratio == 1.0
    state = attack.prepare(
        AttackContext(
            {"images": images, "labels": labels},
            4,
            0,
            torch.device("cpu"),
            torch.Generator().manual_seed(0),
        )
    )
    config = AttackConfig(name="adapblend", ratio=0.1, target=0)
    out = poison_training_set(
        {"images": images, "labels": labels},
        attack,
        state,
        config,
        4,
        torch.Generator().manual_seed(1),
    )
    assert (
        int(out["poison"].sum()) == 4
        and int(out["cover"].sum()) == 4
        and not bool((out["poison"] & out["cover"]).any())
    )
    assert torch.equal(out["labels"][out["cover"]], labels[out["cover"]])
    assert bool((out["labels"][out["poison"]] == 0).all())
    untouched = ~(out["poison"] | out["cover"])
    assert torch.equal(out["images"][untouched], images[untouched])


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"train_alpha": 1.5}, "train_alpha"),
        ({"test_alpha": -0.1}, "test_alpha"),
        ({"pieces": 15}, "pieces"),
        ({"pieces": 0}, "pieces"),
        ({"mask_rate": 2}, "mask_rate"),
        ({"cover_ratio": -1}, "cover_ratio"),
    ],
)
def test_bad_parameters(kwargs, param):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        AdaptiveBlend(**kwargs)
    with pytest.raises(FileNotFoundError, match=r"^attack\.trigger\.image_path"):
        AdaptiveBlend(image_path="/nonexistent/kitty.png")
