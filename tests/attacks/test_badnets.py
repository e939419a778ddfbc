"""BadNets trigger: exactly the bottom-right square, white, nothing else, input untouched."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks import build_attack, list_attacks
from cgd_kedro.attacks.badnets import stamp_patch as badnets


def _random_uint8(n=4, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Values in 0..254 so that no original pixel is already 255.
    return torch.randint(0, 255, (n, c, h, w), generator=g, dtype=torch.uint8)


def _corner_mask(h, w, size):
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[h - size :, w - size :] = True
    return mask


def test_uint8_exactly_bottom_right_3x3_becomes_255():
    images = _random_uint8()
    before = images.clone()
    out = badnets(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    mask = _corner_mask(32, 32, 3)
    assert bool((out[:, :, mask] == 255).all())
    assert torch.equal(out[:, :, ~mask], images[:, :, ~mask])
    # Exactly 4 images x 3 channels x 9 pixels changed.
    assert int((out != images).sum()) == 4 * 3 * 9
    assert torch.equal(out[..., 29:, 29:], torch.full((4, 3, 3, 3), 255, dtype=torch.uint8))
    assert not bool((out[..., 28, 29:] == 255).any())
    assert not bool((out[..., 29:, 28] == 255).any())
    # The input is not modified and the output does not share memory with it.
    assert torch.equal(images, before)
    assert out.data_ptr() != images.data_ptr()


def test_float_images_get_1_0():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 16, 16, generator=g) * 0.9
    before = images.clone()
    out = badnets(images)
    assert out.dtype == torch.float32
    mask = _corner_mask(16, 16, 3)
    assert bool((out[:, :, mask] == 1.0).all())
    assert torch.equal(out[:, :, ~mask], images[:, :, ~mask])
    assert torch.equal(images, before)


def test_patch_size_and_value_parameters():
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    out = badnets(images, patch_size=5, value=7)
    assert int((out == 7).sum()) == 3 * 25
    assert bool((out[..., 3:, 3:] == 7).all())
    full = badnets(images, patch_size=8)
    assert bool((full == 255).all())
    one = badnets(images, patch_size=1)
    assert int((one == 255).sum()) == 3 and bool((one[..., 7, 7] == 255).all())


def test_non_square_images_use_the_smaller_side_as_limit():
    images = torch.zeros(1, 3, 6, 10, dtype=torch.uint8)
    out = badnets(images, patch_size=6)
    assert bool((out[..., :, 4:] == 255).all()) and not bool((out[..., :, :4] == 255).any())
    with pytest.raises(
        ValueError, match=r"attack\.trigger\.patch_size: expected an integer in \[1, 6\], got 7"
    ):
        badnets(images, patch_size=7)


@pytest.mark.parametrize("bad", [0, -1, 33, 2.5, "3"])
def test_bad_patch_size_errors(bad):
    with pytest.raises(
        ValueError, match=r"attack\.trigger\.patch_size: expected an integer in \[1, 32\]"
    ):
        badnets(_random_uint8(n=1), patch_size=bad)


def test_registry():
    assert "badnets" in list_attacks()
    attack = build_attack("badnets", patch_size=2)
    images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    assert torch.equal(attack.apply(images, {}, torch.Generator()), badnets(images, patch_size=2))
    with pytest.raises(ValueError, match=r"attack\.name: unknown attack 'blend'"):
        build_attack("blend")
