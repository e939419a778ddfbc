"""FTrojan: the chroma DCT changes by exactly `magnitude` at the chosen frequencies and nowhere
else; luminance is unchanged (up to uint8 rounding)."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.ftrojan import (
    FTrojan,
    block_dct,
    block_idct,
    dct_matrix,
    frequency_trigger,
    rgb_to_ycrcb,
    ycrcb_to_rgb,
)


def _mid_float(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.25 + 0.5 * torch.rand(n, 3, size, size, generator=g)  # nothing clips


def _spike_map(size, window, positions):
    spikes = torch.zeros(size, size)
    for row, col in positions:
        spikes[row::window, col::window] = 1.0
    return spikes


def test_dct_matrix_is_orthonormal_and_block_dct_inverts():
    d = dct_matrix(32)
    assert torch.allclose(d @ d.T, torch.eye(32), atol=1e-5)
    # Row k is the k-th cosine; row 0 is constant 1/sqrt(n).
    assert torch.allclose(d[0], torch.full((32,), 32**-0.5), atol=1e-6)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(block_idct(block_dct(x, 8), 8), x, atol=1e-5)
    assert torch.allclose(block_dct(x, 32), d @ x @ d.T, atol=1e-5)
    # A block DCT treats every block separately: it equals the full DCT of each 16x16 block.
    d16 = dct_matrix(16)
    assert torch.allclose(
        block_dct(x, 16)[..., 16:, :16], d16 @ x[..., 16:, :16] @ d16.T, atol=1e-5
    )


def test_colour_conversion_matches_opencv_and_inverts():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    ycrcb = rgb_to_ycrcb(red).flatten() * 255
    assert torch.allclose(
        ycrcb,
        torch.tensor([76.245, 0.713 * (255 - 76.245) + 128, 0.564 * -76.245 + 128]),
        atol=1e-3,
    )
    x = _mid_float(2, 8)
    assert torch.allclose(ycrcb_to_rgb(rgb_to_ycrcb(x)), x, atol=1e-5)


def test_float_chroma_dct_has_energy_only_at_the_chosen_frequencies():
    images = _mid_float()
    # defaults: magnitude 60, (15, 15) and (31, 31), Cr and Cb, window 32
    out = frequency_trigger(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    difference = block_dct(rgb_to_ycrcb(out) - rgb_to_ycrcb(images), 32) * 255
    spikes = 60 * _spike_map(32, 32, [(15, 15), (31, 31)])
    assert torch.allclose(difference[:, 1], spikes.expand(3, -1, -1), atol=2e-3)
    assert torch.allclose(difference[:, 2], spikes.expand(3, -1, -1), atol=2e-3)
    assert float(difference[:, 0].abs().max()) < 2e-3  # luminance untouched
    assert float((out - images).abs().max()) > 1 / 255  # but the image did change


def test_blockwise_window_puts_the_spikes_in_every_block():
    images = _mid_float(2, 32, seed=3)
    out = frequency_trigger(
        images, magnitude=20, positions=((3, 5),), channels=(2,), window_size=16
    )
    difference = block_dct(rgb_to_ycrcb(out) - rgb_to_ycrcb(images), 16) * 255
    assert torch.allclose(
        difference[:, 2], 20 * _spike_map(32, 16, [(3, 5)]).expand(2, -1, -1), atol=2e-3
    )
    assert float(difference[:, :2].abs().max()) < 2e-3


def test_rgb_mode_adds_in_rgb_directly():
    images = _mid_float(1, 8, seed=4)
    out = frequency_trigger(
        images, magnitude=5, positions=((7, 7),), channels=(0,), window_size=8, yuv=False
    )
    difference = block_dct(out - images, 8) * 255
    assert torch.allclose(difference[:, 0], 5 * _spike_map(8, 8, [(7, 7)]).unsqueeze(0), atol=2e-3)
    assert float(difference[:, 1:].abs().max()) < 2e-3


def test_uint8_luminance_unchanged_up_to_rounding_and_deterministic():
    g = torch.Generator().manual_seed(5)
    images = torch.randint(20, 236, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    before = images.clone()
    attack = FTrojan()
    out = attack.apply(images, {}, torch.Generator())
    assert out.dtype == torch.uint8 and out.shape == images.shape
    luminance = rgb_to_ycrcb(out.float() / 255)[:, 0] - rgb_to_ycrcb(images.float() / 255)[:, 0]
    assert float(luminance.abs().max()) * 255 <= 0.5 + 1e-3  # only the RGB rounding shows in Y
    assert bool((out != images).any())
    # Same as the float trigger, rounded.
    assert (
        int((out.float() - (frequency_trigger(images.float() / 255) * 255).round()).abs().max())
        == 0
    )
    assert torch.equal(out, attack.apply(images, {}, torch.Generator()))
    assert torch.equal(images, before)
    assert not FTrojan.clean_label and FTrojan.supports_all_to_all and FTrojan.cover_ratio == 0
    assert (
        attack.magnitude == 60.0
        and attack.positions == ((15, 15), (31, 31))
        and attack.channels == (1, 2)
    )


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"magnitude": "30"}, "magnitude"),
        ({"window_size": 0}, "window_size"),
        ({"positions": [[15, 32]]}, "positions"),
        ({"positions": 3}, "positions"),
        ({"positions": [[4, 4]], "window_size": 4}, "positions"),
        ({"channels": [3]}, "channels"),
        ({"channels": []}, "channels"),
        ({"yuv": "yes"}, "yuv"),
    ],
)
def test_bad_parameters(kwargs, param):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        FTrojan(**kwargs)


def test_window_must_divide_the_image():
    with pytest.raises(ValueError, match=r"^attack\.trigger\.window_size"):
        FTrojan(window_size=12, positions=[[1, 1]]).apply(
            torch.zeros(1, 3, 32, 32, dtype=torch.uint8), {}, torch.Generator()
        )
