"""The bad-input catalogue: each bad input gets a clear error naming the parameter or file, raised
before any work, and leaves earlier outputs intact.

Parameters are checked by ``check_run_parameters``, the one check behind the CLI (a hook before
the first node), ``--params``, every env and the platform's Run form; two cases below go through a
real ``kedro run``. The platform's own cases (uploads, form) are in tests/platform/test_app.py and
test_submissions.py.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROJECT_ROOT
from kedro.io.core import DatasetError
from safetensors.torch import save_file

from cgd_kedro.clip.factory import read_state_dict
from cgd_kedro.data.image_folder import load_image_folder
from cgd_kedro.datasets import ClassifierCheckpointDataset
from cgd_kedro.models.classifier import build_classifier, to_checkpoint
from cgd_kedro.parameters import check_run_parameters


def _conf_parameters() -> dict:
    import yaml

    params: dict = {}
    for path in sorted((PROJECT_ROOT / "conf" / "base").glob("parameters*.yml")):
        params.update(yaml.safe_load(path.read_text()) or {})
    params["dataset"]["name"] = "embedded"
    params["runtime"]["cache_dir"] = None
    return params


def _with(path: str, value) -> dict:
    params = copy.deepcopy(_conf_parameters())
    *parents, last = path.split(".")
    section = params
    for part in parents:
        section = section.setdefault(part, {})
    section[last] = value
    return params


PARAMETER_CASES = [
    (
        "badnets.attack.name",
        "nosuch",
        r"badnets\.attack\.name: unknown attack 'nosuch'; available: \[",
    ),
    (
        "badnets.attack.ratio",
        1.5,
        r"badnets\.attack\.ratio = 1\.5: must be less than or equal to 1",
    ),
    ("badnets.attack.ratio", -0.1, r"badnets\.attack\.ratio = -0\.1: must be greater than 0"),
    (
        "badnets.attack.target",
        10,
        r"badnets\.attack\.target = 10: must be a class index in \[0, 9\]",
    ),
    (
        "badnets.attack.mode",
        "all_to_some",
        r"badnets\.attack\.mode = 'all_to_some': must be 'all_to_one' or 'all_to_all'",
    ),
    (
        "victim.training.epochs",
        0,
        r"victim\.training\.epochs = 0: must be greater than or equal to 1",
    ),
    (
        "victim.training.epochs",
        -1,
        r"victim\.training\.epochs = -1: must be greater than or equal to 1",
    ),
    (
        "victim.training.epochs",
        1e9,
        r"victim\.training\.epochs = 1000000000\.0: must be a valid integer",
    ),
    (
        "victim.training.epochs",
        1_000_000_000,
        r"victim\.training\.epochs = 1000000000: must be less than or equal to 10000",
    ),
    ("victim.training.lr", "abc", r"victim\.training\.lr = 'abc': must be a valid number"),
    (
        "victim.training.batch_size",
        True,
        r"victim\.training\.batch_size = True: must be a valid integer",
    ),
    ("victim.training.lrr", 0.1, r"victim\.training\.lrr: unknown parameter; did you mean 'lr'\?"),
    (
        "victim.architecture",
        "resnet9000",
        r"victim\.architecture = 'resnet9000': .*unknown model 'resnet9000'",
    ),
    ("foo", 1, r"^foo: unknown parameter"),
    ("cgd.epohcs", 2, r"cgd\.epohcs: unknown parameter; did you mean 'epochs'\?"),
    ("badnets.atack", {}, r"badnets\.atack: unknown parameter; did you mean 'attack'\?"),
    (
        "dataset.world.n_train",
        100_000_000,
        r"dataset\.world\.n_train = 100000000: must be less than or equal to 1000000",
    ),
    (
        "dataset.world.difficulty",
        2,
        r"dataset\.world\.difficulty = 2: must be less than or equal to 1",
    ),
    ("runtime.device", "tpu", r"runtime\.device = 'tpu': must be 'auto', 'cpu' or 'cuda'"),
    ("cgd.validation_fraction", 1, r"cgd\.validation_fraction = 1: must be less than 1"),
    ("split.sigma1", 1.2, r"split\.sigma1 = 1\.2: must be less than 1"),
    ("oracle_fraction", 0, r"oracle_fraction = 0: must be greater than 0"),
    ("reporting.seeds", [1, 1], r"reporting\.seeds.*distinct non-negative integers"),
    (
        "clip_attack.attack",
        "nope",
        r"clip_attack\.attack = 'nope': must be 'badnet', 'blended' or 'badclip'",
    ),
    ("abd.patch.method", "magic", r"abd\.patch\.method = 'magic': must be 'direct' or 'generator'"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), PARAMETER_CASES, ids=[f"{p}={v!r}" for p, v, _ in PARAMETER_CASES]
)
def test_bad_parameters_are_named_in_full(path, value, message):
    with pytest.raises(ValueError, match=message):
        check_run_parameters(_with(path, value), {"badnets"})


def test_missing_and_empty_dataset_folders_are_named(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"dataset\.root: directory '.*nowhere' for dataset 'cifar10' does not exist",
    ):
        check_run_parameters(
            _with("dataset", {"name": "cifar10", "root": str(tmp_path / "nowhere")})
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError,
        match=r"dataset\.name: 'mine' is not a built-in dataset .* has no train/ and test/ folders",
    ):
        check_run_parameters(_with("dataset", {"name": "mine", "root": str(tmp_path / "empty")}))


def test_an_image_folder_with_a_non_image_file_is_named(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / label / "0001.png")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"train/dog/notes\.txt': not an image file"):
        load_image_folder(tmp_path)


def _checkpoint_file(tmp_path: Path) -> Path:
    model = build_classifier("compact_cnn", 10, [0.5] * 3, [0.25] * 3)
    ClassifierCheckpointDataset(filepath=str(tmp_path / "victim.safetensors")).save(
        to_checkpoint(model, "compact_cnn", 10)
    )
    return tmp_path / "victim.safetensors"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
            r"victim\.safetensors: not a readable safetensors file",
        ),
        (
            lambda p: p.write_bytes(os.urandom(4096)),
            r"victim\.safetensors: not a readable safetensors file",
        ),
        (
            lambda p: save_file({"weight": torch.zeros(2)}, str(p), metadata={"format": "pt"}),
            r"victim\.safetensors: not a cgd_kedro classifier checkpoint \(header format 'pt'",
        ),
    ],
    ids=["truncated", "corrupt", "foreign"],
)
def test_truncated_corrupt_and_foreign_checkpoints_are_named(tmp_path, damage, message):
    path = _checkpoint_file(tmp_path)
    damage(path)
    with pytest.raises(DatasetError, match=message):
        ClassifierCheckpointDataset(filepath=str(path)).load()


def test_clip_weights_holding_code_name_the_parameter_and_the_file(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(pickle.dumps({"visual.proj": RunsCode()}))
    with pytest.raises(
        ValueError,
        match=(
            r"clip\.weights: '.*ViT-B-32\.pt' refused: it holds Python objects other than tensors"
        ),
    ) as refused:
        read_state_dict(path)
    assert "weights_only=False" not in str(refused.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("foo=1", "foo: unknown parameter"),
        ("badnets.attack.ratio=1.5", "badnets.attack.ratio = 1.5: must be less than or equal to 1"),
    ],
)
def test_kedro_run_stops_before_any_node_and_writes_nothing(tmp_project, override, message):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--pipelines",
            "poison",
            "--namespaces",
            "dataset,badnets",
            "--params",
            override,
        ],
        cwd=tmp_project,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert message in " ".join((done.stdout + done.stderr).split())
    written = (
        [p for p in (tmp_project / "data").rglob("*") if p.is_file()]
        if (tmp_project / "data").exists()
        else []
    )
    assert written == []  # no version, no run record


def test_the_readme_parameter_reference_is_the_generated_one():
    from cgd_kedro.parameters import parameter_reference

    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("<!-- parameters:begin -->\n")[1].split("\n<!-- parameters:end -->")[0]
    assert block == parameter_reference(), (
        "README out of date: paste `python -m cgd_kedro.parameters` between the markers"
    )
