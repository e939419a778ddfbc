"""Image-folder datasets: ``root/train/<class>/*`` and ``root/test/<class>/*``, the layout most
users keep their own data in (and the layout of the shared CIFAR-10 JPEG export).

Class order is the order of the lines of ``root/classes.txt`` when that file exists (one folder
name per line), else the sorted folder names of ``root/train``; folder names become class names
with underscores read as spaces ("aquarium_fish" -> "aquarium fish"), so they work in prompts.

Every file is checked before anything is decoded into the dataset, and every problem is an error
that names the file or folder, raised before any training:

- ``root/train`` or ``root/test`` missing, or a class folder without images;
- the class sets of ``train`` and ``test`` differ (or differ from ``classes.txt``);
- a file that is not an image (by suffix; hidden files such as ``.DS_Store`` are skipped), or an
  image file that does not decode;
- an image that is not RGB, or whose size differs from the first image's (when ``image_size`` is
  ``None``; with ``image_size`` set, every image is resized to it, as the GTSRB reader does).

Decoding shows a progress bar. Files are read in sorted order, so the result is the same on every
machine; ``max_per_class`` keeps the first images of each class in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from cgd_kedro.data.imageset import ImageSet, make_image_set

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"})
CLASSES_FILE = "classes.txt"
SPLITS = ("train", "test")


def is_image_folder(root: Path) -> bool:
    """Whether ``root`` looks like an image-folder dataset (``train/`` and ``test/`` folders)."""
    return all((Path(root) / split).is_dir() for split in SPLITS)


def class_folders(root: str | Path) -> list[str]:
    """The class folder names in class order (``classes.txt``, else sorted ``train/`` folders),
    after checking that ``train/`` and ``test/`` hold exactly these classes. Reads no image."""
    root = Path(root)
    for split in SPLITS:
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"dataset.root: expected an image folder with '{split}/<class>/<image>' under "
                f"'{root}'; missing '{root / split}'"
            )
    found: dict[str, list[str]] = {}
    for split in SPLITS:
        entries = [p for p in sorted((root / split).iterdir()) if not p.name.startswith(".")]
        strays = [p for p in entries if not p.is_dir()]
        if strays:
            raise ValueError(
                f"'{strays[0]}': a file directly under {split}/; images belong in class folders "
                f"({split}/<class>/<image>)"
            )
        found[split] = [p.name for p in entries]
    if not found["train"]:
        raise ValueError(
            f"'{root / 'train'}': no class folders found (expected train/<class>/<image>)"
        )
    classes_file = root / CLASSES_FILE
    if classes_file.is_file():
        order = [
            line.strip()
            for line in classes_file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if len(set(order)) != len(order) or len(order) < 2:
            raise ValueError(
                f"'{classes_file}': expected at least two distinct class folder names, one per line"
            )
    else:
        order = found["train"]
    for split in SPLITS:
        only_listed = sorted(set(order) - set(found[split]))
        only_here = sorted(set(found[split]) - set(order))
        if only_listed or only_here:
            reference = f"'{classes_file}'" if classes_file.is_file() else f"'{root / 'train'}'"
            raise ValueError(
                f"'{root / split}': its class folders differ from those of {reference}: "
                f"missing {only_listed}, extra {only_here}"
            )
    if len(order) < 2:
        raise ValueError(
            f"'{root / 'train'}': found {len(order)} class folder; a classifier needs at least two"
        )
    return order


def class_names_of(folders: Sequence[str]) -> list[str]:
    return [name.replace("_", " ") for name in folders]


def list_images(
    split_dir: Path, folders: Sequence[str], max_per_class: int | None = None
) -> tuple[list[Path], list[int]]:
    """Image paths and labels of one split, class by class in sorted file order; errors name the
    first non-image file or empty class folder."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        class_dir = split_dir / folder
        files = sorted(p for p in class_dir.iterdir() if not p.name.startswith("."))
        for path in files:
            if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
                kind = "a folder" if path.is_dir() else "not an image file"
                raise ValueError(
                    f"'{path}': {kind} in a class folder (image suffixes: {sorted(IMAGE_SUFFIXES)})"
                )
        if not files:
            raise ValueError(f"'{class_dir}': class folder contains no images")
        files = files[:max_per_class] if max_per_class else files
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _decode(path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB pixels of one file; anything else is an error naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            mode, array = image.mode, np.array(image)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise ValueError(f"'{path}': cannot decode image ({exc})") from exc
    if mode != "RGB":
        raise ValueError(
            f"'{path}': image mode {mode!r}; expected RGB (convert the file, e.g. with "
            "PIL's convert('RGB'))"
        )
    return array


def decode_images(
    paths: Sequence[Path], image_size: int | None = None, description: str = "decode"
) -> Tensor:
    """Decode ``paths`` into one uint8 ``N x 3 x S x S`` tensor, with a progress bar.

    ``image_size`` ``None``: every image must have the first image's size (an error names the first
    that does not); otherwise each image is resized (bilinear, antialiased) to ``image_size``.
    """
    if not paths:
        raise ValueError("decode_images: no image paths given")
    first = _decode(paths[0])
    height, width = (image_size, image_size) if image_size else first.shape[:2]
    images = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)
    for i, path in enumerate(
        tqdm(paths, desc=description, unit="img", disable=None, leave=False, mininterval=1.0)
    ):
        array = first if i == 0 else _decode(path)
        pixels = torch.from_numpy(array).permute(2, 0, 1)
        if image_size:
            pixels = _resize(pixels, image_size)
        elif array.shape[:2] != (height, width):
            raise ValueError(
                f"'{path}': image is {array.shape[1]}x{array.shape[0]} px but '{paths[0]}' is "
                f"{width}x{height}; every image must have the same size (or set "
                "dataset.image_size to resize them all)"
            )
        images[i] = pixels
    return images


def _resize(pixels: Tensor, size: int) -> Tensor:
    if tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    return F.interpolate(
        pixels.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]


def load_image_folder(
    root: str | Path,
    image_size: int | None = None,
    max_per_class: int | None = None,
    max_test_per_class: int | None = None,
) -> tuple[ImageSet, ImageSet, list[str]]:
    """``(train_set, test_set, class_names)`` of the image folder at ``root``.

    Every file of both splits is listed and checked (suffixes, class sets) before the first image
    is decoded; the test images are decoded at the training images' size.
    """
    root = Path(root).expanduser()
    folders = class_folders(root)
    listed = {
        "train": list_images(root / "train", folders, max_per_class),
        "test": list_images(root / "test", folders, max_test_per_class),
    }
    sets = []
    for split in SPLITS:
        paths, labels = listed[split]
        images = decode_images(paths, image_size, description=f"decode {split}")
        if sets and images.shape[-2:] != sets[0]["images"].shape[-2:]:
            train_h, train_w = sets[0]["images"].shape[-2:]
            raise ValueError(
                f"'{paths[0]}': test images are {images.shape[-1]}x{images.shape[-2]} px, training "
                f"images {train_w}x{train_h}; set dataset.image_size to resize both"
            )
        sets.append(make_image_set(images, torch.tensor(labels, dtype=torch.int64)))
    logger.info(
        "Read image folder '%s': %d train and %d test images of %d classes, %s px",
        root,
        len(sets[0]["labels"]),
        len(sets[1]["labels"]),
        len(folders),
        "x".join(map(str, sets[0]["images"].shape[-2:])),
    )
    return sets[0], sets[1], class_names_of(folders)
