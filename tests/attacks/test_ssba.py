"""SSBA: a learnt encoder hides a fixed code as a small, image-specific, bounded residual."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.base import ATTACK_REGISTRY, AttackContext
from cgd_kedro.attacks.ssba import (
    SSBA,
    StegaEncoder,
    encode,
    encoder_from_state,
    encoder_state,
    train_stegastamp,
)
from cgd_kedro.data.world import generate_world

CPU = torch.device("cpu")
# Small enough for a CPU test: 8-bit code, width 8, 16x16 images; residual bound and fidelity
# weight are the attack's defaults (16/255, 0.05).
TINY = {"code_bits": 8, "width": 8, "batch_size": 32}


@pytest.fixture(scope="module")
def world():
    train, test, _, _ = generate_world(seed=0, n_train=256, n_test=64, n_captions=0, image_size=16)
    return train, test


@pytest.fixture(scope="module")
def trained(world):
    """Encoder and decoder after 300 steps on 256 tiny images (a few seconds on a CPU): long enough
    for the fidelity loss to ramp in, which is what shrinks the residual
    and makes it image-specific."""
    train, _ = world
    return train_stegastamp(train["images"], steps=300, seed=0, **TINY)


def _context(train, seed=0):
    return AttackContext(
        train_set=train,
        num_classes=10,
        target=0,
        device=CPU,
        generator=torch.Generator().manual_seed(seed),
    )


def _random_encoder(code_bits=8, width=8, seed=0, scale=1.0):
    torch.manual_seed(seed)
    encoder = StegaEncoder(code_bits, width)
    with torch.no_grad():
        encoder.out.weight.mul_(scale)
    return encoder.eval()


def test_registered():
    assert ATTACK_REGISTRY["ssba"] is SSBA
    assert not SSBA.clean_label and not SSBA.needs_surrogate and SSBA.supports_all_to_all
    assert SSBA.cover_ratio == 0.0


def test_decoder_recovers_the_fixed_code_after_short_training(world, trained):
    _, test = world
    encoder, decoder, metrics = trained
    assert metrics["bit_acc"] >= 0.9  # on the last (random-code) training batch
    code = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.uint8)
    encoded = encode(test["images"], encoder, code)
    with torch.no_grad():
        bits = (decoder(encoded.float() / 255) > 0).to(torch.uint8)
        clean_bits = (decoder(test["images"].float() / 255) > 0).to(torch.uint8)
    bit_acc = (bits == code).float().mean().item()
    assert bit_acc >= 0.9  # unseen images, the attack's fixed code
    # Most images decode to the whole code; clean images do not carry it.
    assert (bits == code).all(1).float().mean().item() >= 0.6
    assert (clean_bits == code).all(1).float().mean().item() <= 0.2


def test_residual_is_small_bounded_and_image_specific(world, trained):
    _, test = world
    encoder, _, _ = trained
    code = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    images = test["images"]
    residual = encode(images, encoder, code).float() - images.float()
    assert residual.abs().max().item() <= 16.0
    assert 1.0 <= residual.abs().mean().item() <= 8.0  # a few /255 on average
    # Every image gets its own residual: the part not shared by all images is a large share.
    shared = residual.mean(0, keepdim=True)
    specific = (residual - shared).pow(2).mean().sqrt() / residual.pow(2).mean().sqrt()
    assert specific.item() >= 0.2
    pairwise = (residual[0] - residual[1]).abs().mean() / residual[:2].abs().mean()
    assert pairwise.item() >= 0.35
    # ... yet the same image always gets the same residual.
    again = encode(images[:2], encoder, code).float() - images[:2].float()
    assert torch.equal(again, residual[:2])


def test_bound_is_exact_for_a_saturated_encoder():
    g = torch.Generator().manual_seed(1)
    # far from 0 and 255
    images = torch.randint(20, 236, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    encoder = _random_encoder(scale=1000.0)  # tanh saturates: |residual| -> max_residual
    out = encode(images, encoder, torch.ones(8), max_residual=5.0)
    diff = (out.int() - images.int()).abs()
    assert diff.max().item() == 5 and diff.float().mean().item() > 4.5
    assert encode(images, encoder, torch.ones(8), max_residual=0.0).equal(images)


def test_uint8_and_float_shapes_dtypes_and_input_untouched():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    before = images.clone()
    encoder = _random_encoder(scale=10.0)
    code = torch.tensor([0, 1] * 4)
    out = encode(images, encoder, code, max_residual=8.0)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(images, before)
    out_f = encode(images.float() / 255, encoder, code, max_residual=8.0)
    assert out_f.dtype == torch.float32 and out_f.shape == images.shape
    assert out_f.min().item() >= 0 and out_f.max().item() <= 1
    assert ((out_f - images.float() / 255).abs().max() * 255).item() <= 8.0 + 1e-4
    assert (out_f * 255 - out.float()).abs().max().item() <= 0.5 + 1e-3
    # Batching does not change the result.
    assert torch.allclose(
        encode(images.float() / 255, encoder, code, max_residual=8.0, batch_size=2),
        out_f,
        atol=1e-6,
    )
    # Non-square images of another size work too.
    odd = torch.randint(0, 256, (2, 3, 20, 28), generator=g, dtype=torch.uint8)
    assert encode(odd, encoder, code).shape == odd.shape


def test_state_round_trip_rebuilds_identical_encoder():
    encoder = _random_encoder(seed=3, scale=5.0)
    state = encoder_state(encoder)
    assert all(k.startswith("encoder.") and isinstance(v, torch.Tensor) for k, v in state.items())
    rebuilt = encoder_from_state(state)
    images = torch.randint(
        0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(4), dtype=torch.uint8
    )
    code = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0])
    assert torch.equal(encode(images, rebuilt, code), encode(images, encoder, code))
    with pytest.raises(ValueError, match="ssba state"):
        encoder_from_state({})


def test_prepare_apply_deterministic_and_state_round_trip(world):
    train, test = world
    attack = SSBA(code_bits=8, width=8, batch_size=16, train_steps=20, train_images=64)
    state = attack.prepare(_context(train, seed=5))
    again = attack.prepare(_context(train, seed=5))
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    assert state["code"].dtype == torch.uint8 and state["code"].shape == (8,)
    assert set(state["code"].tolist()) <= {0, 1}
    assert all(k == "code" or k.startswith("encoder.") for k in state)
    other = attack.prepare(_context(train, seed=6))
    assert not all(torch.equal(state[k], other[k]) for k in state)

    images = test["images"][:6]
    out = attack.apply(images, state, torch.Generator().manual_seed(0), "train")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    # apply ignores the generator and the phase; a copied state gives identical outputs.
    copied = {k: v.clone() for k, v in state.items()}
    assert torch.equal(attack.apply(images, copied, torch.Generator().manual_seed(9), "test"), out)
    assert torch.equal(
        out, encode(images, encoder_from_state(state), state["code"], max_residual=16.0)
    )
    assert (out.int() - images.int()).abs().max().item() <= 16
    out_f = attack.apply(images.float() / 255, state, torch.Generator())
    assert out_f.dtype == torch.float32
    with pytest.raises(ValueError, match="ssba state"):
        attack.apply(images, {}, torch.Generator())


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("code_bits", 0),
        ("code_bits", 2.5),
        ("max_residual", -1.0),
        ("max_residual", 300),
        ("fidelity_weight", -0.1),
        ("width", 0),
        ("train_images", 0),
        ("train_steps", 0),
        ("batch_size", 0),
        ("lr", 0.0),
    ],
)
def test_bad_trigger_parameters(param, value):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        SSBA(**{param: value})
