"""Read a BackdoorBench attack record (``attack_result.pt`` plus its saved PNGs) as image sets.

BackdoorBench (v2, ``utils/save_load_attack.py``) stores an attack run in a record folder::

    <record>/attack_result.pt           torch.save'd dict, see below
    <record>/bd_train_dataset/<original label>/<index>.png   poisoned (and cover) training images
    <record>/bd_test_dataset/<original label>/<index>.png    triggered test images

``attack_result.pt`` is a dict with ``model_name``, ``num_classes``, ``model`` (state_dict),
``data_path``, ``img_size`` (``[H, W, C]``), ``clean_data`` (dataset name) and ``bd_train`` /
``bd_test``, each the ``retrieve_state()`` of a ``prepro_cls_DatasetBD_v2``::

    {"original_index_array": ndarray,   # the rows of the set, as indices into the clean dataset
     "poison_indicator": ndarray,       # per clean index: 0 clean, 1 poisoned, 2 cover ("cross")
     "bd_data_container": {"save_folder_path": str, "save_file_format": ".png",
                           "data_dict": {index: {"path": str, "other_info": [bd_label, label]}}},
     ...}

A row whose indicator is non-zero takes its image and given label from the container; every other
row is the clean image with its clean label. The clean images are not in the record (BackdoorBench
rebuilds them from ``data_path``), so the caller passes the clean train and test image sets, in
the order BackdoorBench's own loader uses (torchvision order for CIFAR).

The file is read with ``torch.load(weights_only=True)``; only the numpy globals needed to rebuild
plain numeric arrays and scalars are allow-listed, so a tampered record cannot run code.
``data_dict`` entries are also accepted in the form ``{"bd_img": path, "bd_label": int,
"original_target": int}``. In-memory containers (``save_folder_path`` ``None``, which pickle PIL
images) and the v1 format (inline ``x``/``y`` tensors) are not supported.

Errors: a missing record or PNG raises ``FileNotFoundError`` naming the path; a file that is not a
(supported) attack result, or that does not fit the given clean sets, raises ``ValueError`` naming
the file.
"""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cgd_kedro.data.imageset import ImageSet, make_image_set, validate_image_set
from cgd_kedro.models.classifier import Checkpoint, from_checkpoint
from cgd_kedro.models.registry import list_models

logger = logging.getLogger(__name__)

RESULT_FILE = "attack_result.pt"

_REQUIRED_KEYS = (
    "model_name",
    "num_classes",
    "model",
    "data_path",
    "img_size",
    "clean_data",
    "bd_train",
    "bd_test",
)
_SET_KEYS = ("original_index_array", "poison_indicator", "bd_data_container")
_SUBFOLDERS = {"bd_train": "bd_train_dataset", "bd_test": "bd_test_dataset"}

# BackdoorBench's per-dataset input normalisation (``get_dataset_normalization``), by dataset name.
BACKDOORBENCH_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "gtsrb": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "celeba": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# BackdoorBench dataset names -> this project's (cgd_kedro.data.real) names, where they differ.
_DATASET_NAMES = {"tiny": "tinyimagenet"}

# BackdoorBench model names -> registered architectures, where they differ (same name otherwise).
BACKDOORBENCH_MODELS: dict[str, str] = {"preactresnet18": "preactresnet18"}

