"""The reference-CLIP checkpoint dataset (stored whole or as a link)
and the ``logits.pt`` dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError

from cgd_kedro.datasets import ClipCheckpointDataset, TensorDictDataset, TorchTensorDataset


def test_embedded_clip_checkpoint_round_trips_exactly(tmp_path: Path):
    state = {"visual.w": torch.randn(4, 3), "logit_scale": torch.tensor(2.5)}
    dataset = ClipCheckpointDataset(filepath=str(tmp_path / "clip.safetensors"))
    dataset.save({"model_name": "cgd-embedded-clip", "state_dict": state})
    loaded = dataset.load()
    assert loaded["model_name"] == "cgd-embedded-clip" and loaded["weights"] is None
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in state.items())


def test_linked_weights_are_not_copied_and_a_changed_file_is_refused(tmp_path: Path):
    weights = tmp_path / "vit.pt"
    torch.save({"w": torch.randn(256, 256)}, weights)
    dataset = ClipCheckpointDataset(filepath=str(tmp_path / "clip.safetensors"))
    dataset.save({"model_name": "ViT-B-32", "weights": str(weights)})
    assert (tmp_path / "clip.safetensors").stat().st_size < 1000 < weights.stat().st_size
    assert dataset.load() == {"model_name": "ViT-B-32", "weights": str(weights.resolve())}
    torch.save({"w": torch.randn(8, 8)}, weights)
    with pytest.raises(DatasetError, match=r"vit\.pt.*changed size"):
        dataset.load()
    weights.unlink()
    with pytest.raises(DatasetError, match="no longer exist"):
        dataset.load()


def test_foreign_safetensors_file_is_not_taken_for_a_clip_checkpoint(tmp_path: Path):
    TensorDictDataset(filepath=str(tmp_path / "t.safetensors")).save({"x": torch.zeros(2)})
    with pytest.raises(DatasetError, match="not a cgd_kedro CLIP checkpoint"):
        ClipCheckpointDataset(filepath=str(tmp_path / "t.safetensors")).load()


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_torch_tensor_dataset_round_trips_and_refuses_pickled_code(tmp_path: Path, capsys):
    logits = torch.randn(7, 10)
    dataset = TorchTensorDataset(filepath=str(tmp_path / "out" / "logits.pt"))
    dataset.save(logits)
    assert torch.equal(dataset.load(), logits)
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(_Boom(), handle)
    with pytest.raises(DatasetError, match=r"evil\.pt.*weights_only"):
        TorchTensorDataset(filepath=str(tmp_path / "evil.pt")).load()
    assert "code ran" not in capsys.readouterr().out


def test_missing_reference_clip_says_which_pipeline_makes_it(tmp_path: Path):
    from kedro.io.core import Version

    dataset = ClipCheckpointDataset(
        filepath=str(tmp_path / "clip.safetensors"), version=Version(None, None)
    )
    with pytest.raises(DatasetError, match="run `kedro run --pipelines reference_clip` first"):
        dataset.load()
