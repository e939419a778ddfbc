"""Readers for real image-classification datasets stored in local directories.

Four datasets are supported, each in the on-disk layout its usual downloader leaves behind
(``root`` is the directory the user configures as ``dataset.root``):

- ``cifar10``: torchvision layout, ``root/cifar-10-batches-py/{data_batch_1..5, test_batch,
  batches.meta}``.
- ``cifar100``: torchvision layout, ``root/cifar-100-python/{train, test, meta}`` (fine labels).
- ``gtsrb``: torchvision layout, ``root/gtsrb/GTSRB/Training/<class id>/*.ppm`` for training,
  ``root/gtsrb/GTSRB/Final_Test/Images/*.ppm`` with labels in ``root/gtsrb/GT-final_test.csv``
  for testing. Images come in many sizes and are resized to ``image_size`` (default 32).
- ``tinyimagenet``: the official ``root/tiny-imagenet-200`` layout; its ``val`` split is the
  test set.

Nothing is ever downloaded. The CIFAR batches are Python pickles; they are read with a
restricted unpickler that can only rebuild numpy arrays and plain containers, so a tampered
file cannot run code. Every reader returns ``(train_set, test_set, class_names)`` with image sets
as described in :mod:`cgd_kedro.data.imageset`.

Errors: an unknown name or bad ``image_size`` raises ``ValueError``; a missing directory or file
raises ``FileNotFoundError`` naming the expected path and layout; a malformed file raises
``ValueError`` naming the file.
"""

from __future__ import annotations

import codecs
import csv
import logging
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cgd_kedro.data.imageset import ImageSet, make_image_set

logger = logging.getLogger(__name__)

RealLoader = Callable[[Path, int | None], tuple[ImageSet, ImageSet, list[str]]]

# The 43 GTSRB classes in class-id order (the wording of the benchmark's signnames.csv).
GTSRB_CLASS_NAMES: tuple[str, ...] = (
    "speed limit 20 km/h",
    "speed limit 30 km/h",
    "speed limit 50 km/h",
    "speed limit 60 km/h",
    "speed limit 70 km/h",
    "speed limit 80 km/h",
    "end of speed limit 80 km/h",
    "speed limit 100 km/h",
    "speed limit 120 km/h",
    "no passing",
    "no passing for vehicles over 3.5 tons",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 tons prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice or snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing by vehicles over 3.5 tons",
)

_CIFAR_SIZE = 32
_GTSRB_DEFAULT_SIZE = 32
_TINY_SIZE = 64


# --- shared helpers ------------------------------------------------------------------------------


def _require(what: str, root: Path, base: Path, paths: Iterable[Path]) -> None:
    """Raise ``FileNotFoundError`` for the first of ``base`` and ``paths`` that does not exist."""
    for path in (base, *paths):
        if not path.exists():
            hint = ""
            if path == base and root.name == base.name:
                hint = f"; dataset.root should be the directory containing '{base.name}'"
            raise FileNotFoundError(f"dataset.root: expected {what}; missing '{path}'{hint}")


def _resize(images: Tensor, size: int) -> Tensor:
    """Bilinear (antialiased) resize of uint8 ``N x 3 x H x W`` images to ``size x size``."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    # torch resizes uint8 directly (rounding included), which avoids a float copy of the set.
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.contiguous()


def _read_image(path: Path) -> Tensor:
    """Decode one image file as uint8 ``3 x H x W`` RGB."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset.root: image file '{path}' does not exist")
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise ValueError(f"cannot read image '{path}': {exc}") from exc
    return torch.from_numpy(array).permute(2, 0, 1)


def _read_images(paths: Sequence[Path], size: int) -> Tensor:
    """Decode ``paths`` into one uint8 ``N x 3 x size x size`` tensor, resizing where needed."""
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        images[i] = _resize(_read_image(path).unsqueeze(0), size)[0]
    return images


def _labels(values: Sequence[int]) -> Tensor:
    return torch.tensor(list(values), dtype=torch.int64)


# --- restricted unpickling (CIFAR) ---------------------------------------------------------------


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle may name: what numpy needs to rebuild arrays."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles of bytes at protocol < 3 go through codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spellings
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except those needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only numpy arrays and plain "
                "containers are allowed"
            ) from None


def _load_pickle(path: Path) -> Any:
    """Load a CIFAR pickle safely; any malformation becomes ``ValueError`` naming ``path``."""
    with path.open("rb") as file:
        try:
            # encoding="bytes" is how the CIFAR authors say to read their (Python 2) files.
            return _ArrayUnpickler(file, encoding="bytes").load()
        except Exception as exc:  # truncated/garbled pickles raise many types
            raise ValueError(f"cannot read pickle '{path}': {exc}") from exc


def _field(record: Any, key: str, path: Path) -> Any:
    """``record[key]`` where the key may be stored as ``str`` or as ``bytes``."""
    if not isinstance(record, dict):
        raise ValueError(f"'{path}': expected a pickled dict, got {type(record).__name__}")
    for candidate in (key, key.encode()):
        if candidate in record:
            return record[candidate]
    raise ValueError(f"'{path}': missing key '{key}'")


