"""``logits.pt``-style files for tools outside the project (the CGD reference scripts).

Saved with ``torch.save``; loaded with ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers, never arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io.core import DatasetError

from cgd_kedro.datasets.atomic import save_torch
from cgd_kedro.datasets.safetensors_datasets import LocalFileDataset


class TorchTensorDataset(LocalFileDataset):
    """A tensor (or plain container of tensors) as a ``torch.save`` file."""

    def load(self) -> Any:
        path = Path(self._get_load_path())
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for corrupt or unsafe files
            raise DatasetError(
                f"{path}: not a tensor file readable with weights_only=True ({error})"
            ) from error

    def save(self, data: Any) -> None:
        save_torch(Path(self._get_save_path()), data)  # atomic
