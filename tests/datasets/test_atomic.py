"""Atomic saves (temporary file + rename) and byte-reproducible safetensors files."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from kedro.io.core import Version
from safetensors import safe_open

from cgd_kedro.datasets import (
    ClassifierCheckpointDataset,
    CSVDataset,
    JSONDataset,
    MatplotlibDataset,
    TensorDictDataset,
    TextDataset,
    TorchTensorDataset,
)
from cgd_kedro.datasets.atomic import (
    TEMPORARY_PREFIX,
    atomic_write,
    canonical_safetensors,
    save_safetensors,
)
from cgd_kedro.models.classifier import build_classifier, to_checkpoint


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_canonical_safetensors_sorts_the_header_and_round_trips(tmp_path: Path):
    tensors = {f"t{i}": torch.arange(i + 3, dtype=torch.float32) for i in range(6)}
    metadata = {f"key{i}": f"value {i}" for i in (5, 1, 4, 2, 3, 0)}
    encoded = canonical_safetensors(tensors, metadata)
    (length,) = struct.unpack("<Q", encoded[:8])
    assert length % 8 == 0
    header_text = encoded[8 : 8 + length].decode().rstrip(" ")
    header = json.loads(header_text)
    assert header_text == json.dumps(header, sort_keys=True, separators=(",", ":"))
    assert list(header["__metadata__"]) == sorted(metadata)
    save_safetensors(tmp_path / "a.safetensors", tensors, metadata)
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as handle:
        assert handle.metadata() == metadata
        for key, value in tensors.items():
            assert torch.equal(handle.get_tensor(key), value)


def test_same_model_gives_the_same_file_bytes(tmp_path: Path):
    torch.manual_seed(0)
    checkpoint = to_checkpoint(
        build_classifier("compact_cnn", 10, [0.5] * 3, [0.25] * 3), "compact_cnn", 10
    )
    digests = set()
    for i in range(4):  # the library's own header order varies from call to call
        dataset = ClassifierCheckpointDataset(filepath=str(tmp_path / f"m{i}.safetensors"))
        dataset.save(checkpoint)
        digests.add(_digest(tmp_path / f"m{i}.safetensors"))
    assert len(digests) == 1


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "report.json"
    path.write_text('{"old": 1}')

    def half_then_fail(temporary: Path) -> None:
        temporary.write_text('{"new": ')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize(
    ("dataset_class", "suffix", "data"),
    [
        (JSONDataset, "json", {"ca": 0.9, "asr": 0.01}),
        (CSVDataset, "csv", pd.DataFrame({"attack": ["badnets"], "ca": [0.9]})),
        (TextDataset, "html", "<p>report</p>"),
        (TensorDictDataset, "safetensors", {"x": torch.arange(4)}),
        (TorchTensorDataset, "pt", torch.arange(4)),
    ],
)
def test_versioned_saves_are_atomic_and_load_back(tmp_path: Path, dataset_class, suffix, data):
    filepath = tmp_path / f"out.{suffix}"
    first = dataset_class(filepath=str(filepath), version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save(data)
    # A later run killed during its save leaves only a temporary file in its version folder:
    killed = filepath / "2026-01-02T00.00.00.000Z"
    killed.mkdir()
    (killed / f"{TEMPORARY_PREFIX}out.{suffix}.abc123").write_bytes(b"{trunc")
    latest = dataset_class(filepath=str(filepath), version=Version(None, None))
    assert latest.resolve_load_version() == "2026-01-01T00.00.00.000Z"
    loaded = latest.load()
    if isinstance(data, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, data)
    elif isinstance(data, dict) and isinstance(next(iter(data.values())), torch.Tensor):
        assert torch.equal(loaded["x"], data["x"])
    elif isinstance(data, torch.Tensor):
        assert torch.equal(loaded, data)
    else:
        assert loaded == data
    written = list((filepath / "2026-01-01T00.00.00.000Z").iterdir())
    assert [p.name for p in written] == [f"out.{suffix}"]  # no temporary left behind


def test_figure_dataset_writes_a_png_atomically(tmp_path: Path):
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    dataset = MatplotlibDataset(
        filepath=str(tmp_path / "fig.png"), version=Version(None, "2026-01-01T00.00.00.000Z")
    )
    dataset.save(figure)
    written = list((tmp_path / "fig.png" / "2026-01-01T00.00.00.000Z").iterdir())
    assert [p.name for p in written] == ["fig.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
