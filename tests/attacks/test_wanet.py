"""WaNet: the grid is identity + s * noise / H (clamped), the output is a bilinear warp by that
grid, and noise-mode cover samples are warped by a further random field of at most 1/H."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.wanet import (
    WaNet,
    identity_grid,
    noisy_grids,
    random_noise_grid,
    warp,
    warp_grid,
)


def _context(size=16, n=4, seed=0):
    images = torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(9), dtype=torch.uint8
    )
    return AttackContext(
        {"images": images, "labels": torch.zeros(n, dtype=torch.long)},
        10,
        0,
        torch.device("cpu"),
        torch.Generator().manual_seed(seed),
    )


def test_noise_grid_interpolates_normalised_control_points():
    # H = 10, k = 4: control points fall on pixels 0, 3, 6, 9 (align_corners=True).
    noise = random_noise_grid(10, torch.Generator().manual_seed(0), k=4)
    assert noise.shape == (1, 10, 10, 2)
    control = noise[0, ::3, ::3, :]  # 4 x 4 x 2
    assert abs(float(control.abs().mean()) - 1.0) < 1e-6  # ins /= mean |ins|
    ins = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(control.permute(2, 0, 1), (ins / ins.abs().mean())[0], atol=1e-5)


def test_grid_displacement_is_s_noise_over_h():
    size, s = 32, 0.5
    noise = random_noise_grid(size, torch.Generator().manual_seed(1), k=4)
    grid = warp_grid(noise, s=s)
    identity = identity_grid(size)
    displacement = grid - identity
    unclamped = (grid.abs() < 1).all(-1, keepdim=True).expand_as(grid)
    assert torch.allclose(displacement[unclamped], (s * noise / size)[unclamped], atol=1e-6)
    assert float(displacement.abs().max()) <= s * float(noise.abs().max()) / size + 1e-6
    assert float(grid.abs().max()) <= 1.0
    assert torch.allclose(warp_grid(noise, s=0.0), identity)
    assert torch.allclose(warp_grid(noise, s=0.0, grid_rescale=0.5), 0.5 * identity)


def test_identity_grid_layout_and_exact_bilinear_warp():
    size = 12
    identity = identity_grid(size)
    # x varies along columns
    assert torch.allclose(identity[0, 0, :, 0], torch.linspace(-1, 1, size))
    assert torch.allclose(identity[0, :, 0, 1], torch.linspace(-1, 1, size))  # y varies along rows
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(warp(images, identity), images, atol=1e-6)
    # A horizontal ramp x[..., j] = j / (W - 1) samples to (g_x + 1) / 2
    # under bilinear interpolation.
    ramp = torch.linspace(0, 1, size).expand(1, 3, size, size).contiguous()
    grid = warp_grid(random_noise_grid(size, torch.Generator().manual_seed(3)), s=2.0)
    assert torch.allclose(warp(ramp, grid)[0, 0], (grid[0, ..., 0] + 1) / 2, atol=1e-5)


def test_apply_is_a_warp_and_deterministic():
    context = _context(size=16)
    attack = WaNet()
    state = attack.prepare(context)
    assert state["noise_grid"].shape == (1, 16, 16, 2)
    assert torch.equal(state["noise_grid"], attack.prepare(_context(size=16))["noise_grid"])
    images = context.train_set["images"]
    before = images.clone()
    out = attack.apply(images, state, torch.Generator())
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert bool((out != images).flatten(1).any(1).all())
    assert torch.equal(out, attack.apply(images, state, torch.Generator()))
    assert torch.equal(images, before)
    constant = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)
    assert torch.equal(attack.apply(constant, state, torch.Generator()), constant)
    grey = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(attack.apply(grey, state, torch.Generator()), grey, atol=1e-6)
    assert WaNet.supports_all_to_all and not WaNet.clean_label and attack.cover_ratio == 2.0


def test_cover_noise_mode():
    context = _context(size=16, n=6)
    attack = WaNet()
    state = attack.prepare(context)
    grid = warp_grid(state["noise_grid"], s=0.5)
    noisy = noisy_grids(grid, 6, torch.Generator().manual_seed(4))
    assert noisy.shape == (6, 16, 16, 2)
    assert float((noisy - grid).abs().max()) <= 1 / 16 + 1e-6 and float(noisy.abs().max()) <= 1
    assert not torch.allclose(noisy[0], noisy[1])  # one random field per image
    images = context.train_set["images"]
    cover = attack.cover(images, state, torch.Generator().manual_seed(5))
    poisoned = attack.apply(images, state, torch.Generator())
    assert cover.dtype == torch.uint8 and bool((cover != poisoned).flatten(1).any(1).all())
    assert torch.equal(cover, attack.cover(images, state, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"k": 1}, "k"),
        ({"k": 4.0}, "k"),
        ({"s": -0.5}, "s"),
        ({"grid_rescale": -1}, "grid_rescale"),
        ({"cover_ratio": 11}, "cover_ratio"),
    ],
)
def test_bad_parameters(kwargs, param):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        WaNet(**kwargs)


def test_k_larger_than_the_image_fails_in_prepare():
    with pytest.raises(ValueError, match=r"^attack\.trigger\.k"):
        WaNet(k=20).prepare(_context(size=16))
