"""TrojanNN: only pixels inside the mask change, the selected neurons are the best-connected ones,
and the optimised pattern excites them more than random patterns do on the same surrogate."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.trojannn import (
    TrojanNN,
    corner_mask,
    penultimate_features,
    select_neurons,
    stamp_masked,
)
from cgd_kedro.models.classifier import build_classifier

H = W = 16
SMALL = {"patch_size": 4, "neuron_epoch": 60, "neuron_num": 2}


def _surrogate(seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier("compact_cnn", 4, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).eval()


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g, dtype=torch.uint8)


def _context(surrogate, seed=0):
    images = _images(8)
    return AttackContext(
        train_set={"images": images, "labels": torch.arange(8) % 4},
        num_classes=4,
        target=0,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        surrogate=surrogate,
    )


@pytest.fixture(scope="module")
def prepared():
    surrogate = _surrogate()
    attack = TrojanNN(**SMALL)
    return attack, attack.prepare(_context(surrogate)), surrogate


def test_class_attributes():
    assert TrojanNN.name == "trojannn"
    assert TrojanNN.needs_surrogate and not TrojanNN.clean_label
    assert TrojanNN.supports_all_to_all and TrojanNN.cover_ratio == 0.0


def test_state_shapes(prepared):
    _, state, _ = prepared
    mask = state["mask"]
    assert (
        mask.shape == (1, H, W) and int(mask.sum()) == 16 and bool((mask[:, -4:, -4:] == 1).all())
    )
    pattern = state["pattern"]
    assert pattern.shape == (3, H, W) and pattern.dtype == torch.float32
    assert float(pattern.min()) >= 0 and float(pattern.max()) <= 1
    assert bool((pattern[:, mask[0] == 0] == 0).all())
    assert state["neurons"].dtype == torch.int64 and state["neurons"].shape == (2,)


def test_only_pixels_inside_the_mask_change(prepared):
    attack, state, _ = prepared
    inside = state["mask"][0] > 0
    images = _images()
    out = attack.apply(images, state, torch.Generator(), "train")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out[:, :, ~inside], images[:, :, ~inside])
    expected = (state["pattern"][:, inside] * 255).round().to(torch.uint8)
    assert bool((out[:, :, inside] == expected).all())

    x = images.float() / 255
    out_f = attack.apply(x, state, torch.Generator(), "test")
    assert out_f.dtype == torch.float32
    assert torch.equal(out_f[:, :, ~inside], x[:, :, ~inside])
    assert bool((out_f[:, :, inside] == state["pattern"][:, inside]).all())


def test_stamp_masked_generic_mask():
    mask = torch.zeros(1, 8, 8)
    mask[0, 2, 5] = 1
    images = torch.full((2, 3, 8, 8), 7, dtype=torch.uint8)
    out = stamp_masked(images, torch.ones(3, 8, 8), mask)
    assert int((out != images).sum()) == 2 * 3 and bool((out[:, :, 2, 5] == 255).all())


def test_selected_neurons_are_the_best_connected(prepared):
    _, state, surrogate = prepared
    weight = surrogate.net.head.weight.detach().abs().sum(0)
    assert state["neurons"].tolist() == weight.argsort(descending=True)[:2].tolist()
    assert torch.equal(select_neurons(surrogate, 3)[:2], state["neurons"])


def test_optimised_pattern_excites_the_neurons_more_than_random_patterns(prepared):
    _, state, surrogate = prepared
    mask, neurons = state["mask"], state["neurons"]
    g = torch.Generator().manual_seed(11)
    random_patterns = torch.rand(16, 3, H, W, generator=g) * mask

    def excitation(x):
        return penultimate_features(surrogate, x)[:, neurons].abs().sum(1)

    with torch.no_grad():
        optimised = excitation(state["pattern"].unsqueeze(0))
        random = excitation(random_patterns)
        # Also when stamped on images, not only on the black background it was optimised on.
        images = _images(8, seed=2).float() / 255
        on_images = excitation(stamp_masked(images, state["pattern"], mask))
        on_images_random = excitation(stamp_masked(images, random_patterns[0], mask))
    assert float(optimised) > float(random.max())
    assert float(on_images.mean()) > float(on_images_random.mean())


def test_deterministic_and_surrogate_untouched():
    surrogate = _surrogate()
    before = {k: v.clone() for k, v in surrogate.state_dict().items()}
    a = TrojanNN(**SMALL).prepare(_context(surrogate, seed=3))
    b = TrojanNN(**SMALL).prepare(_context(surrogate, seed=3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(before[k], v) for k, v in surrogate.state_dict().items())
    assert all(p.requires_grad for p in surrogate.parameters())


def test_errors():
    with pytest.raises(ValueError, match="surrogate"):
        TrojanNN(**SMALL).prepare(_context(None))
    with pytest.raises(ValueError, match=r"^attack\.trigger\.patch_size"):
        corner_mask(H, W, H + 1)
    with pytest.raises(ValueError, match=r"^attack\.trigger\.neuron_num"):
        select_neurons(_surrogate(), 10_000)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("patch_size", 0),
        ("patch_size", 1.5),
        ("neuron_num", 0),
        ("target_value", -1.0),
        ("neuron_lr", 0),
        ("neuron_epoch", 0),
    ],
)
def test_bad_trigger_parameters(param, value):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        TrojanNN(**{param: value})
