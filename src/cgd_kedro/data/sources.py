"""Where the classification data comes from: the embedded world or a real local dataset.

Configured by the ``dataset`` parameters (``conf/base/parameters.yml``; each real dataset's
Kedro environment overrides ``name`` and ``root``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from cgd_kedro.config import MAX_IMAGES, ParameterModel
from cgd_kedro.data import world
from cgd_kedro.data.decode_cache import cached_decode
from cgd_kedro.data.image_folder import class_folders, is_image_folder, load_image_folder
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.real import NATIVE_LAYOUT_DIR, REAL_DATASETS, load_real_dataset

log = logging.getLogger(__name__)

# Class counts of the built-in datasets are known up front so that parameters (e.g. an attack's
# target) can be checked before any data is read; a dataset of your own (an image folder under
# any other name) is counted from its class folders, which reads no image.
NUM_CLASSES = {
    "embedded": len(world.CLASS_NAMES),
    "cifar10": 10,
    "cifar100": 100,
    "gtsrb": 43,
    "tinyimagenet": 200,
}
DATASET_NAMES = tuple(NUM_CLASSES)
# The on-disk formats a real dataset may come in: its usual downloader's layout, or an image folder.
NATIVE_FORMATS = {
    "cifar10": "cifar-pickle",
    "cifar100": "cifar-pickle",
    "gtsrb": "gtsrb-ppm",
    "tinyimagenet": "tinyimagenet-official",
}
IMAGE_FOLDER = "image-folder"
# Images held out of a real training set for the CLIP stand-in when no CLIP weights are given.
DEFAULT_CLIP_HOLDOUT = 10000


class WorldConfig(ParameterModel):
    """Size and difficulty of the embedded world (see ``cgd_kedro.data.world``)."""

    SECTION: ClassVar[str] = "dataset.world"

    seed: int = Field(
        0,
        ge=0,
        description="the world's own seed (which images exist), fixed apart from runtime.seed",
    )
    n_train: int = Field(20000, ge=1, le=MAX_IMAGES, description="training images")
    n_test: int = Field(4000, ge=1, le=MAX_IMAGES, description="test images")
    n_captions: int = Field(
        20000, ge=1, le=MAX_IMAGES, description="image-caption pairs for the embedded CLIP"
    )
    image_size: int = Field(32, ge=8, le=512, description="side of the square images in pixels")
    difficulty: float = Field(
        0.5, ge=0, le=1, description="clutter, noise, colour jitter, placement"
    )


class ClipHoldoutConfig(ParameterModel):
    """The ``dataset.clip_holdout`` parameters: the "public" slice of a real training set that the
    CLIP stand-in is pretrained on when ``clip.weights`` is not set; never seen by the victim, the
    suspicious models or any defense."""

    SECTION: ClassVar[str] = "dataset.clip_holdout"

    size: Annotated[int, Field(ge=0, le=MAX_IMAGES)] | Literal["auto"] = Field(
        "auto",
        description=(
            "images held out (stratified by class); auto = 10,000 for a real dataset without "
            "clip.weights, 0 otherwise"
        ),
    )
    seed: int = Field(
        0,
        ge=0,
        description=(
            "which images; fixed apart from runtime.seed so every seed of a study uses the same"
        ),
    )


class DatasetConfig(ParameterModel):
    """The ``dataset`` parameters. Cheap checks of the source (name, format, root directory) run
    when the section is read, before any data is."""

    SECTION: ClassVar[str] = "dataset"

    name: str = Field(
        "embedded",
        min_length=1,
        description=(
            "embedded, a built-in real dataset (cifar10, cifar100, gtsrb, tinyimagenet) or a name "
            "of your own for an image folder"
        ),
    )
    root: str | None = Field(
        None, description="local directory holding a real dataset; ignored for embedded"
    )
    format: str = Field(
        "auto",
        description=(
            "auto, image-folder (root/{train,test}/<class>/<image>) or the native format "
            "(cifar-pickle, gtsrb-ppm, tinyimagenet-official)"
        ),
    )
    image_size: int | None = Field(
        None, ge=1, le=4096, description="resize real images to this size (null: native size)"
    )
    max_per_class: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES,
        description="keep at most this many training images per class (smoke runs, tests)",
    )
    max_test_per_class: int | None = Field(
        None, ge=1, le=MAX_IMAGES, description="the same for the test set"
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "decoded datasets are kept here, keyed by a fingerprint of the files and these "
            "settings (null: no cache)"
        ),
    )
    clip_holdout: ClipHoldoutConfig = Field(
        default_factory=ClipHoldoutConfig, description="the slice held out for the CLIP stand-in"
    )
    mean: tuple[float, float, float] = Field(
        (0.5, 0.5, 0.5),
        strict=False,
        description="per-channel input normalisation applied inside every classifier",
    )
    std: tuple[float, float, float] = Field(
        (0.25, 0.25, 0.25), strict=False, description="per-channel input normalisation (all > 0)"
    )
    world: WorldConfig = Field(
        default_factory=WorldConfig, description="the embedded world's generator settings"
    )

    @field_validator("std")
    @classmethod
    def _positive(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(std) <= 0:
            raise ValueError("every value must be greater than 0")
        return std

    @model_validator(mode="after")
    def _source_exists(self) -> DatasetConfig:
        if self.name == "embedded":
            if self.clip_holdout.size not in ("auto", 0):
                raise ValueError(
                    "dataset.clip_holdout.size: the embedded world's CLIP is pretrained on its "
                    f"own caption corpus; use auto or 0, got {self.clip_holdout.size!r}"
                )
            return self
        formats = (
            "auto",
            IMAGE_FOLDER,
            *([NATIVE_FORMATS[self.name]] if self.name in NATIVE_FORMATS else []),
        )
        if self.format not in formats:
            raise ValueError(
                f"dataset.format: {self.format!r} does not apply to dataset {self.name!r}; "
                f"expected one of {list(formats)}"
            )
        if self.name not in NUM_CLASSES and self.format == "auto" and not self.root:
            raise ValueError(
                f"dataset.name: {self.name!r} is not a built-in dataset "
                f"({', '.join(DATASET_NAMES)}); for images of your own set dataset.root to an "
                "image folder (train/<class>/*, test/<class>/*)"
            )
        if not self.root:
            raise ValueError(
                f"dataset.root: dataset {self.name!r} is read from a local "
                "directory; set dataset.root"
            )
        if not Path(self.root).is_dir():
            layout = (
                f"cgd_kedro.data.real.{REAL_DATASETS[self.name].__name__} or "
                if self.name in REAL_DATASETS
                else ""
            )
            raise FileNotFoundError(
                f"dataset.root: directory {str(Path(self.root).resolve())!r} for dataset "
                f"{self.name!r} does not exist (expected layout: {layout}an image folder "
                "root/{train,test}/<class>/<image>)"
            )
        if self.name not in NUM_CLASSES and not is_image_folder(Path(self.root)):
            raise ValueError(
                f"dataset.name: {self.name!r} is not a built-in dataset "
                f"({', '.join(DATASET_NAMES)}), so it must be an image folder; '{self.root}' has "
                "no train/ and test/ folders"
            )

        return self

    def resolved_format(self) -> str:
        """The on-disk format of a real dataset: the configured one, or for ``auto`` the native
        layout if its folder exists under ``root``, else an image folder if
        ``train/`` and ``test/`` exist."""
        if self.format != "auto":
            return self.format
        root = Path(self.root)
        if self.name in NATIVE_LAYOUT_DIR and (root / NATIVE_LAYOUT_DIR[self.name]).exists():
            return NATIVE_FORMATS[self.name]
        if is_image_folder(root):
            return IMAGE_FOLDER
        native = (
            f"'{root / NATIVE_LAYOUT_DIR[self.name]}' ({NATIVE_FORMATS[self.name]}) or "
            if self.name in NATIVE_LAYOUT_DIR
            else ""
        )
        raise FileNotFoundError(
            f"dataset.root: found neither {native}an image folder ('{root / 'train'}' and "
            f"'{root / 'test'}') for dataset {self.name!r}"
        )

    @property
    def num_classes(self) -> int:
        if self.name in NUM_CLASSES:
            return NUM_CLASSES[self.name]
        return len(class_folders(self.root))

    def clip_holdout_size(self, clip_weights: str | None) -> int:
        """Images held out for the CLIP stand-in: ``clip_holdout.size``, with ``auto`` resolved."""
        if self.clip_holdout.size != "auto":
            return int(self.clip_holdout.size)
        return DEFAULT_CLIP_HOLDOUT if self.name != "embedded" and not clip_weights else 0


def read_source(config: DatasetConfig) -> tuple[ImageSet, ImageSet, list[str]]:
    """``(train_set, test_set, class_names)`` for the configured dataset, before any holdout.

    A real dataset is decoded once per source and settings: with ``cache_dir`` set, later calls load
    the decoded tensors (safetensors) instead of decoding every file again.
    """
    if config.name == "embedded":
        w = config.world
        train, test, _, _ = world.generate_world(
            seed=w.seed,
            n_train=w.n_train,
            n_test=w.n_test,
            n_captions=0,
            image_size=w.image_size,
            difficulty=w.difficulty,
        )
        return train, test, list(world.CLASS_NAMES)
    source_format = config.resolved_format()
    root = Path(config.root).expanduser()
    if source_format == IMAGE_FOLDER:
        sources = [root / "train", root / "test", root / "classes.txt"]

        def decode() -> tuple[ImageSet, ImageSet, list[str]]:
            return load_image_folder(
                root, config.image_size, config.max_per_class, config.max_test_per_class
            )
    else:
        sources = [root / NATIVE_LAYOUT_DIR[config.name]]

        def decode() -> tuple[ImageSet, ImageSet, list[str]]:
            train, test, names = load_real_dataset(config.name, root, config.image_size)
            return (
                cap_per_class(train, config.max_per_class),
                cap_per_class(test, config.max_test_per_class),
                names,
            )

    settings = {
        "name": config.name,
        "format": source_format,
        "image_size": config.image_size,
        "max_per_class": config.max_per_class,
        "max_test_per_class": config.max_test_per_class,
    }
    if config.cache_dir is None:
        return decode()
    return cached_decode(Path(config.cache_dir), settings, sources, decode)


def cap_per_class(image_set: ImageSet, limit: int | None) -> ImageSet:
    """The first ``limit`` images of each class, in the set's order (all of them for ``None``)."""
    if limit is None:
        return image_set
    labels = image_set["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for cls in labels.unique().tolist():
        keep[(labels == cls).nonzero().squeeze(1)[:limit]] = True
    return {key: value[keep] for key, value in image_set.items()}


def hold_out_clip_slice(
    train_set: ImageSet, size: int, num_classes: int, seed: int
) -> tuple[ImageSet, ImageSet]:
    """``(victim training set, CLIP slice)``: ``size`` images drawn at random, stratified by class,
    from ``train_set``; both keep ``source_index``, each row's index in ``train_set``.

    Raises ``ValueError`` naming ``dataset.clip_holdout.size`` if the slice would leave fewer than
    two training images per class.
    """
    labels = train_set["labels"]
    n = labels.numel()
    source = {**train_set, "source_index": torch.arange(n, dtype=torch.int64)}
    if size == 0:  # nothing held out: the training set is whatever it is
        return source, {key: value[:0] for key, value in source.items()}
    if size > n - 2 * num_classes:
        raise ValueError(
            f"dataset.clip_holdout.size: holding out {size} of the {n} training images would leave "
            "fewer than 2 per class for the victim; lower it (or raise dataset.max_per_class)"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    counts = torch.bincount(labels, minlength=num_classes)
    # per class, proportional; the rest at random below
    quota = (counts.double() * size / n).floor().long()
    chosen = torch.zeros(n, dtype=torch.bool)
    for cls in range(num_classes):
        members = order[labels[order] == cls]
        chosen[members[: int(quota[cls])]] = True
    rest = order[~chosen[order]]
    chosen[rest[: size - int(chosen.sum())]] = True
    public = chosen.nonzero().squeeze(1)
    kept = (~chosen).nonzero().squeeze(1)
    return {key: value[kept] for key, value in source.items()}, {
        key: value[public] for key, value in source.items()
    }
