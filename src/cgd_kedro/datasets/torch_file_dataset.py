"""``logits.pt``-style files for tools outside the project (the CGD reference scripts).

Saved with ``torch.save``; loaded with ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers, never arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version


class TorchTensorDataset(AbstractVersionedDataset[Any, Any]):
    """A tensor (or plain container of tensors) as a ``torch.save`` file."""

    def __init__(self, *, filepath: str, version: Version | None = None, metadata: dict | None = None):
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except DatasetError:
            return False

    def load(self) -> Any:
        path = Path(self._get_load_path())
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for corrupt or unsafe files
            raise DatasetError(f"{path}: not a tensor file readable with weights_only=True ({error})") from error

    def save(self, data: Any) -> None:
        path = Path(self._get_save_path())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, path)
