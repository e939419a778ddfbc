"""DatasetConfig.from_params checks and read_source for the embedded world."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cgd_kedro.data import world
from cgd_kedro.data.sources import DatasetConfig, WorldConfig, read_source

TINY_WORLD = {
    "seed": 3,
    "n_train": 24,
    "n_test": 10,
    "n_captions": 1,
    "image_size": 16,
    "difficulty": 0.3,
}


def test_defaults_are_the_embedded_world_with_10_classes():
    config = DatasetConfig.from_params({})
    assert config.name == "embedded"
    assert config.num_classes == 10
    assert config.world == WorldConfig()


def test_values_are_parsed_into_the_config():
    config = DatasetConfig.from_params(
        {"name": "embedded", "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3], "world": dict(TINY_WORLD)}
    )
    assert config.mean == (0.1, 0.2, 0.3)
    assert config.std == (1, 2, 3)
    assert config.world == WorldConfig(**TINY_WORLD)


def test_unknown_key_is_named():
    with pytest.raises(
        ValueError, match=r"dataset\.nmae: unknown parameter; did you mean 'name'\?"
    ):
        DatasetConfig.from_params({"nmae": "embedded"})


def test_unknown_world_key_is_named():
    with pytest.raises(
        ValueError, match=r"dataset\.world\.n_trian: unknown parameter; did you mean 'n_train'\?"
    ):
        DatasetConfig.from_params({"world": {"n_trian": 5}})


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"dataset\.name") as info:
        DatasetConfig.from_params({"name": "imagenet"})
    assert "'imagenet'" in str(info.value)
    assert "cifar10" in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "gtsrb", "tinyimagenet"])
def test_real_dataset_with_missing_root_directory(tmp_path: Path, name: str):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as info:
        DatasetConfig.from_params({"name": name, "root": str(missing)})
    message = str(info.value)
    assert message.startswith("dataset.root")
    assert str(missing.resolve()) in message
    assert repr(name) in message


def test_real_dataset_without_root():
    with pytest.raises(ValueError, match=r"dataset\.root.*'cifar10'"):
        DatasetConfig.from_params({"name": "cifar10"})


def test_real_dataset_with_existing_root_passes_the_cheap_check(tmp_path: Path):
    config = DatasetConfig.from_params({"name": "gtsrb", "root": str(tmp_path)})
    assert config.num_classes == 43
    assert DatasetConfig.from_params({"name": "cifar100", "root": str(tmp_path)}).num_classes == 100
    assert (
        DatasetConfig.from_params({"name": "tinyimagenet", "root": str(tmp_path)}).num_classes
        == 200
    )


@pytest.mark.parametrize(
    ("world_params", "match"),
    [
        ({"difficulty": 1.5}, r"dataset\.world\.difficulty.*1\.5"),
        ({"difficulty": -0.5}, r"dataset\.world\.difficulty"),
        ({"n_train": 0}, r"dataset\.world\.n_train.*0"),
        ({"n_test": -2}, r"dataset\.world\.n_test"),
        ({"n_captions": 0}, r"dataset\.world\.n_captions"),
        ({"n_train": 10.5}, r"dataset\.world\.n_train"),
    ],
)
def test_embedded_world_bad_values_are_named(world_params, match):
    with pytest.raises(ValueError, match=match):
        DatasetConfig.from_params({"world": world_params})


@pytest.mark.parametrize(
    "params",
    [{"mean": [0.5, 0.5]}, {"std": [0.2, 0.0, 0.2]}, {"std": [0.2, 0.2, -1.0]}],
)
def test_bad_normalisation_is_named(params):
    with pytest.raises(
        ValueError,
        match=(
            r"dataset\.(mean\.2: Field required|std = \[.*\]: every value must be greater than 0)"
        ),
    ):
        DatasetConfig.from_params(params)


def test_read_source_tiny_embedded():
    config = DatasetConfig.from_params({"world": dict(TINY_WORLD)})
    train, test, class_names = read_source(config)
    assert class_names == list(world.CLASS_NAMES)
    assert len(class_names) == 10
    assert train["images"].shape == (24, 3, 16, 16)
    assert test["images"].shape == (10, 3, 16, 16)
    assert train["labels"].shape == (24,) and test["labels"].shape == (10,)
    assert train["images"].dtype == torch.uint8 and train["labels"].dtype == torch.int64
    # It is exactly the world's train/test split for that seed.
    expected_train, expected_test, _, _ = world.generate_world(
        seed=3, n_train=24, n_test=10, n_captions=1, image_size=16, difficulty=0.3
    )
    assert torch.equal(train["images"], expected_train["images"])
    assert torch.equal(test["labels"], expected_test["labels"])
