"""Versioned local-file datasets over safetensors (saved atomically, see ``atomic``).

safetensors stores raw tensors plus a string-to-string header, so loading can never execute
code from the file (unlike pickle-based ``torch.save``). A file that is not what the dataset
expects (corrupt, truncated, or another project's) raises ``DatasetError`` naming the path.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from safetensors import SafetensorError, safe_open

from cgd_kedro.datasets.atomic import save_safetensors

CHECKPOINT_FORMAT = "cgd_kedro.classifier/1"


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    save_safetensors(path, tensors, metadata)  # atomic, canonical bytes


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            # a safetensors handle, not a dict: it has keys() but no iteration or `in`
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            return tensors, handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable safetensors file ({error})") from error


class LocalFileDataset(AbstractVersionedDataset[Any, Any]):
    """Base of the project's versioned single-file datasets (local paths only)."""

    def __init__(
        self, *, filepath: str, version: Version | None = None, metadata: dict | None = None
    ):
        """
        Args:
            filepath: local path of the file.
            version: Kedro versioning (``versioned: true`` in the catalog).
            metadata: free-form information shown by kedro-viz; not stored.
        """
        super().__init__(filepath=PurePosixPath(filepath), version=version)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).exists()
        except DatasetError:
            return False


class TensorDictDataset(LocalFileDataset):
    """A ``dict[str, Tensor]`` (an image set, logits, indices) as one safetensors file.

    Example catalog entry::

        "{attack}.poisoned_train":
          type: cgd_kedro.datasets.TensorDictDataset
          filepath: data/03_primary/${globals:dataset}/{attack}/poisoned_train.safetensors
          versioned: true
    """

    def load(self) -> dict[str, torch.Tensor]:
        tensors, _ = _read(Path(self._get_load_path()))
        return tensors

    def save(self, data: dict[str, torch.Tensor]) -> None:
        if not isinstance(data, dict) or not all(
            isinstance(v, torch.Tensor) for v in data.values()
        ):
            raise DatasetError(
                f"{self._filepath}: TensorDictDataset saves a dict of tensors, got "
                f"{type(data).__name__}"
            )
        _write(Path(self._get_save_path()), data, {"format": "cgd_kedro.tensors/1"})


class ClassifierCheckpointDataset(LocalFileDataset):
    """A classifier checkpoint (see ``cgd_kedro.models.classifier``) as one safetensors file.

    The state_dict is stored as tensors; architecture, ``num_classes`` and input normalisation go
    into the header, tagged with a format marker so a foreign file is rejected on load.
    """

    def load(self) -> dict:
        path = Path(self._get_load_path())
        state_dict, header = _read(path)
        if header.get("format") != CHECKPOINT_FORMAT:
            raise DatasetError(
                f"{path}: not a cgd_kedro classifier checkpoint (header format "
                f"{header.get('format')!r}, expected {CHECKPOINT_FORMAT!r})"
            )
        return {
            "architecture": header["architecture"],
            "num_classes": int(header["num_classes"]),
            "mean": json.loads(header["mean"]),
            "std": json.loads(header["std"]),
            "state_dict": state_dict,
        }

    def save(self, data: dict) -> None:
        header = {
            "format": CHECKPOINT_FORMAT,
            "architecture": str(data["architecture"]),
            "num_classes": str(int(data["num_classes"])),
            "mean": json.dumps([float(v) for v in data["mean"]]),
            "std": json.dumps([float(v) for v in data["std"]]),
        }
        _write(Path(self._get_save_path()), data["state_dict"], header)


CLIP_CHECKPOINT_FORMAT = "cgd_kedro.clip/1"


class ClipCheckpointDataset(LocalFileDataset):
    """A reference CLIP (``{"model_name", "state_dict"}``, see ``cgd_kedro.clip.factory``).

    The project's own CLIP (the embedded one) is stored whole. A CLIP whose weights are the
    user's local file (``{"model_name", "weights": path}``) is stored as a link: the header names
    the file and its size, and loading reads the weights from there, so a 600 MB ViT-B-32 is not
    copied on every run. A link whose file has gone or changed size raises ``DatasetError``.
    """

    def load(self) -> dict:
        try:
            path = Path(self._get_load_path())
        except DatasetError as error:
            raise DatasetError(
                f"{self._filepath}: no reference CLIP yet; run `kedro run --pipelines "
                f"reference_clip` first ({error})"
            ) from error
        state_dict, header = _read(path)
        if header.get("format") != CLIP_CHECKPOINT_FORMAT:
            raise DatasetError(
                f"{path}: not a cgd_kedro CLIP checkpoint (header format {header.get('format')!r}, "
                f"expected {CLIP_CHECKPOINT_FORMAT!r})"
            )
        checkpoint = {"model_name": header["model_name"], "weights": header.get("weights") or None}
        if checkpoint["weights"] is None:
            return checkpoint | {"state_dict": state_dict}
        weights = Path(checkpoint["weights"])
        if not weights.is_file() or str(weights.stat().st_size) != header.get("weights_size"):
            raise DatasetError(
                f"{path}: links to CLIP weights {str(weights)!r}, which no longer exist or changed "
                "size; re-run the reference_clip pipeline"
            )
        return checkpoint

    def save(self, data: dict) -> None:
        header = {"format": CLIP_CHECKPOINT_FORMAT, "model_name": str(data["model_name"])}
        if data.get("weights"):
            weights = Path(data["weights"]).resolve()
            header |= {"weights": str(weights), "weights_size": str(weights.stat().st_size)}
            tensors = {}
        else:
            tensors = data["state_dict"]
        _write(Path(self._get_save_path()), tensors, header)


CAPTIONED_FORMAT = "cgd_kedro.captioned_images/1"


class CaptionedImagesDataset(LocalFileDataset):
    """Image-caption pairs: a ``dict`` of tensors (``images``, ``labels``, flags...) plus
    ``captions``, a list of strings stored as JSON in the safetensors
    header (no pickle anywhere)."""

    def load(self) -> dict:
        path = Path(self._get_load_path())
        tensors, header = _read(path)
        if header.get("format") != CAPTIONED_FORMAT:
            raise DatasetError(
                f"{path}: not a cgd_kedro caption set (header format {header.get('format')!r}, "
                f"expected {CAPTIONED_FORMAT!r})"
            )
        return tensors | {"captions": json.loads(header["captions"])}

    def save(self, data: dict) -> None:
        captions = data.get("captions") if isinstance(data, dict) else None
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise DatasetError(
                f"{self._filepath}: CaptionedImagesDataset saves a dict with a "
                "'captions' list of strings"
            )
        tensors = {k: v for k, v in data.items() if k != "captions"}
        if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise DatasetError(f"{self._filepath}: every entry but 'captions' must be a tensor")
        _write(
            Path(self._get_save_path()),
            tensors,
            {"format": CAPTIONED_FORMAT, "captions": json.dumps(captions)},
        )
