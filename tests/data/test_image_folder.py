"""Image-folder datasets:
layout, class order, caps, the errors that name the file, the decode cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgd_kedro.data.image_folder import class_folders, load_image_folder
from cgd_kedro.data.sources import DatasetConfig, hold_out_clip_slice, read_source

CLASSES = ("cat", "dog", "sea_lion")


def _pixels(seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def write_image_folder(
    root: Path, per_class: dict[str, int] | None = None, size: int = 8
) -> dict[str, list[np.ndarray]]:
    """PNG files (lossless, so pixels round-trip) in root/{train,test}/<class>/NNNN.png."""
    per_class = per_class or {"train": 4, "test": 2}
    written: dict[str, list[np.ndarray]] = {}
    for split, count in per_class.items():
        written[split] = []
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = _pixels(1000 * c + 10 * i + (split == "test"), size)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
                written[split].append(pixels)
    return written


def test_reads_pixels_labels_and_class_names_in_sorted_order(tmp_path):
    written = write_image_folder(tmp_path)
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    train, test, names = load_image_folder(tmp_path)
    assert names == ["cat", "dog", "sea lion"]  # folder names, underscores read as spaces
    assert train["images"].shape == (12, 3, 8, 8) and train["images"].dtype == torch.uint8
    assert train["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert test["labels"].tolist() == [0] * 2 + [1] * 2 + [2] * 2
    assert torch.equal(train["images"][5], torch.from_numpy(written["train"][5]).permute(2, 0, 1))
    assert torch.equal(test["images"][3], torch.from_numpy(written["test"][3]).permute(2, 0, 1))


def test_classes_txt_sets_the_class_order(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "classes.txt").write_text("sea_lion\ncat\ndog\n")
    train, _, names = load_image_folder(tmp_path)
    assert names == ["sea lion", "cat", "dog"]
    assert train["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    reference, _, _ = load_image_folder(tmp_path)
    assert torch.equal(train["images"][:4], reference["images"][:4])


def test_caps_keep_the_first_images_of_each_class(tmp_path):
    write_image_folder(tmp_path)
    full, _, _ = load_image_folder(tmp_path)
    train, test, _ = load_image_folder(tmp_path, max_per_class=3, max_test_per_class=1)
    assert train["labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test["labels"].tolist() == [
        0,
        1,
        2,
    ]
    assert torch.equal(train["images"][3:6], full["images"][4:7])


def test_image_size_resizes_every_image(tmp_path):
    write_image_folder(tmp_path, size=12)
    train, test, _ = load_image_folder(tmp_path, image_size=6)
    assert train["images"].shape[-2:] == (6, 6) and test["images"].shape[-2:] == (6, 6)


def _replace(path: Path, image: Image.Image) -> None:
    image.save(path)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (
            lambda root: (root / "train" / "dog" / "notes.txt").write_text("x"),
            r"train/dog/notes\.txt': not an image file",
        ),
        (
            lambda root: (root / "train" / "dog" / "0001.png").write_bytes(b"not a png"),
            r"train/dog/0001\.png': cannot decode",
        ),
        (
            lambda root: _replace(root / "train" / "cat" / "0002.png", Image.new("L", (8, 8))),
            r"train/cat/0002\.png': image mode 'L'; expected RGB",
        ),
        (
            lambda root: _replace(root / "test" / "dog" / "0001.png", Image.new("RGB", (9, 8))),
            r"test/dog/0001\.png': image is 9x8 px .* 8x8",
        ),
        (
            lambda root: (root / "train" / "dog" / "sub").mkdir(),
            r"train/dog/sub': a folder in a class folder",
        ),
        (
            lambda root: (root / "test" / "stray.jpg").write_bytes(b"x"),
            r"test/stray\.jpg': a file directly under test/",
        ),
    ],
)
def test_bad_files_are_named_before_training(tmp_path, damage, match):
    write_image_folder(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_image_folder(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "train" / "frog").mkdir()
    (tmp_path / "test" / "frog").mkdir()
    with pytest.raises(ValueError, match=r"train/frog': class folder contains no images"):
        load_image_folder(tmp_path)


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(ValueError, match=r"/train': no class folders found"):
        class_folders(tmp_path)


def test_unequal_class_sets_between_train_and_test(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "wolf")
    with pytest.raises(
        ValueError, match=r"/test': its class folders differ .* missing \['dog'\], extra \['wolf'\]"
    ):
        load_image_folder(tmp_path)


def test_classes_txt_naming_a_missing_folder(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\nsea_lion\nbird\n")
    with pytest.raises(ValueError, match=r"classes\.txt'.*missing \['bird'\]"):
        class_folders(tmp_path)


def test_missing_split_folder_names_the_layout(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing '.*/test'"):
        class_folders(tmp_path)


# --- through DatasetConfig: format, custom names, the decode cache ----------------------------


def test_cifar10_env_reads_an_image_folder_with_format_auto(tmp_path):
    write_image_folder(tmp_path)
    config = DatasetConfig.from_params({"name": "cifar10", "root": str(tmp_path)})
    assert config.resolved_format() == "image-folder"
    train, _test, names = read_source(config)
    assert train["images"].shape == (12, 3, 8, 8) and names == ["cat", "dog", "sea lion"]


def test_a_dataset_of_your_own_counts_its_classes_without_reading_images(tmp_path):
    write_image_folder(tmp_path)
    config = DatasetConfig.from_params({"name": "pets", "root": str(tmp_path)})
    assert config.num_classes == 3


def test_own_name_without_an_image_folder_is_refused(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"dataset\.name: 'pets' is not a built-in dataset .* must be an image folder",
    ):
        DatasetConfig.from_params({"name": "pets", "root": str(tmp_path)})


def test_format_that_does_not_apply_is_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"dataset\.format: 'cifar-pickle' does not apply to dataset 'gtsrb'"
    ):
        DatasetConfig.from_params(
            {"name": "gtsrb", "root": str(tmp_path), "format": "cifar-pickle"}
        )


def test_neither_layout_is_named(tmp_path):
    config = DatasetConfig.from_params({"name": "cifar10", "root": str(tmp_path)})
    with pytest.raises(
        FileNotFoundError,
        match=r"found neither '.*cifar-10-batches-py' \(cifar-pickle\) or an image folder",
    ):
        read_source(config)


@pytest.mark.parametrize(
    ("key", "value"), [("max_per_class", 0), ("max_test_per_class", -1), ("max_per_class", 2.5)]
)
def test_bad_caps_are_named(tmp_path, key, value):
    with pytest.raises(
        ValueError,
        match=rf"dataset\.{key} = {value}: must be (greater than or equal to 1|a valid integer)",
    ):
        DatasetConfig.from_params({"name": "cifar10", "root": str(tmp_path), key: value})


def test_decode_cache_is_reused_and_follows_file_changes(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    write_image_folder(root)
    config = DatasetConfig.from_params(
        {"name": "cifar10", "root": str(root), "cache_dir": str(cache)}
    )
    first = read_source(config)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".safetensors"

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite an unchanged source")

    monkeypatch.setattr("cgd_kedro.data.sources.load_image_folder", fail)
    second = read_source(config)
    assert second[2] == first[2] and all(torch.equal(second[0][k], first[0][k]) for k in first[0])
    monkeypatch.undo()

    # a new file: a new fingerprint
    Image.fromarray(_pixels(99)).save(root / "train" / "dog" / "0009.png")
    third = read_source(config)
    assert third[0]["labels"].numel() == 13 and len(list(cache.iterdir())) == 2
    capped = read_source(
        DatasetConfig.from_params(
            {"name": "cifar10", "root": str(root), "cache_dir": str(cache), "max_per_class": 2}
        )
    )
    assert capped[0]["labels"].numel() == 6 and len(list(cache.iterdir())) == 3


def test_corrupt_cache_entry_is_decoded_again(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    write_image_folder(root)
    config = DatasetConfig.from_params(
        {"name": "cifar10", "root": str(root), "cache_dir": str(cache)}
    )
    expected = read_source(config)
    entry = next(cache.iterdir())
    entry.write_bytes(b"\x00" * 16)
    train, _, _ = read_source(config)
    assert torch.equal(train["images"], expected[0]["images"])


# --- the CLIP holdout ----------------------------------------------------------------------------


def test_clip_holdout_is_stratified_disjoint_and_seeded():
    labels = torch.arange(100) % 4
    train = {"images": torch.zeros(100, 3, 2, 2, dtype=torch.uint8), "labels": labels}
    kept, public = hold_out_clip_slice(train, 40, num_classes=4, seed=7)
    assert public["labels"].numel() == 40 and kept["labels"].numel() == 60
    assert torch.bincount(public["labels"], minlength=4).tolist() == [10, 10, 10, 10]
    assert set(kept["source_index"].tolist()).isdisjoint(public["source_index"].tolist())
    assert sorted(kept["source_index"].tolist() + public["source_index"].tolist()) == list(
        range(100)
    )
    again, _ = hold_out_clip_slice(train, 40, num_classes=4, seed=7)
    other, _ = hold_out_clip_slice(train, 40, num_classes=4, seed=8)
    assert torch.equal(again["source_index"], kept["source_index"])
    assert not torch.equal(other["source_index"], kept["source_index"])


def test_clip_holdout_too_large_is_named():
    train = {"images": torch.zeros(20, 3, 2, 2, dtype=torch.uint8), "labels": torch.arange(20) % 4}
    with pytest.raises(ValueError, match=r"dataset\.clip_holdout\.size: holding out 15 of the 20"):
        hold_out_clip_slice(train, 15, num_classes=4, seed=0)


def test_clip_holdout_auto_depends_on_weights_and_dataset(tmp_path):
    real = DatasetConfig.from_params({"name": "cifar10", "root": str(tmp_path)})
    assert real.clip_holdout_size(None) == 10000 and real.clip_holdout_size("clip.pt") == 0
    assert DatasetConfig.from_params({}).clip_holdout_size(None) == 0
    with pytest.raises(ValueError, match=r"dataset\.clip_holdout\.size: the embedded world"):
        DatasetConfig.from_params({"clip_holdout": {"size": 100}})
