"""Reuse a trained model across runs when nothing it was trained from has changed.

The embedded CLIP's pretraining and the clean reference model are the slowest steps of a run and
their inputs rarely change between runs: same world, same parameters, same seed. ``cached_training``
keeps what a training returned (tensors plus a JSON-able ``info`` dict) as a safetensors file in
``runtime.cache_dir``, named by a fingerprint of

- the entry's name and the parameters that shape the training (the caller passes them),
- the seed and the device type (same seed, same device: same result; a CUDA model is not served
  to a CPU run or the other way round),
- a digest of the training data itself (image bytes, labels, captions),
- the versions of torch and of this project's source code (any edited ``.py`` file of the
  package gives a new fingerprint, so a code change never serves a stale model).

A different fingerprint is another file, never an overwrite. Files are written to a temporary
name and renamed, so a run killed while saving leaves no partial entry; they are read with
safetensors (no code runs), and an unreadable entry is ignored with a warning and trained again.
Delete the folder to clear the cache; ``runtime.cache_dir: null`` turns it off.

Runs side by side (a grid's cells of one seed on several Dask workers) that need the same entry
train it once: a lock per entry (``filelock``: the operating system's lock on a file in ``.locks/``,
released when its process ends, even killed) makes the later ones wait for the first and read what
it saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open

from cgd_kedro.datasets.atomic import save_safetensors

log = logging.getLogger(__name__)

CACHE_FORMAT = "cgd_kedro.model_cache/1"
Trained = tuple[dict[str, torch.Tensor], dict]


@cache
def source_digest() -> str:
    """sha256 of every ``.py`` file of the installed ``cgd_kedro`` package (path and content)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"\0{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def data_digest(parts: Iterable[torch.Tensor | str | Iterable[str]]) -> str:
    """sha256 over tensors (dtype, shape, bytes) and strings or lists of strings, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            digest.update(f"\0tensor {tensor.dtype} {tuple(tensor.shape)}\0".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            digest.update(
                (
                    "\0strings\0" + "\n".join([part] if isinstance(part, str) else list(part))
                ).encode()
            )
    return digest.hexdigest()


def fingerprint(name: str, settings: Mapping, seed: int, device: torch.device, data: str) -> str:
    key = {
        "format": CACHE_FORMAT,
        "name": name,
        "settings": settings,
        "seed": seed,
        "device": device.type,
        "torch": torch.__version__,
        "source": source_digest(),
        "data": data,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cached_training(
    cache_dir: str | Path | None,
    name: str,
    *,
    settings: Mapping,
    seed: int,
    device: torch.device,
    data: Iterable[torch.Tensor | str | Iterable[str]],
    train: Callable[[], Trained],
) -> tuple[dict[str, torch.Tensor], dict, bool]:
    """``train()``'s ``(tensors, info)``, or those of an earlier call with the same fingerprint.

    Args:
        cache_dir: folder of the cache entries; ``None`` trains every time and keeps nothing.
        name: what is trained (``reference_clip``, ``clean_model``); the
            entry's file name starts with it.
        settings: every parameter that shapes the result (JSON-able).
        seed, device: the run's seed and the device the training runs on.
        data: the training data (tensors, strings, lists of strings), digested into the fingerprint.
        train: trains and returns ``(tensors, info)``; ``info`` must be JSON-able.

    Returns:
        ``(tensors, info, reused)``; ``reused`` is True when the entry came from the cache.
    """
    if cache_dir is None:
        tensors, info = train()
        return tensors, info, False
    path = (
        Path(cache_dir)
        / f"{name}-{fingerprint(name, settings, seed, device, data_digest(data))[:20]}.safetensors"
    )
    locks = path.parent / ".locks"  # kept (the OS lock, not the file, is what is held)
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(locks / f"{path.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info(
            "%s: another run is training the same model ('%s' is locked); waiting to reuse it",
            name,
            lock.lock_file,
        )
        lock.acquire()
    try:
        return _read_or_train(path, name, train)
    finally:
        lock.release()


def _read_or_train(
    path: Path, name: str, train: Callable[[], Trained]
) -> tuple[dict[str, torch.Tensor], dict, bool]:
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != CACHE_FORMAT:
                    raise ValueError(
                        f"header format {metadata.get('format')!r}, expected {CACHE_FORMAT!r}"
                    )
                # a safetensors handle, not a dict: it has keys() but no iteration or `in`
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            info = json.loads(metadata["info"])
            log.info(
                "%s: reused the model trained by an earlier run with the same data and parameters "
                "('%s'; delete it to train again)",
                name,
                path,
            )
            return tensors, info, True
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            log.warning(
                "%s: ignoring the unreadable cache entry '%s' (%s); training again",
                name,
                path,
                error,
            )
    tensors, info = train()
    save_safetensors(path, tensors, {"format": CACHE_FORMAT, "info": json.dumps(info)})
    log.info("%s: cached in '%s' for later runs with the same data and parameters", name, path)
    return tensors, info, False
