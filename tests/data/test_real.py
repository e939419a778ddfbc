"""Readers for real datasets, run on tiny fakes written in each dataset's exact on-disk layout."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgd_kedro.data.real import GTSRB_CLASS_NAMES, REAL_DATASETS, _load_pickle, load_real_dataset

# --- writers for the fake datasets ---------------------------------------------------------------


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: object, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _write_cifar10(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Five train batches and a test batch with bytes keys, as in the real (Python 2) files."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _cifar_rows(2, seed=i), [i % 3, (i + 1) % 3]
        _dump(
            base / name,
            {
                b"batch_label": b"batch",
                b"labels": labels,
                b"data": data,
                b"filenames": [b"a", b"b"],
            },
        )
        batches[name] = (data, labels)
    _dump(
        base / "batches.meta",
        {b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072},
    )
    return batches


def _write_cifar100(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Train/test/meta with str keys and numpy's protocol-5 pickling, to cover both styles."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    batches = {}
    for i, name in enumerate(["train", "test"]):
        data, fine = _cifar_rows(3, seed=10 + i), [1, 0, 1] if i == 0 else [0, 1, 1]
        _dump(
            base / name, {"data": data, "fine_labels": fine, "coarse_labels": [0, 0, 0]}, protocol=5
        )
        batches[name] = (data, fine)
    _dump(
        base / "meta",
        {"fine_label_names": ["apple", "aquarium_fish"], "coarse_label_names": ["x"]},
        protocol=5,
    )
    return batches


def _image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    channels = 3 if mode == "RGB" else 1
    pixels = np.random.default_rng(seed).integers(
        0, 256, size=(height, width, channels), dtype=np.uint8
    )
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def _solid(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def _write_gtsrb(root: Path) -> dict[str, Image.Image]:
    """Three classes of varying-size .ppm images plus the semicolon-separated test csv."""
    base = root / "gtsrb"
    train = base / "GTSRB" / "Training"
    images = {
        "00000/00000_00000.ppm": _image(32, 32, seed=1),
        "00000/00000_00001.ppm": _image(32, 32, seed=2),
        "00001/00000_00000.ppm": _solid(40, 30, (200, 10, 60)),
        "00002/00000_00000.ppm": _image(32, 32, seed=3),
        "00002/00000_00001.ppm": _solid(20, 25, (5, 250, 128)),
    }
    for name, image in images.items():
        (train / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(train / name)
    (train / "00000" / "GT-00000.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    )
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    tests = [
        ("00000.ppm", _image(32, 32, seed=4), 2),
        ("00001.ppm", _solid(50, 45, (1, 2, 3)), 0),
        ("00002.ppm", _image(32, 32, seed=5), 1),
    ]
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for name, image, label in tests:
        image.save(test / name)
        rows.append(
            f"{name};{image.width};{image.height};1;1;{image.width - 1};{image.height - 1};{label}"
        )
        images[f"test/{name}"] = image
    (test / "GT-final_test.test.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2\n"
    )
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return images


_TINY_WNIDS = ["n02124075", "n01443537", "n04067472"]  # deliberately not sorted
_TINY_COLOURS = {"n02124075": (220, 30, 30), "n01443537": (30, 220, 30), "n04067472": (30, 30, 220)}


def _write_tiny(root: Path) -> None:
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(_TINY_WNIDS) + "\n")
    (base / "words.txt").write_text(
        "n00001740\tentity\n"
        "n01443537\tgoldfish, Carassius auratus\n"
        "n02124075\tEgyptian cat\n"
        "n04067472\treel\n"
    )
    for wnid in _TINY_WNIDS:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for k in range(2):
            _solid(64, 64, _TINY_COLOURS[wnid]).save(images / f"{wnid}_{k}.JPEG")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    # One grayscale training image, as some real Tiny ImageNet JPEGs are.
    Image.new("L", (64, 64), 90).save(
        base / "train" / _TINY_WNIDS[0] / "images" / f"{_TINY_WNIDS[0]}_2.JPEG"
    )
    val = base / "val" / "images"
    val.mkdir(parents=True)
    annotations = []
    for k, wnid in enumerate(["n04067472", "n02124075", "n01443537", "n04067472"]):
        _solid(64, 64, _TINY_COLOURS[wnid]).save(val / f"val_{k}.JPEG")
        annotations.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")


def _chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


# --- reading each format -------------------------------------------------------------------------


def test_registry_lists_the_four_datasets():
    assert set(REAL_DATASETS) == {"cifar10", "cifar100", "gtsrb", "tinyimagenet"}


def test_cifar10_round_trips_pixels_labels_and_names(tmp_path):
    batches = _write_cifar10(tmp_path)
    train, test, names = load_real_dataset("cifar10", str(tmp_path))

    assert names == ["airplane", "automobile", "bird"]
    assert train["images"].shape == (10, 3, 32, 32) and train["images"].dtype == torch.uint8
    assert test["images"].shape == (2, 3, 32, 32)
    assert train["labels"].dtype == torch.int64
    expected_train = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert torch.equal(train["images"], torch.from_numpy(expected_train).reshape(10, 3, 32, 32))
    assert train["labels"].tolist() == [
        label for k in range(1, 6) for label in batches[f"data_batch_{k}"][1]
    ]
    assert torch.equal(test["images"].reshape(2, -1), torch.from_numpy(batches["test_batch"][0]))
    assert test["labels"].tolist() == batches["test_batch"][1]
    # Row layout is R plane, G plane, B plane, each 32 x 32 row-major.
    row = batches["data_batch_1"][0][0]
    assert train["images"][0, 1, 2, 5] == row[1024 + 2 * 32 + 5]


def test_cifar100_reads_fine_labels_and_str_keys(tmp_path):
    batches = _write_cifar100(tmp_path)
    train, test, names = load_real_dataset("cifar100", tmp_path)

    assert names == ["apple", "aquarium fish"]
    assert torch.equal(train["images"].reshape(3, -1), torch.from_numpy(batches["train"][0]))
    assert train["labels"].tolist() == [1, 0, 1]
    assert test["labels"].tolist() == [0, 1, 1]
    assert test["images"].shape == (3, 3, 32, 32)


def test_cifar_resizes_when_asked(tmp_path):
    _write_cifar10(tmp_path)
    train, test, _ = load_real_dataset("cifar10", tmp_path, image_size=16)
    assert train["images"].shape == (10, 3, 16, 16) and train["images"].dtype == torch.uint8
    assert test["images"].shape == (2, 3, 16, 16)


def test_python2_style_pickle_is_read(tmp_path):
    # Protocol 2 as Python 2 wrote it (str opcodes, numpy.core globals), like the real CIFAR files.
    path = tmp_path / "batch"
    path.write_bytes(
        b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\n"
        b"q\x03K\x00\x85U\x01b\x87R(K\x01K\x02\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x01\x02tb"
        b"U\x06labels]K\x01au."
    )
    record = _load_pickle(path)
    assert record[b"labels"] == [1]
    assert record[b"data"].dtype == np.uint8 and record[b"data"].tolist() == [1, 2]


def test_gtsrb_reads_ppm_resizes_and_names_classes(tmp_path):
    images = _write_gtsrb(tmp_path)
    train, test, names = load_real_dataset("gtsrb", tmp_path)

    assert names == list(GTSRB_CLASS_NAMES) and len(names) == 43
    assert names[0] == "speed limit 20 km/h" and names[14] == "stop"
    assert train["images"].shape == (5, 3, 32, 32) and train["images"].dtype == torch.uint8
    assert train["labels"].tolist() == [0, 0, 1, 2, 2]
    assert test["images"].shape == (3, 3, 32, 32)
    assert test["labels"].tolist() == [2, 0, 1]  # csv order
    # 32 x 32 images are exact; others are resized, and a solid colour stays that colour.
    assert torch.equal(train["images"][0], _chw(images["00000/00000_00000.ppm"]))
    assert torch.equal(train["images"][3], _chw(images["00002/00000_00000.ppm"]))
    assert torch.equal(test["images"][2], _chw(images["test/00002.ppm"]))
    assert torch.equal(
        train["images"][2],
        torch.tensor([200, 10, 60], dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32),
    )
    assert torch.equal(
        test["images"][1],
        torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32),
    )


def test_gtsrb_image_size(tmp_path):
    _write_gtsrb(tmp_path)
    train, test, _ = load_real_dataset("gtsrb", tmp_path, image_size=20)
    assert train["images"].shape == (5, 3, 20, 20) and test["images"].shape == (3, 3, 20, 20)
    assert (
        train["images"][4] == torch.tensor([5, 250, 128], dtype=torch.uint8).view(3, 1, 1)
    ).all()


def test_tinyimagenet_reads_jpegs_in_wnids_order(tmp_path):
    _write_tiny(tmp_path)
    train, test, names = load_real_dataset("tinyimagenet", tmp_path)

    assert names == ["Egyptian cat", "goldfish", "reel"]
    assert train["images"].shape == (7, 3, 64, 64) and train["images"].dtype == torch.uint8
    assert train["labels"].tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert test["images"].shape == (4, 3, 64, 64)
    assert test["labels"].tolist() == [2, 0, 1, 2]
    # JPEG is lossy: colours come back approximately; the grayscale image has equal channels.
    mean = train["images"].float().mean(dim=(2, 3))
    assert torch.allclose(mean[3], torch.tensor([30.0, 220.0, 30.0]), atol=4)
    assert torch.allclose(
        test["images"][0].float().mean(dim=(1, 2)), torch.tensor([30.0, 30.0, 220.0]), atol=4
    )
    gray = train["images"][2]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert abs(gray.float().mean().item() - 90) < 2


def test_tinyimagenet_image_size(tmp_path):
    _write_tiny(tmp_path)
    train, test, _ = load_real_dataset("tinyimagenet", tmp_path, image_size=32)
    assert train["images"].shape == (7, 3, 32, 32) and test["images"].shape == (4, 3, 32, 32)


# --- errors --------------------------------------------------------------------------------------


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"dataset\.name") as info:
        load_real_dataset("imagenet", tmp_path)
    assert "'imagenet'" in str(info.value)
    for name in REAL_DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("image_size", [0, -3, 2.5, True])
def test_bad_image_size(tmp_path, image_size):
    with pytest.raises(ValueError, match=r"dataset\.image_size"):
        load_real_dataset("cifar10", tmp_path, image_size=image_size)


@pytest.mark.parametrize(
    ("name", "folder", "layout"),
    [
        ("cifar10", "cifar-10-batches-py", "data_batch_1..5, test_batch, batches.meta"),
        ("cifar100", "cifar-100-python", "train, test, meta"),
        ("gtsrb", "gtsrb", "GT-final_test.csv"),
        ("tinyimagenet", "tiny-imagenet-200", "val/val_annotations.txt"),
    ],
)
def test_missing_directory_names_expected_path_and_layout(tmp_path, name, folder, layout):
    with pytest.raises(FileNotFoundError) as info:
        load_real_dataset(name, tmp_path / "nowhere")
    message = str(info.value)
    assert "dataset.root" in message
    assert f"'{tmp_path / 'nowhere' / folder}'" in message
    assert layout in message


def test_missing_file_is_named(tmp_path):
    _write_cifar10(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_1\.\.5") as info:
        load_real_dataset("cifar10", tmp_path)
    assert f"'{missing}'" in str(info.value)


def test_root_pointing_inside_the_dataset_gets_a_hint(tmp_path):
    _write_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="directory containing 'cifar-10-batches-py'"):
        load_real_dataset("cifar10", tmp_path / "cifar-10-batches-py")


def test_gtsrb_missing_test_image_is_named(tmp_path):
    _write_gtsrb(tmp_path)
    image = tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / "00001.ppm"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=str(image)):
        load_real_dataset("gtsrb", tmp_path)


class _Evil:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call", ["system", "exec"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, call):
    _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = (
        _Evil(os.system, f"echo pwned > '{marker}'")
        if call == "system"
        else _Evil(builtins.exec, f"open({str(marker)!r}, 'w').write('pwned')")
    )
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    _dump(path, {b"data": payload, b"labels": [0]})

    with pytest.raises(ValueError, match="refusing to load global") as info:
        load_real_dataset("cifar10", tmp_path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_truncated_pickle(tmp_path):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read pickle") as info:
        load_real_dataset("cifar10", tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "shape"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 7]}, r"\[0, 3\)"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "missing key 'labels'"),
        ([1, 2, 3], "dict"),
    ],
)
def test_malformed_cifar_batch(tmp_path, record, problem):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    _dump(path, record)
    with pytest.raises(ValueError, match=problem) as info:
        load_real_dataset("cifar10", tmp_path)
    assert str(path) in str(info.value)


def test_gtsrb_csv_without_class_id(tmp_path):
    _write_gtsrb(tmp_path)
    csv_path = tmp_path / "gtsrb" / "GT-final_test.csv"
    csv_path.write_text("Filename;Width;Height\n00000.ppm;32;32\n")
    with pytest.raises(ValueError, match="ClassId") as info:
        load_real_dataset("gtsrb", tmp_path)
    assert str(csv_path) in str(info.value)


def test_gtsrb_empty_class_directory(tmp_path):
    _write_gtsrb(tmp_path)
    empty = tmp_path / "gtsrb" / "GTSRB" / "Training" / "00007"
    empty.mkdir()
    (empty / "GT-00007.csv").write_text("Filename;ClassId\n")
    with pytest.raises(ValueError, match=r"no \.ppm images") as info:
        load_real_dataset("gtsrb", tmp_path)
    assert str(empty) in str(info.value)


def test_unreadable_image(tmp_path):
    _write_gtsrb(tmp_path)
    path = tmp_path / "gtsrb" / "GTSRB" / "Training" / "00001" / "00000_00000.ppm"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read image") as info:
        load_real_dataset("gtsrb", tmp_path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path):
    _write_tiny(tmp_path)
    path = tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read image") as info:
        load_real_dataset("tinyimagenet", tmp_path)
    assert str(path) in str(info.value)


def test_tiny_annotation_with_unknown_wnid(tmp_path):
    _write_tiny(tmp_path)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="line 5") as info:
        load_real_dataset("tinyimagenet", tmp_path)
    assert str(annotations) in str(info.value)
