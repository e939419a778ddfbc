"""Kedro datasets for tensors and model checkpoints; loading never runs code from the file."""

from cgd_kedro.datasets.safetensors_datasets import ClassifierCheckpointDataset, ClipCheckpointDataset, TensorDictDataset
from cgd_kedro.datasets.torch_file_dataset import TorchTensorDataset

__all__ = ["ClassifierCheckpointDataset", "ClipCheckpointDataset", "TensorDictDataset", "TorchTensorDataset"]
