"""BPP: at most `squeeze_num` levels per channel, Floyd-Steinberg exactly as the sequential
reference, and residual-noise cover samples that differ from the poisoned images."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.bpp import BPP, add_residuals, floyd_steinberg, squeeze_colour_depth


def _images(n=4, size=16, seed=0):
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def _reference_dither(plane, levels):
    """Textbook scalar Floyd-Steinberg on one H x W list-of-lists plane in [0, 1]."""
    h, w = len(plane), len(plane[0])
    work = [row[:] for row in plane]
    for y in range(h):
        for x in range(w):
            old = work[y][x]
            new = min(max(round(old * (levels - 1)), 0), levels - 1) / (levels - 1)
            err = old - new
            work[y][x] = new
            if x + 1 < w:
                work[y][x + 1] += err * 7 / 16
            if y + 1 < h:
                if x > 0:
                    work[y + 1][x - 1] += err * 3 / 16
                work[y + 1][x] += err * 5 / 16
                if x + 1 < w:
                    work[y + 1][x + 1] += err * 1 / 16
    return work


@pytest.mark.parametrize("squeeze_num", [2, 4, 8])
def test_uint8_output_has_at_most_squeeze_num_levels_per_channel(squeeze_num):
    images = _images()
    out = squeeze_colour_depth(images, squeeze_num=squeeze_num)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    allowed = {round(k * 255 / (squeeze_num - 1)) for k in range(squeeze_num)}
    for channel in range(3):
        values = set(out[:, channel].unique().tolist())
        assert values <= allowed and len(values) <= squeeze_num
    assert bool((out != images).any())


def test_float_output_levels_and_no_dithering_is_rounding():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    dithered = squeeze_colour_depth(x, squeeze_num=8)
    assert dithered.dtype == torch.float32
    assert torch.allclose(dithered * 7, (dithered * 7).round(), atol=1e-5)
    plain = squeeze_colour_depth(x, squeeze_num=8, dithering=False)
    assert torch.allclose(plain, (x * 7).round() / 7, atol=1e-6)
    assert not torch.allclose(plain, dithered)


def test_dithering_matches_the_sequential_reference_exactly():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = floyd_steinberg(x, 4)
    for n in range(2):
        for c in range(3):
            expected = torch.tensor(_reference_dither(x[n, c].tolist(), 4), dtype=torch.float64)
            assert torch.allclose(out[n, c], expected, atol=1e-12)


def test_dithering_preserves_mean_brightness():
    grey = torch.full((1, 3, 32, 32), 0.5)
    # 0.5 rounds to even
    assert float(squeeze_colour_depth(grey, squeeze_num=2, dithering=False).mean()) == 0.0
    assert abs(float(squeeze_colour_depth(grey, squeeze_num=2).mean()) - 0.5) < 0.02


def test_chunked_cpu_path_equals_single_pass():
    images = _images(n=300, size=8, seed=3)  # more than one CPU chunk
    out = squeeze_colour_depth(images)
    for part in (slice(0, 5), slice(295, 300)):
        assert torch.equal(out[part], squeeze_colour_depth(images[part]))
    assert squeeze_colour_depth(images[:0]).shape == (0, 3, 8, 8)


def test_prepare_cover_and_determinism():
    images = _images(n=30, size=8, seed=4)
    train = {"images": images, "labels": torch.zeros(30, dtype=torch.long)}
    attack = BPP(n_residuals=10)
    assert not BPP.clean_label and attack.cover_ratio == 2.0 and BPP.supports_all_to_all
    state = attack.prepare(
        AttackContext(train, 10, 0, torch.device("cpu"), torch.Generator().manual_seed(0))
    )
    again = attack.prepare(
        AttackContext(train, 10, 0, torch.device("cpu"), torch.Generator().manual_seed(0))
    )
    residuals = state["residuals"]
    assert residuals.shape == (10, 3, 8, 8) and torch.equal(residuals, again["residuals"])
    # Each residual is squeeze(x) - x of one training image.
    squeezed_all = squeeze_colour_depth(images).float() / 255 - images.float() / 255
    assert all(any(torch.allclose(r, s, atol=1e-6) for s in squeezed_all) for r in residuals)

    x = images[:6]
    poisoned = attack.apply(x, state, torch.Generator())
    cover = attack.cover(x, state, torch.Generator().manual_seed(1))
    assert cover.dtype == torch.uint8 and cover.shape == x.shape
    assert bool((cover != poisoned).flatten(1).any(1).all()) and bool(
        (cover != x).flatten(1).any(1).all()
    )
    assert torch.equal(cover, attack.cover(x, state, torch.Generator().manual_seed(1)))
    # With a one-residual bank the cover is exactly clip(x + r).
    one = residuals[:1]
    expected = (x.float() / 255 + one).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(add_residuals(x, one, torch.Generator()), expected)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"squeeze_num": 1}, "squeeze_num"),
        ({"squeeze_num": 8.0}, "squeeze_num"),
        ({"dithering": 1}, "dithering"),
        ({"cover_ratio": -1}, "cover_ratio"),
        ({"n_residuals": 0}, "n_residuals"),
    ],
)
def test_bad_parameters(kwargs, param):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        BPP(**kwargs)
