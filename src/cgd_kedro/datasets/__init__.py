"""Kedro datasets for tensors and model checkpoints, stored as safetensors (loading runs no code)."""

from cgd_kedro.datasets.safetensors_datasets import ClassifierCheckpointDataset, TensorDictDataset

__all__ = ["ClassifierCheckpointDataset", "TensorDictDataset"]
