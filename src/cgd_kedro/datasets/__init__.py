"""Kedro datasets for tensors, model checkpoints and reports: loading never runs code from the
file, and every save is atomic (a temporary file in the same folder, fsync, rename)."""

from cgd_kedro.datasets.file_datasets import CSVDataset, JSONDataset, MatplotlibDataset, TextDataset
from cgd_kedro.datasets.safetensors_datasets import (
    CaptionedImagesDataset,
    ClassifierCheckpointDataset,
    ClipCheckpointDataset,
    TensorDictDataset,
)
from cgd_kedro.datasets.torch_file_dataset import TorchTensorDataset

__all__ = [
    "CSVDataset",
    "CaptionedImagesDataset",
    "ClassifierCheckpointDataset",
    "ClipCheckpointDataset",
    "JSONDataset",
    "MatplotlibDataset",
    "TensorDictDataset",
    "TextDataset",
    "TorchTensorDataset",
]