# BackdoorBench attack script names (attack/<name>.py), longest first so "poison_ink" beats "ink".
BACKDOORBENCH_ATTACKS = tuple(
    sorted(
        ("badnet", "blended", "blind", "bpp", "ctrl", "ftrojan", "inputaware", "lc", "lf", "lira",
         "poison_ink", "refool", "sig", "ssba", "trojannn", "wanet"),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# ... and where this project spells an attack differently.
_ATTACK_NAMES = {"badnet": "badnets"}


# --- safe loading ---------------------------------------------------------------------------------


def _numpy_safe_globals() -> list[Any]:
    """What ``torch.load(weights_only=True)`` needs to rebuild numeric numpy arrays and scalars.

    Files written under numpy 1.x name ``numpy.core.multiarray``; numpy 2.x writes
    ``numpy._core.multiarray``. Both names are mapped to the running numpy's functions. Object
    arrays are not allowed (their dtype class is not listed).
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype]
    for package in ("numpy.core", "numpy._core"):
        allowed.append((multiarray._reconstruct, f"{package}.multiarray._reconstruct"))
        allowed.append((multiarray.scalar, f"{package}.multiarray.scalar"))
    # BUILD (__setstate__) on a dtype needs its concrete class (numpy >= 1.25: numpy.dtypes.*).
    codes = "?bBhHiIlLqQefdg"
    allowed += sorted({type(np.dtype(code)) for code in codes}, key=lambda cls: cls.__name__)
    return allowed


_BOILERPLATE = ("Weights only load failed", "(1)", "(2)", "Check the documentation")


def _load_error_reason(exc: Exception) -> str:
    """The informative line of a ``torch.load`` error (weights-only errors are mostly advice)."""
    for line in str(exc).splitlines():
        line = line.strip().split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(_BOILERPLATE):
            return line.split(" Please use `torch.serialization")[0]
    return type(exc).__name__


def _not_a_result(path: Path, detail: str) -> ValueError:
    return ValueError(f"'{path}' is not a BackdoorBench attack result: {detail}")


def read_attack_result(path: str | Path) -> dict[str, Any]:
    """Load ``attack_result.pt`` safely and check its top-level structure.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` naming ``path`` if
    it is not a loadable dict with BackdoorBench's keys (the file's code is never run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BackdoorBench record: missing '{path}'")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            result = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # corrupt zip, refused global, truncated pickle, ...
        raise _not_a_result(
            path, f"it cannot be loaded safely ({_load_error_reason(exc)})"
        ) from exc
    if not isinstance(result, dict):
        raise _not_a_result(path, f"expected a dict, got {type(result).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in result]
    if missing:
        hint = ""
        if isinstance(result.get("bd_train"), dict) and "x" in result["bd_train"]:
            hint = (
                " (this looks like the older v1 format with inline 'x'/'y' tensors, "
                "which is not supported)"
            )
        raise _not_a_result(path, f"missing key(s) {missing}{hint}")
    return result


# --- small validators -----------------------------------------------------------------------------


def _as_int(value: Any, what: str, path: Path) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
            return int(value.item())
        raise _not_a_result(path, f"{what} must be an integer, got {value!r}") from None


def _field(record: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(record, Mapping):
        raise _not_a_result(path, f"{where} must be a dict, got {type(record).__name__}")
    if key not in record:
        raise _not_a_result(path, f"{where} lacks key '{key}'")
    return record[key]


def _int_array(value: Any, what: str, path: Path) -> np.ndarray:
    """A 1-D integer array from a numpy array, tensor or list holding whole numbers."""
    if isinstance(value, Tensor):
        value = value.numpy()
    array = np.asarray(value)
    numeric = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)
    if array.ndim != 1 or not numeric or np.issubdtype(array.dtype, np.complexfloating):
        raise _not_a_result(
            path, f"{what} must be a 1-D numeric array, got {array.dtype} {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.all(
        np.isfinite(array) & (array == np.round(array))
    ):
        raise _not_a_result(path, f"{what} must hold whole numbers")
    return array.astype(np.int64)


def _size(img_size: Any, path: Path) -> tuple[int, ...]:
    if isinstance(img_size, (str, bytes)) or not isinstance(
        img_size, (Sequence, np.ndarray, Tensor)
    ):
        raise _not_a_result(path, f"img_size must be [H, W, C], got {img_size!r}")
    size = tuple(_as_int(v, "img_size", path) for v in img_size)
    if len(size) not in (2, 3) or min(size) < 1:
        raise _not_a_result(path, f"img_size must be [H, W, C], got {list(size)}")
    return size


def guess_attack(record_name: str) -> str:
    """The attack a BackdoorBench record folder is named after (``badnet_0_1`` -> ``badnets``).

    Names are those of BackdoorBench's attack scripts, spelled as this project spells them; a name
    that matches none of them gives ``"unknown"``.
    """
    lowered = record_name.lower()
    for name in BACKDOORBENCH_ATTACKS:
        if re.search(rf"(?<![a-z]){re.escape(name)}(?![a-z])", lowered):
            return _ATTACK_NAMES.get(name, name)
    return "unknown"


# --- the poisoned sets ----------------------------------------------------------------------------


def _entry(value: Any, where: str, path: Path) -> tuple[str, int, int]:
    """``(png path, bd_label, original_label)`` of one ``data_dict`` entry."""
    if not isinstance(value, Mapping):
        raise _not_a_result(
            path,
            f"{where} must be a dict with 'path' and 'other_info' (only on-disk containers are "
            f"supported), got {type(value).__name__}",
        )
    if "path" in value:
        png = value["path"]
        info = _field(value, "other_info", where, path)
        if isinstance(info, (str, bytes)) or not isinstance(info, Sequence) or len(info) < 2:
            raise _not_a_result(
                path, f"{where}['other_info'] must be [bd_label, original_label], got {info!r}"
            )
        bd_label, original = info[0], info[1]
    elif "bd_img" in value:
        png = value["bd_img"]
        bd_label = _field(value, "bd_label", where, path)
        original = value.get("original_target", value.get("original_label"))
        if original is None:
            raise _not_a_result(path, f"{where} lacks key 'original_target'")
    else:
        raise _not_a_result(path, f"{where} lacks key 'path'")
    if not isinstance(png, (str, Path)):
        raise _not_a_result(path, f"{where}: image path must be a string, got {png!r}")
    return (
        str(png),
        _as_int(bd_label, f"{where} bd_label", path),
        _as_int(original, f"{where} original label", path),
    )


def _resolve_png(png: str, record_dir: Path, subfolders: Sequence[str]) -> Path:
    """Find a saved image: as given, relative to the record, or below its bd_*_dataset folder.

    BackdoorBench writes paths relative to the working directory of the attack run (for example
    ``./record/badnet_0_1/bd_train_dataset/3/17.png``), or absolute paths on the attacking machine.
    """
    given = Path(png)
    candidates = [given] if given.is_absolute() else [record_dir / given]
    for folder in subfolders:
        if folder in given.parts:  # the part from the last bd_*_dataset component on
            at = len(given.parts) - 1 - given.parts[::-1].index(folder)
            candidates.append(record_dir.joinpath(*given.parts[at:]))
        if not given.is_absolute():
            candidates.append(record_dir / folder / given)
        candidates.append(record_dir.joinpath(folder, *given.parts[-2:]))  # <label>/<index>.png
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"BackdoorBench record '{record_dir}': image '{png}' not found "
        f"(looked for {', '.join(repr(str(c)) for c in dict.fromkeys(candidates))})"
    )


def _read_png(path: Path, channels: int, height: int, width: int) -> Tensor:
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types
        raise ValueError(f"cannot read image '{path}': {exc}") from exc
    if array.shape[:2] != (height, width):
        raise ValueError(
            f"image '{path}' is {array.shape[1]}x{array.shape[0]} (WxH) but the clean set's images "
            f"are {width}x{height}"
        )
    tensor = torch.from_numpy(array)
    return tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor.unsqueeze(0)


def _build_set(
    result: dict,
    key: str,
    clean: ImageSet,
    clean_name: str,
    num_classes: int,
    record_dir: Path,
    path: Path,
) -> ImageSet:
    """Rebuild BackdoorBench's ``key`` set (``bd_train`` or ``bd_test``) on top of ``clean``."""
    state = result[key]
    if state is None:
        raise _not_a_result(path, f"'{key}' is None (the attack saved no {key} set)")
    index = _int_array(
        _field(state, "original_index_array", f"'{key}'", path),
        f"{key}['original_index_array']",
        path,
    )
    indicator = _int_array(
        _field(state, "poison_indicator", f"'{key}'", path), f"{key}['poison_indicator']", path
    )
    container = _field(state, "bd_data_container", f"'{key}'", path)
    data_dict = _field(container, "data_dict", f"{key}['bd_data_container']", path)
    if not isinstance(data_dict, Mapping):
        raise _not_a_result(path, f"{key}['bd_data_container']['data_dict'] must be a dict")

    n_clean = clean["labels"].shape[0]
    if indicator.shape[0] != n_clean:
        raise ValueError(
            f"'{path}': {key}['poison_indicator'] has {indicator.shape[0]} entries but "
            f"{clean_name} has {n_clean} images; pass the clean dataset the attack used "
            f"('{result['clean_data']}')"
        )
    if not np.isin(indicator, (0, 1, 2)).all():
        raise _not_a_result(
            path,
            f"{key}['poison_indicator'] must hold 0, 1 or 2, got {sorted(set(indicator.tolist()))}",
        )
    if index.size and (index.min() < 0 or index.max() >= n_clean):
        raise ValueError(
            f"'{path}': {key}['original_index_array'] points outside "
            f"{clean_name} ({n_clean} images)"
        )

    entries = {}
    for raw_key, value in data_dict.items():
        entries[_as_int(raw_key, f"{key} data_dict key", path)] = value

    clean_labels = clean["labels"]
    _, channels, height, width = clean["images"].shape
    rows = torch.from_numpy(index)
    images = clean["images"][rows]  # advanced indexing copies
    labels = clean_labels[rows]
    saved_in = Path(str(container.get("save_folder_path") or "")).name
    folders = [folder for folder in dict.fromkeys([saved_in, _SUBFOLDERS[key]]) if folder]
    mismatches = []
    for row in np.flatnonzero(indicator[index] != 0).tolist():
        original_index = int(index[row])
        if original_index not in entries:
            raise _not_a_result(
                path,
                f"{key} marks index {original_index} as poisoned but its "
                "data_dict has no entry for it",
            )
        where = f"{key} data_dict[{original_index}]"
        png, bd_label, original = _entry(entries[original_index], where, path)
        for label, what in ((bd_label, "bd_label"), (original, "original label")):
            if not 0 <= label < num_classes:
                raise _not_a_result(path, f"{where}: {what} {label} outside [0, {num_classes})")
        if original != int(clean_labels[original_index]):
            mismatches.append((original_index, original, int(clean_labels[original_index])))
        images[row] = _read_png(_resolve_png(png, record_dir, folders), channels, height, width)
        labels[row] = bd_label
    if mismatches:
        i, recorded, found = mismatches[0]
        raise ValueError(
            f"'{path}': {len(mismatches)} {key} sample(s) have another original label than in "
            f"{clean_name} (index {i}: {recorded} in the record, {found} in {clean_name}); pass "
            f"the clean dataset the attack used ('{result['clean_data']}') in BackdoorBench's order"
        )
    flags = torch.from_numpy(indicator[index])
    return make_image_set(
        images, labels, original_labels=clean_labels[rows], poison=flags == 1, cover=flags == 2
    )


# --- the victim model -----------------------------------------------------------------------------


def _victim_checkpoint(
    result: dict,
    num_classes: int,
    path: Path,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> tuple[Checkpoint, str]:
    model_name = result["model_name"]
    if not isinstance(model_name, str):
        raise _not_a_result(path, f"model_name must be a string, got {model_name!r}")
    architecture = BACKDOORBENCH_MODELS.get(model_name, model_name)
    if architecture not in list_models():
        raise ValueError(
            f"'{path}': BackdoorBench model_name {model_name!r} has no registered architecture; "
            f"registered models: {list_models()}"
        )
    if (mean is None) != (std is None):
        raise ValueError("normalization: give both mean and std, or neither")
    if mean is None:
        clean_data = result["clean_data"]
        if clean_data not in BACKDOORBENCH_NORMALIZATION:
            raise ValueError(
                f"normalization: no default mean/std for clean_data {clean_data!r} in '{path}'; "
                f"pass mean and std (defaults exist for {sorted(BACKDOORBENCH_NORMALIZATION)})"
            )
        mean, std = BACKDOORBENCH_NORMALIZATION[clean_data]
    state_dict = result["model"]
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state_dict.items()
    ):
        raise _not_a_result(path, "'model' must be a state_dict (names -> tensors)")
    checkpoint = {
        "architecture": architecture,
        "num_classes": num_classes,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        # Weights saved from a DataParallel model carry a "module." prefix
        # (BackdoorBench strips it too).
        "state_dict": {k.removeprefix("module."): v for k, v in state_dict.items()},
    }
    # raises ValueError if the weights do not fit
    from_checkpoint(checkpoint, source=f"'{path}' model")
    return checkpoint, model_name


# --- entry point ----------------------------------------------------------------------------------


def load_backdoorbench_result(
    record_dir: str | Path,
    clean_train: ImageSet,
    clean_test: ImageSet,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Read the BackdoorBench record in ``record_dir`` (or the ``attack_result.pt`` path itself).

    ``clean_train`` / ``clean_test`` are the clean image sets the attack started from, in
    BackdoorBench's order (torchvision order for CIFAR). Returns::

        {"poisoned_train": image set (clean images with the saved ones substituted; labels = given
                           labels; original_labels; poison = indicator 1; cover = indicator 2),
         "backdoor_test":  image set of the triggered test images (labels = the attacker's labels,
                           original_labels = the truth; poison/cover flags as above),
         "victim_model":   classifier checkpoint (see cgd_kedro.models.classifier),
         "info":           {"attack", "record_name", "clean_data", "dataset", "num_classes",
                            "img_size", "model_name", "architecture", "data_path",
                            "n_poison", "n_cover", "n_backdoor_test"}}

    ``mean`` / ``std`` override the model's input normalisation (default: BackdoorBench's for
    ``clean_data``). Note that BackdoorBench's WaNet saves its noise-mode (cross) samples with
    indicator 1, so they count as poison here although their label is unchanged.
    """
    path = Path(record_dir).expanduser()
    if path.is_dir() or path.name != RESULT_FILE:
        path = path / RESULT_FILE
    record = path.parent
    validate_image_set(clean_train, "clean_train")
    validate_image_set(clean_test, "clean_test")
    result = read_attack_result(path)

    num_classes = _as_int(result["num_classes"], "num_classes", path)
    if num_classes < 2:
        raise _not_a_result(path, f"num_classes must be >= 2, got {num_classes}")
    img_size = _size(result["img_size"], path)
    if not isinstance(result["clean_data"], str):
        raise _not_a_result(
            path, f"clean_data must be a dataset name, got {result['clean_data']!r}"
        )
    for name, clean in (("clean_train", clean_train), ("clean_test", clean_test)):
        if tuple(clean["images"].shape[-2:]) != img_size[:2]:
            raise ValueError(
                f"'{path}': img_size is {list(img_size)} but {name} has "
                f"{'x'.join(map(str, clean['images'].shape[-2:]))} images"
            )
        if clean["labels"].numel() and int(clean["labels"].max()) >= num_classes:
            raise ValueError(f"'{path}': {name} has labels >= num_classes ({num_classes})")

    victim_model, model_name = _victim_checkpoint(result, num_classes, path, mean, std)
    poisoned_train = _build_set(
        result, "bd_train", clean_train, "clean_train", num_classes, record, path
    )
    backdoor_test = _build_set(
        result, "bd_test", clean_test, "clean_test", num_classes, record, path
    )

    info = {
        "attack": guess_attack(record.name),
        "record_name": record.name,
        "clean_data": result["clean_data"],
        "dataset": _DATASET_NAMES.get(result["clean_data"], result["clean_data"]),
        "num_classes": num_classes,
        "img_size": list(img_size),
        "model_name": model_name,
        "architecture": victim_model["architecture"],
        "data_path": str(result["data_path"]),
        "n_poison": int(poisoned_train["poison"].sum()),
        "n_cover": int(poisoned_train["cover"].sum()),
        "n_backdoor_test": int(backdoor_test["labels"].shape[0]),
    }
    logger.info(
        "Read BackdoorBench record '%s' (%s on %s, %s): %d poisoned + %d cover of %d train images, "
        "%d backdoor test images",
        record,
        info["attack"],
        info["clean_data"],
        model_name,
        info["n_poison"],
        info["n_cover"],
        poisoned_train["labels"].shape[0],
        info["n_backdoor_test"],
    )
    return {
        "poisoned_train": poisoned_train,
        "backdoor_test": backdoor_test,
        "victim_model": victim_model,
        "info": info,
    }