def _read_cifar_batch(path: Path, label_key: str) -> tuple[Tensor, Tensor]:
    """Images ``N x 3 x 32 x 32`` and labels ``N`` of one CIFAR batch file."""
    record = _load_pickle(path)
    data = _field(record, "data", path)
    labels = np.asarray(_field(record, label_key, path))
    row = 3 * _CIFAR_SIZE * _CIFAR_SIZE
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != row
    ):
        shape = getattr(data, "shape", None)
        raise ValueError(
            f"'{path}': 'data' must be a uint8 array of shape (N, {row}), "
            f"got {type(data).__name__} {getattr(data, 'dtype', '')} {shape}"
        )
    if (
        labels.ndim != 1
        or labels.shape[0] != data.shape[0]
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError(
            f"'{path}': '{label_key}' must be {data.shape[0]} integers, "
            f"got {labels.dtype} {labels.shape}"
        )
    images = torch.from_numpy(data.reshape(-1, 3, _CIFAR_SIZE, _CIFAR_SIZE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _read_cifar_names(path: Path, key: str) -> list[str]:
    names = _field(_load_pickle(path), key, path)
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, (str, bytes)) for n in names)
    ):
        raise ValueError(f"'{path}': '{key}' must be a non-empty list of strings")
    # Underscores as in "aquarium_fish" become spaces, so names read as text in prompts.
    return [
        (n.decode("utf-8", "replace") if isinstance(n, bytes) else n).replace("_", " ")
        for n in names
    ]


def _load_cifar(
    base: Path,
    image_size: int | None,
    train_files: Sequence[str],
    test_file: str,
    meta_file: str,
    label_key: str,
    names_key: str,
) -> tuple[ImageSet, ImageSet, list[str]]:
    class_names = _read_cifar_names(base / meta_file, names_key)
    sets = []
    for files in (train_files, (test_file,)):
        parts = [_read_cifar_batch(base / name, label_key) for name in files]
        for name, (_, labels) in zip(files, parts, strict=True):
            if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
                raise ValueError(
                    f"'{base / name}': labels must lie in [0, {len(class_names)}) "
                    f"({len(class_names)} classes in '{base / meta_file}')"
                )
        images = torch.cat([images for images, _ in parts])
        labels = torch.cat([labels for _, labels in parts])
        sets.append(make_image_set(_resize(images, image_size or _CIFAR_SIZE), labels))
    return sets[0], sets[1], class_names


# --- the four formats ----------------------------------------------------------------------------


def load_cifar10(root: Path, image_size: int | None = None) -> tuple[ImageSet, ImageSet, list[str]]:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (torchvision layout)."""
    base = root / "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    what = f"CIFAR-10 in torchvision layout at '{base}' (data_batch_1..5, test_batch, batches.meta)"
    _require(
        what, root, base, [base / name for name in (*train_files, "test_batch", "batches.meta")]
    )
    return _load_cifar(
        base, image_size, train_files, "test_batch", "batches.meta", "labels", "label_names"
    )


def load_cifar100(
    root: Path, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, list[str]]:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python`` (torchvision layout)."""
    base = root / "cifar-100-python"
    what = f"CIFAR-100 in torchvision layout at '{base}' (train, test, meta)"
    _require(what, root, base, [base / name for name in ("train", "test", "meta")])
    return _load_cifar(
        base, image_size, ["train"], "test", "meta", "fine_labels", "fine_label_names"
    )


