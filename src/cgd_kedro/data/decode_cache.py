"""Decode a real dataset once: decoded tensors are kept as a safetensors file named by a
fingerprint of the source files (relative path, size, modification time) and the reading settings.

Decoding 60,000 JPEGs takes a while; loading the decoded tensors takes a second. A changed,
added or removed source file, or other settings (``image_size``, ``max_per_class``, ...), give
another fingerprint and so another file. The file is written to a temporary name and renamed,
so a run killed while writing it leaves no partial cache entry; it is read with safetensors,
which runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.datasets.atomic import save_safetensors

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the decoded representation changes
Decoded = tuple[ImageSet, ImageSet, list[str]]


def source_fingerprint(settings: dict, sources: Iterable[Path]) -> str:
    """sha256 over ``settings`` and every file under ``sources``
    (files or folders; missing ones count as absent)."""
    digest = hashlib.sha256(
        json.dumps({"cache_format": CACHE_FORMAT, **settings}, sort_keys=True).encode()
    )
    for source in sources:
        source = Path(source)
        digest.update(f"\0{source.resolve()}".encode())
        if source.is_file():
            files = [source]
        elif source.is_dir():
            files = sorted(
                Path(dirpath) / name for dirpath, _, names in os.walk(source) for name in names
            )
        else:
            files = []
        for path in files:
            stat = path.stat()
            digest.update(
                (
                    f"\0{path.relative_to(source) if path != source else ''}"
                    f"\0{stat.st_size}\0{stat.st_mtime_ns}"
                ).encode()
            )
    return digest.hexdigest()


def cached_decode(
    cache_dir: Path, settings: dict, sources: Iterable[Path], decode: Callable[[], Decoded]
) -> Decoded:
    """``decode()``, or the tensors a previous call with the same fingerprint saved
    in ``cache_dir``."""
    fingerprint = source_fingerprint(settings, sources)
    path = Path(cache_dir) / f"{settings.get('name', 'dataset')}-{fingerprint[:20]}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as file:  # the class names live in the header
                metadata = file.metadata() or {}
            class_names = json.loads(metadata["class_names"])
            train = {
                k.removeprefix("train."): v for k, v in tensors.items() if k.startswith("train.")
            }
            test = {k.removeprefix("test."): v for k, v in tensors.items() if k.startswith("test.")}
            log.info(
                "dataset: loaded the decoded images from the cache '%s' "
                "(delete it to decode again)",
                path,
            )
            return train, test, class_names
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            log.warning(
                "dataset: ignoring the unreadable cache entry '%s' (%s); decoding again",
                path,
                error,
            )
    train, test, class_names = decode()
    tensors = {f"train.{k}": v for k, v in train.items()} | {
        f"test.{k}": v for k, v in test.items()
    }
    save_safetensors(
        path, tensors, {"class_names": json.dumps(class_names), "settings": json.dumps(settings)}
    )
    log.info("dataset: decoded images cached in '%s'", path)
    return train, test, class_names
