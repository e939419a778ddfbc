"""Shared fixtures: small parameter sets, a throw-away copy of the Kedro project,
a toy trained model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Tests must never try to send telemetry.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Every Kedro session is an MLflow run (cgd_kedro.tracking): one store for the whole test session
# (made once, not per temporary project); tests of the project's default store unset it.
os.environ.setdefault(
    "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='cgd-mlflow-')}/mlflow.db"
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


# Learnt triggers with a few optimisation steps: the tests check wiring, not trigger quality.
TINY_TRIGGERS = {
    "lc": {"steps": 1},
    "lf": {"steps": 2, "n_images": 64, "batch_size": 32},
    "ssba": {"train_images": 64, "train_steps": 2, "batch_size": 32},
    "inputaware": {"train_images": 64, "mask_steps": 2, "train_steps": 2, "batch_size": 32},
    "trojannn": {"neuron_epoch": 2},
}


def tiny_parameters() -> dict:
    """Parameters small enough for a CPU test run in seconds (real values are in conf/base)."""
    from cgd_kedro.pipelines.poison.pipeline import ATTACK_NAMESPACES

    attacks = {
        name: {
            "attack": {
                "name": name,
                "target": 0,
                "ratio": 0.1,
                "trigger": dict(TINY_TRIGGERS.get(name, {})),
            }
        }
        for name in ATTACK_NAMESPACES
    }
    return attacks | {
        "dataset": {
            "name": "embedded",
            "world": {"seed": 0, "n_train": 300, "n_test": 120, "n_captions": 1, "difficulty": 0.5},
        },
        "runtime": {"device": "cpu", "seed": 0},
        "victim": {
            "architecture": "compact_cnn",
            "training": {"epochs": 1, "batch_size": 64, "lr": 0.05},
        },
        "badnets": {"attack": {"name": "badnets", "target": 0, "ratio": 0.1, "mode": "all_to_one"}},
    }


def latest_version(project: Path, relative: str) -> Path:
    """The newest version of a versioned artefact ``data/<relative>`` of a Kedro project."""
    folder = project / "data" / relative
    return sorted(folder.iterdir())[-1] / folder.name


def make_project(folder: Path) -> Path:
    """A copy of the project's configuration in ``folder``: a Kedro project whose session runs
    write their data/ there and never touch the repository's own outputs."""
    shutil.copytree(PROJECT_ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", folder / "pyproject.toml")
    (folder / ".telemetry").write_text("consent: false\n")
    (folder / "src").mkdir()  # bootstrap_project checks it exists; the package is installed
    return folder


@pytest.fixture
def tmp_project(tmp_path, monkeypatch) -> Path:
    """``make_project`` in ``tmp_path``, made the working directory."""
    monkeypatch.chdir(make_project(tmp_path))
    return tmp_path


@pytest.fixture
def toy_trained():
    """``(model, images, labels)``:
    a compact CNN that has learned the 3-class toy set well above chance."""
    from cgd_kedro.models.classifier import build_classifier
    from cgd_kedro.training.classifier import TrainingConfig, train_classifier

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (240,), generator=g)
    images = torch.randint(0, 90, (240, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[torch.arange(240), labels] += 150
    model = build_classifier("compact_cnn", 3, (0.5,) * 3, (0.25,) * 3)
    train_classifier(
        model,
        images,
        labels,
        TrainingConfig(epochs=3, batch_size=32, lr=0.05, augment=False),
        device=torch.device("cpu"),
        generator=g,
    )
    return model, images, labels
