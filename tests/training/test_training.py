"""Augmentation ops, the training loop (learning + bit-for-bit reproducibility) and its config."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.runtime import seed_everything
from cgd_kedro.training.augment import crop_and_flip, random_crop, random_horizontal_flip
from cgd_kedro.training.classifier import TrainingConfig, lr_factor, to_unit_float, train_classifier

# --- augmentation ---------------------------------------------------------------------------------


def _images(n=16, c=3, h=8, w=10, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # no zeros: padding is visible
    return torch.randint(1, 256, (n, c, h, w), generator=g).to(dtype)


def test_random_crop_padding_zero_is_identity():
    images = _images()
    out = random_crop(images, 0, torch.Generator().manual_seed(0))
    assert torch.equal(out, images)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("padding", [1, 4])
def test_random_crop_is_a_window_of_the_zero_padded_input(padding, dtype):
    images = _images(n=32, dtype=dtype)
    n, _c, h, w = images.shape
    out = random_crop(images, padding, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == dtype
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = set()
    for i in range(n):
        matches = [
            (r, s)
            for r in range(2 * padding + 1)
            for s in range(2 * padding + 1)
            if torch.equal(out[i], padded[i, :, r : r + h, s : s + w])
        ]
        assert matches, f"crop {i} is not a window of the padded image"
        offsets.add(matches[0])
    # Offsets are drawn per image: 32 images do not all share one offset.
    assert len(offsets) > 1
    # With padding p, some crop shows padding zeros (the input has none).
    assert bool((out == 0).any())


def test_random_crop_is_reproducible_with_the_generator():
    images = _images()
    a = random_crop(images, 3, torch.Generator().manual_seed(5))
    b = random_crop(images, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_horizontal_flip_p1_flips_all_and_p0_none():
    images = _images()
    flipped = random_horizontal_flip(images, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(flipped, images.flip(-1))
    assert torch.equal(flipped[..., 0], images[..., -1])
    kept = random_horizontal_flip(images, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(kept, images)


def test_horizontal_flip_half_flips_each_image_whole_or_not_at_all():
    images = _images(n=64)
    out = random_horizontal_flip(images, torch.Generator().manual_seed(2), p=0.5)
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 10 < int(mirrored.sum()) < 54


def test_crop_and_flip_preserves_shape_and_dtype():
    images = _images(n=4, h=32, w=32)
    out = crop_and_flip(images, torch.Generator().manual_seed(0), padding=4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    # padding 0 still flips: each image equals the input or its mirror.
    flipped = crop_and_flip(images, torch.Generator().manual_seed(0), padding=0)
    assert bool(((flipped == images) | (flipped == images.flip(-1))).flatten(1).all(1).all())


def test_to_unit_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.equal(to_unit_float(x), torch.tensor([0.0, 0.2, 1.0]))
    f = torch.tensor([0.25], dtype=torch.float64)
    assert to_unit_float(f).dtype == torch.float32


# --- training -------------------------------------------------------------------------------------


def _half_bright_problem(n=128, size=32, seed=0):
    """Class 0: top half bright; class 1: bottom half bright (invariant to horizontal flips)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 60, (n, 3, size, size), generator=g)
    top = labels == 0
    images[top, :, : size // 2] += 150
    images[~top, :, size // 2 :] += 150
    return images.clamp(0, 255).to(torch.uint8), labels


CONFIG = TrainingConfig(epochs=3, batch_size=32, lr=0.05, augment=True, crop_padding=2)


def _train(seed: int):
    images, labels = _half_bright_problem()
    generator = seed_everything(seed)
    model = build_classifier("compact_cnn", 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    history = train_classifier(
        model,
        images,
        labels,
        CONFIG,
        device=torch.device("cpu"),
        generator=generator,
        description="test",
    )
    return model, history


@pytest.fixture(scope="module")
def two_runs_and_another_seed():
    return _train(0), _train(0), _train(1)


def test_training_learns_a_separable_problem(two_runs_and_another_seed):
    (model, history), _, _ = two_runs_and_another_seed
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "train_acc"}
    assert history[-1]["train_acc"] > 0.9
    assert history[-1]["loss"] < history[0]["loss"]
    assert not model.training  # left in eval mode
    images, labels = _half_bright_problem(n=64, seed=1)  # fresh images
    with torch.no_grad():
        predictions = model(to_unit_float(images)).argmax(1)
    assert float((predictions == labels).float().mean()) > 0.9


def test_same_seed_is_bit_identical_and_other_seed_differs(two_runs_and_another_seed):
    (model_a, history_a), (model_b, history_b), (model_c, _history_c) = two_runs_and_another_seed
    state_a, state_b, state_c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert set(state_a) == set(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert history_a == history_b
    float_keys = [k for k, v in state_a.items() if v.is_floating_point()]
    assert any(not torch.equal(state_a[k], state_c[k]) for k in float_keys)
    assert not torch.equal(state_a["net.head.weight"], state_c["net.head.weight"])


def test_train_classifier_rejects_mismatched_or_empty_input():
    model = build_classifier("compact_cnn", 2, (0.5,) * 3, (0.25,) * 3)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"victim: need as many labels as images"):
        train_classifier(
            model,
            images,
            torch.zeros(3, dtype=torch.int64),
            CONFIG,
            device=torch.device("cpu"),
            generator=torch.Generator(),
            description="victim",
        )
    with pytest.raises(ValueError, match=r"at least one image"):
        train_classifier(
            model,
            images[:0],
            torch.zeros(0, dtype=torch.int64),
            CONFIG,
            device=torch.device("cpu"),
            generator=torch.Generator(),
        )


# --- TrainingConfig -------------------------------------------------------------------------------


def test_training_config_from_params():
    config = TrainingConfig.from_params({"epochs": 2, "lr": 0.1, "augment": False})
    assert (config.epochs, config.lr, config.augment, config.batch_size) == (2, 0.1, False, 128)
    assert config.as_dict()["epochs"] == 2
    assert TrainingConfig.from_params({}) == TrainingConfig()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"epoch": 3}, r"training\.epoch: unknown parameter; did you mean 'epochs'\?"),
        ({"epochs": 0}, r"training\.epochs = 0: must be greater than or equal to 1"),
        ({"epochs": 2.0}, r"training\.epochs"),
        ({"lr": -1}, r"training\.lr = -1: must be greater than 0"),
        ({"lr": 0}, r"training\.lr"),
        ({"batch_size": 0}, r"training\.batch_size"),
        ({"momentum": 1.0}, r"training\.momentum"),
        ({"weight_decay": -1e-4}, r"training\.weight_decay"),
        ({"crop_padding": -1}, r"training\.crop_padding"),
        ({"warmup": 1.0}, r"training\.warmup = 1\.0: must be less than 1"),
        ({"label_smoothing": -0.1}, r"training\.label_smoothing"),
    ],
)
def test_training_config_errors_name_the_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        TrainingConfig.from_params(params)


