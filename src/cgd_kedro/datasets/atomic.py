"""Atomic, byte-reproducible file writes for every dataset the project saves.

A save goes to a hidden temporary file in the destination folder, is flushed and fsync'ed, and
only then renamed over the final name (``os.replace`` is atomic on POSIX and Windows). A run
killed or a disk filled during a save therefore leaves the final name absent, never truncated:
Kedro picks a dataset's latest version by looking for the final file name in each version
folder, so a version folder holding only a temporary file is never loaded.

safetensors files are written with their JSON header's keys sorted (the safetensors library
writes its ``__metadata__`` map in a different order on every call), so the same tensors and
metadata always give the same bytes and a file hash identifies a model.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import save as safetensors_bytes

TEMPORARY_PREFIX = ".writing-"


def _fsync_folder(folder: Path) -> None:
    if os.name == "posix":  # a folder cannot be opened for fsync on Windows
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, then move the finished file to ``path`` in one rename.

    The temporary file lives next to ``path`` (same file system, so the rename is atomic) and is
    removed if ``write`` fails. The file gets the permissions a plain ``open`` would give it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.name}.")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes the file private
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def canonical_safetensors(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """The safetensors encoding of ``tensors`` with the header's keys in sorted order.

    Layout: 8-byte little-endian header length, the JSON header (padded with spaces to a multiple
    of 8, as the library does), then the tensor bytes, which the library already lays out in a fixed
    order. Tensors are copied to contiguous CPU memory first (safetensors refuses shared storage).
    """
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
    encoded = safetensors_bytes(tensors, metadata=dict(metadata) if metadata else None)
    (length,) = struct.unpack("<Q", encoded[:8])
    header = json.loads(encoded[8 : 8 + length])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    canonical += b" " * (-len(canonical) % 8)
    return struct.pack("<Q", len(canonical)) + canonical + encoded[8 + length :]


def save_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (and string ``metadata``) to ``path`` atomically, with canonical bytes."""
    data = canonical_safetensors(tensors, metadata)
    atomic_write(path, lambda temporary: temporary.write_bytes(data))


def save_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (JSON records and job files outside the catalog)."""
    atomic_write(path, lambda temporary: temporary.write_text(text))


def save_torch(path: str | os.PathLike, data: object) -> None:
    """``torch.save(data)`` to ``path`` atomically (for files read by tools outside the project)."""
    atomic_write(path, lambda temporary: torch.save(data, temporary))


class AtomicSaveMixin:
    """Make a kedro-datasets file dataset save atomically (JSON, CSV, figures, text).

    The dataset's own ``save`` writes to a temporary path in the destination folder (its
    ``_get_save_path`` is redirected for the duration of the call); the finished file is then
    fsync'ed and renamed. Local files only, which is what the project's catalog uses.
    """

    _atomic_target: PurePosixPath | None = None

    def _get_save_path(self) -> PurePosixPath:
        return self._atomic_target if self._atomic_target is not None else super()._get_save_path()

    def save(self, data) -> None:
        final = Path(str(super()._get_save_path()))
        # The parent's undecorated save: its Kedro wrapper would look for
        # the final file, not there yet.
        parent_save = super().save.__wrapped__

        def write(temporary: Path) -> None:
            self._atomic_target = PurePosixPath(temporary.as_posix())
            try:
                parent_save(self, data)
            finally:
                self._atomic_target = None

        atomic_write(final, write)
