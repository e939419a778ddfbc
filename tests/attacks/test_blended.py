"""Blended: every poisoned image is the convex combination (1 - alpha) x + alpha K."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.attacks.blended import Blended, blend, load_pattern, noise_pattern
from cgd_kedro.attacks.poisoning import AttackConfig, make_backdoor_test_set, poison_training_set


def test_uint8_blend_is_the_rounded_convex_combination_in_chunks():
    g = torch.Generator().manual_seed(0)
    # more than one chunk
    images = torch.randint(0, 256, (1100, 3, 8, 8), generator=g, dtype=torch.uint8)
    pattern = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
    out = blend(images, pattern, alpha=0.2)
    exact = 0.8 * images.double() + 0.2 * pattern.double()
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert float((out.double() - exact).abs().max()) <= 0.5 + 1e-6
    assert torch.equal(blend(images, pattern, alpha=0.0), images)
    assert torch.equal(blend(images, pattern, alpha=1.0), pattern.expand_as(images))
    # Batched equals one image at a time.
    assert torch.equal(out[5:6], blend(images[5:6], pattern, alpha=0.2))


def test_float_blend_is_exact():
    images, pattern = torch.rand(4, 3, 8, 8), torch.rand(3, 8, 8)
    out = blend(images, pattern, alpha=0.3)
    assert out.dtype == torch.float32 and torch.allclose(
        out, 0.7 * images + 0.3 * pattern, atol=1e-6
    )
    with pytest.raises(ValueError, match=r"attack\.trigger\.alpha"):
        blend(images, pattern, alpha=1.5)


def test_pattern_is_seeded_noise_or_the_users_image(tmp_path):
    a, b = (
        noise_pattern(8, torch.Generator().manual_seed(3)),
        noise_pattern(8, torch.Generator().manual_seed(3)),
    )
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == (3, 8, 8)
    Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / "k.png")
    loaded = load_pattern(tmp_path / "k.png", 8)
    assert loaded.shape == (3, 8, 8) and loaded[:, 0, 0].tolist() == [10, 200, 30]
    with pytest.raises(FileNotFoundError, match=r"attack\.trigger\.image_path"):
        Blended(image_path=str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_pattern(tmp_path / "bad.png", 8)


def test_poisoning_changes_ratio_images_to_the_blend_and_relabels_them():
    g = torch.Generator().manual_seed(1)
    train = {
        "images": torch.randint(0, 256, (100, 3, 8, 8), generator=g, dtype=torch.uint8),
        "labels": torch.arange(100) % 10,
    }
    config = AttackConfig.from_params({"name": "blended", "target": 0, "ratio": 0.1}, 10)
    attack = config.build()
    state = attack.prepare(
        AttackContext(
            train_set=train, num_classes=10, target=0, device=torch.device("cpu"), generator=g
        )
    )
    poisoned = poison_training_set(
        train, attack, state, config, 10, torch.Generator().manual_seed(0)
    )
    flags = poisoned["poison"]
    assert int(flags.sum()) == 10 and bool((poisoned["labels"][flags] == 0).all())
    assert torch.equal(
        poisoned["images"][flags], blend(train["images"][flags], state["pattern"], alpha=0.2)
    )
    assert torch.equal(poisoned["images"][~flags], train["images"][~flags])
    test = make_backdoor_test_set(
        train, attack, state, config, 10, torch.Generator().manual_seed(0)
    )
    assert test["labels"].shape[0] == 90 and bool((test["labels"] == 0).all())
