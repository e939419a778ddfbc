"""LF (low frequency): P has no DCT energy outside the low-frequency window, |P| <= eps, and apply
adds exactly P before clipping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.lf import LowFrequency, add_perturbation, dct2, dct_matrix, low_pass
from cgd_kedro.models.classifier import build_classifier

H = W = 16
TARGET = 1
SMALL = {"steps": 15, "batch_size": 8, "n_images": 24, "window": 4, "eps": 20.0}


def _surrogate(seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier("compact_cnn", 4, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).eval()


def _images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g, dtype=torch.uint8)


def _context(surrogate, seed=0, images=None):
    images = _images() if images is None else images
    return AttackContext(
        train_set={"images": images, "labels": torch.arange(images.shape[0]) % 4},
        num_classes=4,
        target=TARGET,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        surrogate=surrogate,
    )


@pytest.fixture(scope="module")
def prepared():
    surrogate = _surrogate()
    attack = LowFrequency(**SMALL)
    return attack, attack.prepare(_context(surrogate)), surrogate


def test_class_attributes():
    assert LowFrequency.name == "lf"
    assert LowFrequency.needs_surrogate and not LowFrequency.clean_label
    assert not LowFrequency.supports_all_to_all and LowFrequency.cover_ratio == 0.0


def test_dct_matrix_is_orthonormal_and_low_pass_is_a_projection():
    d = dct_matrix(H)
    assert torch.allclose(d @ d.T, torch.eye(H), atol=1e-5)
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    once = low_pass(x, 4)
    assert torch.allclose(low_pass(once, 4), once, atol=1e-5)
    spectrum = dct2(once)
    outside = torch.ones(H, W, dtype=torch.bool)
    outside[:4, :4] = False
    assert float(spectrum[..., outside].abs().max()) < 1e-5
    assert torch.allclose(spectrum[..., :4, :4], dct2(x)[..., :4, :4], atol=1e-5)


def test_perturbation_is_low_frequency_and_bounded(prepared):
    _, state, _ = prepared
    p = state["perturbation"]
    assert p.shape == (3, H, W) and p.dtype == torch.float32
    assert float(p.abs().max()) <= 20 / 255 + 1e-7
    assert float(p.abs().max()) > 0
    spectrum = dct2(p)
    window = SMALL["window"]
    inside = spectrum[:, :window, :window]
    outside_energy = float(spectrum.pow(2).sum() - inside.pow(2).sum())
    assert outside_energy < 1e-10 * max(float(inside.pow(2).sum()), 1e-12) + 1e-12
    assert float(spectrum[:, window:, :].abs().max()) < 1e-6
    assert float(spectrum[:, :, window:].abs().max()) < 1e-6


def test_perturbation_lowers_the_surrogate_loss_towards_the_target(prepared):
    _, state, surrogate = prepared
    x = _images(24, seed=3).float() / 255
    labels = torch.full((24,), TARGET)
    with torch.no_grad():
        before = F.cross_entropy(surrogate(x), labels)
        after = F.cross_entropy(surrogate(add_perturbation(x, state["perturbation"])), labels)
    assert float(after) < float(before)


def test_apply_adds_exactly_p(prepared):
    attack, state, _ = prepared
    p = state["perturbation"]
    # Values away from 0 and 1 so that nothing clips: the output is exactly x + P.
    x = 0.25 + 0.5 * torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(2))
    out = attack.apply(x, state, torch.Generator(), "train")
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, x + p.unsqueeze(0))
    assert torch.equal(attack.apply(x, state, torch.Generator(), "test"), out)
    # Clipping at the borders of [0, 1].
    black = attack.apply(torch.zeros(1, 3, H, W), state, torch.Generator())
    assert torch.equal(black, p.clamp(min=0).unsqueeze(0))

    images = _images(4, seed=4)
    out8 = attack.apply(images, state, torch.Generator())
    assert out8.dtype == torch.uint8 and out8.shape == images.shape
    expected = ((images.float() / 255 + p).clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(out8, expected)
    assert int((out8.int() - images.int()).abs().max()) <= 20


def test_deterministic_with_the_same_seed():
    surrogate = _surrogate()
    a = LowFrequency(**SMALL).prepare(_context(surrogate, seed=5))["perturbation"]
    b = LowFrequency(**SMALL).prepare(_context(surrogate, seed=5))["perturbation"]
    c = LowFrequency(**SMALL).prepare(_context(surrogate, seed=6))["perturbation"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The surrogate is left as it was (no gradients switched off for the caller).
    assert all(p.requires_grad for p in surrogate.parameters())


def test_prepare_errors():
    with pytest.raises(ValueError, match="surrogate"):
        LowFrequency(**SMALL).prepare(_context(None))
    with pytest.raises(ValueError, match=r"^attack\.trigger\.window"):
        LowFrequency(**{**SMALL, "window": H + 1}).prepare(_context(_surrogate()))
    with pytest.raises(ValueError, match="does not fit"):
        add_perturbation(_images(1), torch.zeros(3, 8, 8))


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("eps", -1.0),
        ("eps", 256),
        ("window", 0),
        ("window", 2.0),
        ("steps", 0),
        ("batch_size", 0),
        ("lr", 0),
        ("n_images", 0),
    ],
)
def test_bad_trigger_parameters(param, value):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        LowFrequency(**{param: value})