def test_training_config_section_name_in_unknown_key_error():
    with pytest.raises(ValueError, match=r"^victim\.training\.lr_rate: unknown parameter"):
        TrainingConfig.from_params({"lr_rate": 0.1}, "victim.training")


def test_adam_with_constant_schedule_is_available_and_checked():
    config = TrainingConfig(
        epochs=3, batch_size=32, lr=3e-3, optimizer="adam", schedule="constant", augment=False
    )
    images, labels = _half_bright_problem()
    model = build_classifier("compact_cnn", 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    history = train_classifier(
        model, images, labels, config, device=torch.device("cpu"), generator=seed_everything(0)
    )
    assert history[-1]["train_acc"] > 0.9
    with pytest.raises(
        ValueError, match=r"training\.optimizer = 'rmsprop': must be 'sgd' or 'adam'"
    ):
        TrainingConfig.from_params({"optimizer": "rmsprop"})
    with pytest.raises(
        ValueError, match=r"training\.schedule = 'step': must be 'cosine' or 'constant'"
    ):
        TrainingConfig.from_params({"schedule": "step"})


def test_crop_without_flip_never_mirrors():
    # Columns numbered 0..7: a flip reverses them, a crop only shifts them (with zero fill).
    images = torch.arange(8, dtype=torch.float32).repeat(64, 3, 8, 1) + 1
    cropped = crop_and_flip(images, torch.Generator().manual_seed(0), padding=2, flip=False)
    for image in cropped[:, 0]:
        row = image[image.sum(1).argmax()]  # a row not zeroed by a vertical shift
        nonzero = row[row > 0]
        assert torch.all(nonzero[1:] > nonzero[:-1])  # still increasing: never mirrored
    flipped = crop_and_flip(images, torch.Generator().manual_seed(0), padding=0, flip=True)
    assert int((flipped[:, 0, 0, 0] == 8).sum()) > 0  # with flip some are


def test_lr_factor_warms_up_linearly_then_decays_by_cosine():
    config = TrainingConfig(epochs=1, warmup=0.2)
    factor = lr_factor(config, total_steps=100)
    assert [round(factor(s), 3) for s in (0, 9, 19)] == [0.05, 0.5, 1.0]
    assert (
        factor(20) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5) and factor(99) < 0.01
    )
    plain = lr_factor(TrainingConfig(epochs=1), total_steps=100)
    assert plain(0) == 1.0 and plain(50) == pytest.approx(0.5)  # no warm-up: BackdoorBench's cosine
    assert lr_factor(TrainingConfig(schedule="constant", warmup=0.1), 100)(50) == 1.0


def test_training_logs_a_time_estimate_after_its_first_epoch(caplog):
    images, labels = _half_bright_problem()
    model = build_classifier("compact_cnn", 2, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with caplog.at_level("INFO", logger="cgd_kedro.training.classifier"):
        train_classifier(
            model,
            images,
            labels,
            TrainingConfig(epochs=3, batch_size=32, augment=False),
            device=torch.device("cpu"),
            generator=seed_everything(0),
            description="victim",
        )
    estimates = [r.getMessage() for r in caplog.records if "estimate" in r.getMessage()]
    assert (
        len(estimates) == 1
        and estimates[0].startswith("victim: first epoch took")
        and "for 3 epochs" in estimates[0]
    )
