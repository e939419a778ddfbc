"""Checking an uploaded classifier checkpoint before anything is written or evaluated.

An upload is refused, with a message naming the problem, when its file name is not a plain file
name (no folder, no ``..``), when it is larger than the size limit, when its format is not a
safetensors file or a ``.pt`` / ``.pth`` state_dict that loads with
``torch.load(weights_only=True)`` (a pickle that would run code does not), when a ``.pt`` archive's
checksums do not match its bytes (a file damaged in transfer), when it holds anything but a
``{name: tensor}`` state_dict, when a tensor holds NaN or infinite values or an integer dtype where
the model has floating-point parameters, and when the state_dict does not fit the named architecture
(missing keys, mismatched shapes). Nothing is written until every check has passed, and then only
inside the submissions folder.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path, PurePath

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from cgd_kedro.models.classifier import build_classifier, from_checkpoint
from cgd_kedro.models.registry import check_architecture

MAX_UPLOAD_BYTES = 64 * 2**20  # a compact CNN is 1 MB, PreAct-ResNet18 45 MB
SUFFIXES = (".safetensors", ".pt", ".pth")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SubmissionError(ValueError):
    """An upload that is refused; the message says why, for the user."""


def check_file_name(name: str) -> str:
    """``name`` if it is a plain file name with an allowed suffix, else ``SubmissionError``."""
    if (
        not name
        or "/" in name
        or "\\" in name
        or ".." in name
        or PurePath(name).name != name
        or not SAFE_NAME.match(name)
    ):
        raise SubmissionError(
            f"file name {name!r} refused: use a plain file name (letters, digits, '.', "
            "'_', '-'), no folders"
        )
    if not name.endswith(SUFFIXES):
        raise SubmissionError(
            f"file name {name!r} refused: the format must be one of {', '.join(SUFFIXES)}"
        )
    return name


def check_size(size: int, limit: int = MAX_UPLOAD_BYTES) -> None:
    """``size`` is what was read, at most ``limit + 1`` bytes:
    enough to know the file is over the limit."""
    if size > limit:
        raise SubmissionError(f"upload refused: the file is over the {limit / 2**20:.0f} MiB limit")
    if size == 0:
        raise SubmissionError("upload refused: the file is empty")


def read_state_dict(name: str, data: bytes) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` state_dict in ``data``; no code from the file is ever run."""
    if name.endswith(".safetensors"):
        try:
            loaded = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise SubmissionError(f"{name}: not a readable safetensors file ({error})") from error
    else:
        check_archive(name, data)
        try:
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (
            pickle.UnpicklingError,
            RuntimeError,
            EOFError,
            ValueError,
            AttributeError,
        ) as error:
            # torch's own message suggests weights_only=False, which is
            # exactly what must not be done here.
            raise SubmissionError(
                f"{name}: refused: it holds Python objects other than tensors, or is not a torch "
                f"file ({type(error).__name__}). Upload a state_dict: "
                "safetensors.torch.save_file(model.state_dict(), 'model.safetensors'), or "
                "torch.save(model.state_dict(), 'model.pt')"
            ) from error
        if isinstance(loaded, dict) and isinstance(
            loaded.get("state_dict"), dict
        ):  # {"state_dict": ...} wrappers
            loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise SubmissionError(
            f"{name}: expected a state_dict (a mapping of parameter names to tensors), got "
            f"{type(loaded).__name__}"
        )
    bad = [
        key
        for key, value in loaded.items()
        if not isinstance(key, str) or not isinstance(value, torch.Tensor)
    ]
    if bad:
        raise SubmissionError(
            f"{name}: expected a state_dict of tensors; entries {bad[:3]} are not tensors"
        )
    not_finite = [
        key
        for key, value in loaded.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if not_finite:
        raise SubmissionError(
            f"{name}: refused: tensor(s) {not_finite[:3]} hold NaN or infinite values"
        )
    return loaded


def check_archive(name: str, data: bytes) -> None:
    """A ``.pt`` in torch's zip format must match its CRC-32 checksums
    (catches bytes damaged in transfer)."""
    if not data.startswith(b"PK"):
        return  # torch's legacy format: no checksums to verify
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise SubmissionError(f"{name}: refused: not a readable torch archive ({error})") from error
    if damaged is not None:
        raise SubmissionError(
            f"{name}: refused: the archive is damaged (checksum mismatch in "
            f"{PurePath(damaged).name!r})"
        )


def check_dtypes(
    name: str, state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    """Floating-point parameters and buffers must come as floating-point tensors
    (no silent cast from integers)."""
    wrong = [
        key
        for key, value in state_dict.items()
        if key in expected and expected[key].is_floating_point() and not value.is_floating_point()
    ]
    if wrong:
        found = ", ".join(f"{key} ({state_dict[key].dtype})" for key in wrong[:3])
        raise SubmissionError(
            f"{name}: refused: {found} must be floating-point tensors, like the "
            "architecture's parameters"
        )


def checked_checkpoint(
    name: str,
    data: bytes,
    architecture: str,
    num_classes: int,
    mean: list[float],
    std: list[float],
    limit: int = MAX_UPLOAD_BYTES,
) -> dict:
    """A classifier checkpoint (see ``cgd_kedro.models.classifier``) from an upload,
    after every check."""
    check_file_name(name)
    check_size(len(data), limit)
    try:
        check_architecture(architecture)
    except ValueError as error:
        raise SubmissionError(str(error)) from error
    state_dict = read_state_dict(name, data)
    check_dtypes(
        name, state_dict, build_classifier(architecture, num_classes, mean, std).net.state_dict()
    )
    checkpoint = {
        "architecture": architecture,
        "num_classes": num_classes,
        "mean": mean,
        "std": std,
        "state_dict": {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()},
    }
    try:
        from_checkpoint(checkpoint, "cpu", source=name)
    except ValueError as error:
        raise SubmissionError(str(error)) from error
    return checkpoint


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, if it lies inside ``root``; a guard before every write."""
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise SubmissionError(f"refused to write {path}: outside {base}")
    return resolved