def _gtsrb_train_files(train_dir: Path) -> tuple[list[Path], list[int]]:
    class_dirs = sorted(p for p in train_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not class_dirs:
        raise ValueError(f"'{train_dir}': no class directories (00000 .. 00042) found")
    paths: list[Path] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        label = int(class_dir.name)
        if label >= len(GTSRB_CLASS_NAMES):
            raise ValueError(f"'{class_dir}': class id {label} is not a GTSRB class (0 .. 42)")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() == ".ppm")
        if not files:
            raise ValueError(f"'{class_dir}': class directory contains no .ppm images")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _gtsrb_test_files(csv_path: Path, image_dir: Path) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    with csv_path.open(newline="", encoding="utf-8", errors="replace") as file:
        reader = csv.DictReader(file, delimiter=";")
        missing = {"Filename", "ClassId"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"'{csv_path}': header lacks column(s) {sorted(missing)}; got {reader.fieldnames}"
            )
        for row in reader:
            try:
                label = int(row["ClassId"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"'{csv_path}' line {reader.line_num}: bad ClassId {row['ClassId']!r}"
                ) from None
            if not 0 <= label < len(GTSRB_CLASS_NAMES) or not row["Filename"]:
                raise ValueError(f"'{csv_path}' line {reader.line_num}: bad row {row}")
            paths.append(image_dir / row["Filename"])
            labels.append(label)
    if not paths:
        raise ValueError(f"'{csv_path}': no test images listed")
    return paths, labels


def load_gtsrb(root: Path, image_size: int | None = None) -> tuple[ImageSet, ImageSet, list[str]]:
    """GTSRB from ``root/gtsrb`` (torchvision layout); every image resized to ``image_size``."""
    base = root / "gtsrb"
    train_dir = base / "GTSRB" / "Training"
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_csv = base / "GT-final_test.csv"
    what = (
        f"GTSRB in torchvision layout at '{base}' (GTSRB/Training/<class id>/*.ppm, "
        "GTSRB/Final_Test/Images/*.ppm, GT-final_test.csv)"
    )
    _require(what, root, base, [train_dir, test_dir, test_csv])
    size = image_size or _GTSRB_DEFAULT_SIZE
    sets = []
    for paths, labels in (_gtsrb_train_files(train_dir), _gtsrb_test_files(test_csv, test_dir)):
        sets.append(make_image_set(_read_images(paths, size), _labels(labels)))
    return sets[0], sets[1], list(GTSRB_CLASS_NAMES)


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _read_lines(path: Path) -> list[str]:
    """The non-blank lines of ``path``, stripped."""
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def _tiny_classes(base: Path) -> tuple[list[str], list[str]]:
    """Class ids (order of ``wnids.txt``) and names (first synonym in ``words.txt``)."""
    wnids = _read_lines(base / "wnids.txt")
    if not wnids or len(set(wnids)) != len(wnids):
        raise ValueError(f"'{base / 'wnids.txt'}': expected a non-empty list of distinct class ids")
    words = {}
    for line in _read_lines(base / "words.txt"):
        wnid, _, synonyms = line.partition("\t")
        words[wnid.strip()] = synonyms.split(",")[0].strip()
    missing = [wnid for wnid in wnids if not words.get(wnid)]
    if missing:
        raise ValueError(f"'{base / 'words.txt'}': no name for class id(s) {missing[:5]}")
    return wnids, [words[wnid] for wnid in wnids]


def _tiny_train_files(train_dir: Path, wnids: Sequence[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        image_dir = train_dir / wnid / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"dataset.root: Tiny ImageNet class directory '{image_dir}' does not exist"
            )
        files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
        if not files:
            raise ValueError(f"'{image_dir}': class directory contains no JPEG images")
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _tiny_val_files(
    annotations: Path, image_dir: Path, wnids: Sequence[str]
) -> tuple[list[Path], list[int]]:
    index = {wnid: i for i, wnid in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(_read_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in index:
            raise ValueError(
                f"'{annotations}' line {number}: expected 'filename<TAB>known wnid<TAB>...', "
                f"got {line!r}"
            )
        paths.append(image_dir / fields[0].strip())
        labels.append(index[fields[1].strip()])
    if not paths:
        raise ValueError(f"'{annotations}': no validation images listed")
    return paths, labels


def load_tinyimagenet(
    root: Path, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, list[str]]:
    """Tiny ImageNet from ``root/tiny-imagenet-200``; its labelled ``val`` split is the test set."""
    base = root / "tiny-imagenet-200"
    annotations = base / "val" / "val_annotations.txt"
    what = (
        f"Tiny ImageNet in its official layout at '{base}' (wnids.txt, words.txt, "
        "train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt)"
    )
    _require(
        what,
        root,
        base,
        [
            base / "wnids.txt",
            base / "words.txt",
            base / "train",
            base / "val" / "images",
            annotations,
        ],
    )
    wnids, class_names = _tiny_classes(base)
    size = image_size or _TINY_SIZE
    sets = []
    for paths, labels in (
        _tiny_train_files(base / "train", wnids),
        _tiny_val_files(annotations, base / "val" / "images", wnids),
    ):
        sets.append(make_image_set(_read_images(paths, size), _labels(labels)))
    return sets[0], sets[1], class_names


# The folder each native layout keeps under ``dataset.root`` (how
# ``dataset.format: auto`` recognises it).
NATIVE_LAYOUT_DIR: dict[str, str] = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "gtsrb": "gtsrb",
    "tinyimagenet": "tiny-imagenet-200",
}

REAL_DATASETS: dict[str, RealLoader] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "gtsrb": load_gtsrb,
    "tinyimagenet": load_tinyimagenet,
}


def load_real_dataset(
    name: str, root: str | Path, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, list[str]]:
    """Read dataset ``name`` (a key of ``REAL_DATASETS``) from local directory ``root``.

    Returns ``(train_set, test_set, class_names)``. ``image_size`` ``None`` keeps the native size
    (32 for CIFAR, 32 for GTSRB whose images vary, 64 for Tiny ImageNet); otherwise every image
    is resized (bilinear, antialiased) to ``image_size x image_size``.
    """
    if name not in REAL_DATASETS:
        raise ValueError(
            f"dataset.name: unknown real dataset {name!r}; choose one of {sorted(REAL_DATASETS)}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(
            f"dataset.image_size: expected a positive integer or null, got {image_size!r}"
        )
    root = Path(root).expanduser()
    train_set, test_set, class_names = REAL_DATASETS[name](root, image_size)
    logger.info(
        "Read %s from '%s': %d train and %d test images of %d classes, %s px",
        name,
        root,
        len(train_set["labels"]),
        len(test_set["labels"]),
        len(class_names),
        "x".join(map(str, train_set["images"].shape[-2:])),
    )
    return train_set, test_set, class_names
