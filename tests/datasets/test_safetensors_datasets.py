"""Safetensors-backed Kedro datasets: exact round trips, versioning, and refusal of bad files."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError, Version

from cgd_kedro.datasets import ClassifierCheckpointDataset, TensorDictDataset
from cgd_kedro.models.classifier import build_classifier, from_checkpoint, to_checkpoint


def _image_set() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randint(0, 256, (5, 3, 4, 4), generator=g, dtype=torch.uint8),
        "labels": torch.tensor([0, 9, 3, 2**40, -1], dtype=torch.int64),
        "poison": torch.tensor([True, False, True, False, False]),
        "logits": torch.randn(5, 10, generator=g),
        "half": torch.randn(5, generator=g).to(torch.float16),
        # Non-contiguous view: saving must still work and keep the values.
        "transposed": torch.arange(12, dtype=torch.float64).view(3, 4).t(),
    }


def _assert_same(loaded: dict, expected: dict) -> None:
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        assert torch.equal(loaded[key], value), key


def test_tensor_dict_round_trip_unversioned(tmp_path: Path):
    data = _image_set()
    dataset = TensorDictDataset(filepath=str(tmp_path / "sub" / "set.safetensors"))
    assert not dataset.exists()
    dataset.save(data)
    assert dataset.exists()
    assert (tmp_path / "sub" / "set.safetensors").is_file()
    _assert_same(dataset.load(), data)


def test_tensor_dict_round_trip_versioned(tmp_path: Path):
    data = _image_set()
    filepath = tmp_path / "set.safetensors"
    TensorDictDataset(filepath=str(filepath), version=Version(None, None)).save(data)
    versions = list(filepath.iterdir())
    assert len(versions) == 1 and (versions[0] / "set.safetensors").is_file()
    _assert_same(
        TensorDictDataset(filepath=str(filepath), version=Version(None, None)).load(), data
    )


def test_two_explicit_save_versions_load_latest_and_pinned(tmp_path: Path):
    filepath = str(tmp_path / "set.safetensors")
    first = {"x": torch.tensor([1, 2, 3], dtype=torch.int64)}
    second = {"x": torch.tensor([4, 5], dtype=torch.int64), "flag": torch.tensor([True])}
    TensorDictDataset(filepath=filepath, version=Version(None, "2024-01-01T00.00.00.000Z")).save(
        first
    )
    TensorDictDataset(filepath=filepath, version=Version(None, "2024-06-01T00.00.00.000Z")).save(
        second
    )
    _assert_same(TensorDictDataset(filepath=filepath, version=Version(None, None)).load(), second)
    pinned = TensorDictDataset(filepath=filepath, version=Version("2024-01-01T00.00.00.000Z", None))
    _assert_same(pinned.load(), first)


def test_tensor_dict_refuses_non_tensor_data(tmp_path: Path):
    dataset = TensorDictDataset(filepath=str(tmp_path / "x.safetensors"))
    with pytest.raises(DatasetError, match=r"TensorDictDataset saves a dict of tensors, got list"):
        dataset.save([torch.zeros(1)])
    with pytest.raises(DatasetError, match=r"dict of tensors"):
        dataset.save({"a": [1, 2]})


def _checkpoint():
    torch.manual_seed(0)
    model = build_classifier("compact_cnn", 10, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    model.eval()
    return model, to_checkpoint(model, "compact_cnn", 10)


def test_classifier_checkpoint_round_trip_versioned(tmp_path: Path):
    model, checkpoint = _checkpoint()
    filepath = str(tmp_path / "victim.safetensors")
    ClassifierCheckpointDataset(filepath=filepath, version=Version(None, None)).save(checkpoint)
    loaded = ClassifierCheckpointDataset(filepath=filepath, version=Version(None, None)).load()
    assert loaded["architecture"] == "compact_cnn"
    assert loaded["num_classes"] == 10 and isinstance(loaded["num_classes"], int)
    assert loaded["mean"] == checkpoint["mean"] and loaded["std"] == checkpoint["std"]
    _assert_same(loaded["state_dict"], checkpoint["state_dict"])
    assert loaded["state_dict"]["features.0.1.num_batches_tracked"].dtype == torch.int64
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(from_checkpoint(loaded).eval()(x), model(x))


def test_classifier_checkpoint_two_versions_load_latest(tmp_path: Path):
    _, checkpoint = _checkpoint()
    other = dict(checkpoint, num_classes=10, mean=[0.1, 0.1, 0.1])
    filepath = str(tmp_path / "victim.safetensors")
    ClassifierCheckpointDataset(
        filepath=filepath, version=Version(None, "2024-01-01T00.00.00.000Z")
    ).save(checkpoint)
    ClassifierCheckpointDataset(
        filepath=filepath, version=Version(None, "2025-01-01T00.00.00.000Z")
    ).save(other)
    loaded = ClassifierCheckpointDataset(filepath=filepath, version=Version(None, None)).load()
    assert loaded["mean"] == [0.1, 0.1, 0.1]


def test_missing_versioned_file_is_a_dataset_error(tmp_path: Path):
    dataset = TensorDictDataset(
        filepath=str(tmp_path / "none.safetensors"), version=Version(None, None)
    )
    assert not dataset.exists()
    with pytest.raises(DatasetError):
        dataset.load()


@pytest.mark.parametrize("dataset_cls", [TensorDictDataset, ClassifierCheckpointDataset])
@pytest.mark.parametrize("corruption", ["truncated", "garbage", "empty"])
def test_corrupt_file_raises_dataset_error_with_path(tmp_path: Path, dataset_cls, corruption):
    path = tmp_path / "bad.safetensors"
    TensorDictDataset(filepath=str(path)).save({"x": torch.arange(1000, dtype=torch.float32)})
    raw = path.read_bytes()
    if corruption == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif corruption == "garbage":
        path.write_bytes(b"\x00not a safetensors file at all" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        dataset_cls(filepath=str(path)).load()
    assert str(path) in str(info.value)
    assert "not a readable safetensors file" in str(info.value)


def test_tensor_dict_file_is_not_a_classifier_checkpoint(tmp_path: Path):
    path = tmp_path / "set.safetensors"
    TensorDictDataset(filepath=str(path)).save(
        {"images": torch.zeros(1, 3, 2, 2, dtype=torch.uint8)}
    )
    with pytest.raises(DatasetError) as info:
        ClassifierCheckpointDataset(filepath=str(path)).load()
    message = str(info.value)
    assert str(path) in message
    assert "not a cgd_kedro classifier checkpoint" in message
    assert "'cgd_kedro.tensors/1'" in message


class _Payload:
    """Unpickling this object would call open(marker, 'w') and so create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("dataset_cls", [TensorDictDataset, ClassifierCheckpointDataset])
def test_pickle_file_is_refused_without_running_code(tmp_path: Path, dataset_cls):
    marker = tmp_path / "pwned"
    pickled = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Payload(marker)}, pickled)
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickled.read_bytes())
    assert not marker.exists()
    with pytest.raises(DatasetError) as info:
        dataset_cls(filepath=str(path)).load()
    assert str(path) in str(info.value)
    assert "not a readable safetensors file" in str(info.value)
    assert not marker.exists()
    # Control: the payload is live, unpickling with code execution does create the marker.
    torch.load(pickled, weights_only=False)
    assert marker.exists()
