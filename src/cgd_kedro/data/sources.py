"""Where the classification data comes from: the embedded world or a real local dataset.

Configured by the ``dataset`` parameters (``conf/base/parameters.yml``; each real dataset's
Kedro environment overrides ``name`` and ``root``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cgd_kedro.data import world
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.data.real import REAL_DATASETS, load_real_dataset

# Class counts are known up front so that parameters (e.g. an attack's target) can be checked
# before any data is read.
NUM_CLASSES = {"embedded": len(world.CLASS_NAMES), "cifar10": 10, "cifar100": 100, "gtsrb": 43, "tinyimagenet": 200}
NATIVE_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "gtsrb": 32, "tinyimagenet": 64}
DATASET_NAMES = tuple(NUM_CLASSES)


@dataclass(frozen=True)
class WorldConfig:
    """Size and difficulty of the embedded world (see ``cgd_kedro.data.world``)."""

    seed: int = 0
    n_train: int = 20000
    n_test: int = 4000
    n_captions: int = 20000
    image_size: int = 32
    difficulty: float = 0.5


@dataclass(frozen=True)
class DatasetConfig:
    """The ``dataset`` parameters.

    Attributes:
        name: ``embedded`` or one of the real datasets (``cifar10``, ``cifar100``, ``gtsrb``, ``tinyimagenet``).
        root: local directory holding a real dataset in its usual layout; ignored for ``embedded``.
        image_size: resize real images to this size (``None``: native size).
        mean, std: per-channel input normalisation applied inside every classifier.
        world: the embedded world's generator settings.
    """

    name: str = "embedded"
    root: str | None = None
    image_size: int | None = None
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    world: WorldConfig = field(default_factory=WorldConfig)

    @classmethod
    def from_params(cls, params: dict) -> DatasetConfig:
        known = {"name", "root", "image_size", "mean", "std", "world"}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"dataset: unknown parameter(s) {sorted(unknown)}; expected some of {sorted(known)}")
        world_params = dict(params.get("world") or {})
        world_known = set(WorldConfig.__dataclass_fields__)
        if set(world_params) - world_known:
            raise ValueError(
                f"dataset.world: unknown parameter(s) {sorted(set(world_params) - world_known)}; "
                f"expected some of {sorted(world_known)}"
            )
        config = cls(
            **{k: v for k, v in params.items() if k not in ("world", "mean", "std")},
            mean=tuple(params.get("mean", cls.mean)),
            std=tuple(params.get("std", cls.std)),
            world=WorldConfig(**world_params),
        )
        config.check()
        return config

    def check(self) -> None:
        """Cheap checks run before any data is read: name, root directory, sizes."""
        if self.name not in NUM_CLASSES:
            raise ValueError(f"dataset.name: unknown dataset {self.name!r}; expected one of {list(DATASET_NAMES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"dataset.mean/std: expected 3 values each, std > 0; got {self.mean}, {self.std}")
        if self.name == "embedded":
            w = self.world
            for key in ("n_train", "n_test", "n_captions"):
                if not isinstance(getattr(w, key), int) or getattr(w, key) < 1:
                    raise ValueError(f"dataset.world.{key}: expected a positive integer, got {getattr(w, key)!r}")
            if not 0 <= w.difficulty <= 1:
                raise ValueError(f"dataset.world.difficulty: expected a value in [0, 1], got {w.difficulty!r}")
            return
        if not self.root:
            raise ValueError(f"dataset.root: dataset {self.name!r} is read from a local directory; set dataset.root")
        if not Path(self.root).is_dir():
            raise FileNotFoundError(
                f"dataset.root: directory {str(Path(self.root).resolve())!r} for dataset {self.name!r} does not exist "
                f"(expected layout: see cgd_kedro.data.real.{REAL_DATASETS[self.name].__name__})"
            )

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.name]

    @property
    def expected_image_size(self) -> int:
        """Side of the images this configuration yields, known before reading any data."""
        if self.name == "embedded":
            return self.world.image_size
        return self.image_size or NATIVE_IMAGE_SIZE[self.name]


def load_classification_data(config: DatasetConfig) -> tuple[ImageSet, ImageSet, list[str]]:
    """``(train_set, test_set, class_names)`` for the configured dataset."""
    if config.name == "embedded":
        w = config.world
        train, test, _, _ = world.generate_world(
            seed=w.seed, n_train=w.n_train, n_test=w.n_test, n_captions=0,
            image_size=w.image_size, difficulty=w.difficulty,
        )  # fmt: skip
        return train, test, list(world.CLASS_NAMES)
    return load_real_dataset(config.name, config.root, config.image_size)
