"""LC (label-consistent): clean-label, exact four-corner pattern, PGD bounded by eps and increasing
the surrogate's loss on the true (target) label; test images only get the corners."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.lc import (
    LabelConsistent,
    corner_pattern,
    pack_surrogate,
    stamp_corners,
    unpack_surrogate,
)
from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set
from cgd_kedro.models.classifier import build_classifier

H = W = 16
TARGET = 2


def _surrogate(seed: int = 0):
    torch.manual_seed(seed)
    model = build_classifier("compact_cnn", 4, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    return model.eval()


def _images(n=6, seed=0, low=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, H, W), generator=g, dtype=torch.uint8)


def _context(images, labels, surrogate):
    return AttackContext(
        train_set={"images": images, "labels": labels},
        num_classes=4,
        target=TARGET,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        surrogate=surrogate,
    )


def _corner_mask():
    mask = torch.zeros(H, W, dtype=torch.bool)
    for rows in (slice(0, 3), slice(H - 3, H)):
        for cols in (slice(0, 3), slice(W - 3, W)):
            mask[rows, cols] = True
    return mask


@pytest.fixture(scope="module")
def prepared():
    surrogate = _surrogate()
    attack = LabelConsistent()
    images = _images(8)
    state = attack.prepare(_context(images, torch.full((8,), TARGET), surrogate))
    return attack, state, surrogate


def test_class_attributes():
    assert LabelConsistent.name == "lc"
    assert LabelConsistent.clean_label and LabelConsistent.needs_surrogate
    assert not LabelConsistent.supports_all_to_all
    assert LabelConsistent.cover_ratio == 0.0


def test_corner_pattern_is_the_reference_layout():
    sign = corner_pattern(H, W)
    left = torch.tensor([[1, -1, -1], [-1, 1, -1], [1, -1, 1]], dtype=torch.float32)
    assert torch.equal(sign[:3, :3], left) and torch.equal(sign[-3:, :3], left)
    assert torch.equal(sign[:3, -3:], left.flip(-1)) and torch.equal(sign[-3:, -3:], left.flip(-1))
    assert int((sign != 0).sum()) == 36 and bool((sign[~_corner_mask()] == 0).all())


def test_stamp_corners_exact_for_uint8_and_float():
    images = _images()
    sign = corner_pattern(H, W)
    mask = _corner_mask()
    expected = torch.where(sign > 0, 255, 0).to(torch.uint8)
    out = stamp_corners(images)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert bool((out[:, :, mask] == expected[mask]).all())
    assert torch.equal(out[:, :, ~mask], images[:, :, ~mask])

    x = images.float() / 255
    out_f = stamp_corners(x)
    assert out_f.dtype == torch.float32
    assert bool((out_f[:, :, mask] == (sign[mask] > 0).float()).all())
    assert torch.equal(out_f[:, :, ~mask], x[:, :, ~mask])

    half = stamp_corners(torch.full((1, 3, H, W), 100, dtype=torch.uint8), amplitude=0.2)
    assert bool((half[:, :, sign > 0] == 151).all()) and bool((half[:, :, sign < 0] == 49).all())


def test_prepare_requires_a_classifier_surrogate():
    images = _images(2)
    with pytest.raises(ValueError, match="surrogate"):
        LabelConsistent().prepare(_context(images, torch.full((2,), TARGET), None))
    with pytest.raises(ValueError, match=r"attack\.surrogate"):
        LabelConsistent().prepare(_context(images, torch.full((2,), TARGET), nn.Linear(3, 4)))


def test_state_is_tensors_and_rebuilds_the_surrogate(prepared):
    _, state, surrogate = prepared
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert int(state["target"][0]) == TARGET
    rebuilt = unpack_surrogate(state, torch.device("cpu"))
    x = _images(3, seed=5).float() / 255
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), surrogate(x), atol=1e-6)
    assert not any(p.requires_grad for p in rebuilt.parameters())


def test_state_survives_safetensors(prepared, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    attack, state, _ = prepared
    safetensors.save_file(state, tmp_path / "state.safetensors")
    loaded = safetensors.load_file(tmp_path / "state.safetensors")
    images = _images(3, seed=6)
    g = torch.Generator()
    assert torch.equal(attack.apply(images, loaded, g), attack.apply(images, state, g))


def test_train_phase_is_bounded_pgd_plus_exact_corners(prepared):
    attack, state, _surrogate = prepared
    images = _images(6, seed=1)
    out = attack.apply(images, state, torch.Generator().manual_seed(0), "train")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    mask = _corner_mask()
    expected = torch.where(corner_pattern(H, W) > 0, 255, 0).to(torch.uint8)
    assert bool((out[:, :, mask] == expected[mask]).all())
    delta = (out.int() - images.int())[:, :, ~mask].abs()
    assert int(delta.max()) <= 16  # eps = 16 on the 0-255 scale, exact after rounding
    assert int((delta > 0).sum()) > delta.numel() // 2  # the perturbation is really there

    x = images.float() / 255
    out_f = attack.apply(x, state, torch.Generator(), "train")
    assert out_f.dtype == torch.float32
    assert float((out_f - x)[:, :, ~mask].abs().max()) <= 16 / 255 + 1e-6
    assert bool((out_f[:, :, mask] == (corner_pattern(H, W)[mask] > 0).float()).all())


def test_pgd_increases_the_surrogate_loss_on_the_true_label(prepared):
    _, state, surrogate = prepared
    pgd_only = LabelConsistent(amplitude=0.0)  # no corners: the adversarial part alone
    x = _images(8, seed=2).float() / 255
    adv = pgd_only.apply(x, state, torch.Generator(), "train")
    labels = torch.full((8,), TARGET)
    # A random-sign perturbation of the same size, for scale.
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(9)).float() * 2 - 1
    noisy = (x + 16 / 255 * signs).clamp(0, 1)
    with torch.no_grad():
        before = F.cross_entropy(surrogate(x), labels, reduction="none")
        after = F.cross_entropy(surrogate(adv), labels, reduction="none")
        random = F.cross_entropy(surrogate(noisy), labels, reduction="none")
    assert bool((after > before).all())
    assert float((after - before).mean()) > 5 * abs(float((random - before).mean()))


def test_test_phase_is_corners_only(prepared):
    attack, state, _ = prepared
    images = _images(4, seed=3)
    assert torch.equal(
        attack.apply(images, state, torch.Generator(), "test"), stamp_corners(images)
    )
    # The test phase needs no surrogate at all.
    assert torch.equal(attack.apply(images, {}, torch.Generator(), "test"), stamp_corners(images))
    with pytest.raises(ValueError, match="phase"):
        attack.apply(images, state, torch.Generator(), "eval")


def test_deterministic(prepared):
    attack, state, _ = prepared
    images = _images(4, seed=4)
    a = attack.apply(images, state, torch.Generator().manual_seed(3), "train")
    b = attack.apply(images, state, torch.Generator().manual_seed(3), "train")
    assert torch.equal(a, b)
    other = LabelConsistent().prepare(_context(images, torch.full((4,), TARGET), _surrogate()))
    assert torch.equal(attack.apply(images, other, torch.Generator(), "train"), a)


def test_poisoning_keeps_every_label(prepared):
    attack, state, _ = prepared
    labels = torch.arange(20) % 4
    train_set = {"images": _images(20, seed=7), "labels": labels}
    config = AttackConfig(name="lc", target=TARGET, ratio=0.2)
    poisoned = poison_training_set(
        train_set, attack, state, config, 4, torch.Generator().manual_seed(0)
    )
    assert torch.equal(poisoned["labels"], labels)
    assert int(poisoned["poison"].sum()) == 4 and bool((labels[poisoned["poison"]] == TARGET).all())
    assert torch.equal(
        poisoned["images"][~poisoned["poison"]], train_set["images"][~poisoned["poison"]]
    )
    assert not bool(poisoned["cover"].any())
    backdoor = make_backdoor_test_set(train_set, attack, state, config, 4, torch.Generator())
    assert bool((backdoor["original_labels"] != TARGET).all()) and bool(
        (backdoor["labels"] == TARGET).all()
    )
    assert torch.equal(backdoor["images"], stamp_corners(train_set["images"][labels != TARGET]))


def test_pack_rejects_unknown_architectures():
    class Odd(nn.Module):
        def forward(self, x):
            return x

    model = _surrogate()
    model.net = Odd()
    with pytest.raises(ValueError, match=r"attack\.surrogate: .*no registered architecture"):
        pack_surrogate(model, 4)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("eps", -1),
        ("eps", 300),
        ("step_size", -0.5),
        ("steps", 2.5),
        ("steps", -1),
        ("amplitude", 1.5),
        ("amplitude", "1"),
    ],
)
def test_bad_trigger_parameters(param, value):
    with pytest.raises(ValueError, match=rf"^attack\.trigger\.{param}"):
        LabelConsistent(**{param: value})
