"""BackdoorBench records, read from a tiny fake written in BackdoorBench's exact v2 format."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cgd_kedro.data.backdoorbench import guess_attack, load_backdoorbench_result, read_attack_result
from cgd_kedro.data.imageset import make_image_set, validate_image_set
from cgd_kedro.models.classifier import from_checkpoint
from cgd_kedro.models.registry import build_model

SIZE = 16
NUM_CLASSES = 10
TARGET = 0
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]


def _clean_set(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    labels = torch.arange(n, dtype=torch.int64) % NUM_CLASSES
    return make_image_set(images, labels)


@pytest.fixture(scope="module")
def clean_sets():
    return _clean_set(12, 0), _clean_set(6, 1)


@pytest.fixture(scope="module")
def state_dict():
    torch.manual_seed(0)
    net = build_model("compact_cnn", NUM_CLASSES)
    # Non-trivial BatchNorm statistics, so a wrong buffer would change the outputs.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _triggered(image: torch.Tensor) -> torch.Tensor:
    out = image.clone()
    out[:, -3:, -3:] = 255
    return out


def _png_path(style: str, record: Path, folder: str, label: int, index: int) -> str:
    relative = f"{folder}/{label}/{index}.png"
    return {
        # what BackdoorBench writes: relative to the working directory of the attack run
        "backdoorbench": f"./record/{record.name}/{relative}",
        "absolute": str(record / relative),
        "record_relative": relative,
        "moved_absolute": f"/home/someone/BackdoorBench/record/{record.name}/{relative}",
    }[style]


def _container(record, folder, style, clean, indices, bd_label_of, int_keys):
    """A poisonedCLSDataContainer.retrieve_state() with the PNGs written under record/folder."""
    data_dict = {}
    expected = {}
    for i in indices:
        label = int(clean["labels"][i])
        image = _triggered(clean["images"][i])
        png = record / folder / str(label) / f"{i}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(png)
        key = int(i) if int_keys else np.int64(i)
        data_dict[key] = {
            "path": _png_path(style, record, folder, label, i),
            "other_info": [bd_label_of(label), np.int64(label) if not int_keys else label],
        }
        expected[int(i)] = image
    state = {
        "save_folder_path": f"./record/{record.name}/{folder}",
        "data_dict": data_dict,
        "save_file_format": ".png",
    }
    return state, expected


def write_record(
    tmp_path,
    clean_sets,
    state_dict,
    *,
    style="backdoorbench",
    name="badnet_0_1",
    model_name="compact_cnn",
):
    """A record folder in BackdoorBench's layout;
    returns (record dir, expected train/test PNG images)."""
    clean_train, clean_test = clean_sets
    record = tmp_path / "record" / name
    record.mkdir(parents=True)
    # Training set: indices 1, 4, 7 poisoned (target 0), 9 a cover sample keeping its label.
    train_indicator = np.zeros(12)  # BackdoorBench's default indicator is a float array
    train_indicator[[1, 4, 7]] = 1
    train_indicator[9] = 2
    poisoned = {1, 4, 7}
    train_container, train_images = _container(
        record,
        "bd_train_dataset",
        style,
        clean_train,
        [1, 4, 7, 9],
        lambda label: TARGET,
        int_keys=False,
    )
    # index 9 is the cover: same label; rewrite its other_info accordingly
    train_container["data_dict"][np.int64(9)]["other_info"][0] = int(clean_train["labels"][9])
    assert poisoned | {9} == set(train_images)
    # Test set: every non-target image, triggered; original_index_array is the subset.
    test_indicator = (clean_test["labels"].numpy() != TARGET).astype(np.int64)
    test_index = np.where(test_indicator == 1)[0]
    test_container, test_images = _container(
        record,
        "bd_test_dataset",
        style,
        clean_test,
        test_index.tolist(),
        lambda label: TARGET,
        int_keys=True,
    )
    result = {
        "model_name": model_name,
        "num_classes": NUM_CLASSES,
        "model": state_dict,
        "data_path": "./data/cifar10",
        "img_size": [SIZE, SIZE, 3],
        "clean_data": "cifar10",
        "bd_train": {
            "bd_data_container": train_container,
            "getitem_all": True,
            "getitem_all_switch": False,
            "original_index_array": np.arange(12),
            "poison_indicator": train_indicator,
            "save_folder_path": f"./record/{name}/bd_train_dataset",
        },
        "bd_test": {
            "bd_data_container": test_container,
            "getitem_all": True,
            "getitem_all_switch": False,
            "original_index_array": test_index,
            "poison_indicator": test_indicator,
            "save_folder_path": f"./record/{name}/bd_test_dataset",
        },
    }
    torch.save(result, record / "attack_result.pt")
    return record, train_images, test_images, result


@pytest.mark.parametrize(
    "style", ["backdoorbench", "absolute", "record_relative", "moved_absolute"]
)
def test_poisoned_sets_match_the_record(tmp_path, clean_sets, state_dict, style):
    clean_train, clean_test = clean_sets
    record, train_images, test_images, _ = write_record(
        tmp_path, clean_sets, state_dict, style=style
    )
    out = load_backdoorbench_result(record, clean_train, clean_test)

    train = out["poisoned_train"]
    validate_image_set(train)
    assert set(train) == {"images", "labels", "original_labels", "poison", "cover"}
    expected_images = clean_train["images"].clone()
    for i, image in train_images.items():
        expected_images[i] = image
    assert torch.equal(train["images"], expected_images)
    expected_labels = clean_train["labels"].clone()
    expected_labels[[1, 4, 7]] = TARGET
    assert torch.equal(train["labels"], expected_labels)
    assert torch.equal(train["original_labels"], clean_train["labels"])
    assert train["poison"].nonzero().flatten().tolist() == [1, 4, 7]
    assert train["cover"].nonzero().flatten().tolist() == [9]

    test = out["backdoor_test"]
    validate_image_set(test)
    keep = clean_test["labels"] != TARGET
    order = keep.nonzero().flatten().tolist()
    assert torch.equal(test["images"], torch.stack([test_images[i] for i in order]))
    assert torch.equal(test["labels"], torch.full((len(order),), TARGET, dtype=torch.int64))
    assert torch.equal(test["original_labels"], clean_test["labels"][keep])
    assert test["poison"].all() and not test["cover"].any()

    assert out["info"] == {
        "attack": "badnets",
        "record_name": "badnet_0_1",
        "clean_data": "cifar10",
        "dataset": "cifar10",
        "num_classes": NUM_CLASSES,
        "img_size": [SIZE, SIZE, 3],
        "model_name": "compact_cnn",
        "architecture": "compact_cnn",
        "data_path": "./data/cifar10",
        "n_poison": 3,
        "n_cover": 1,
        "n_backdoor_test": len(order),
    }


def test_victim_checkpoint_rebuilds_the_model(tmp_path, clean_sets, state_dict):
    record, *_ = write_record(tmp_path, clean_sets, state_dict)
    # The path of attack_result.pt itself is accepted too.
    out = load_backdoorbench_result(record / "attack_result.pt", *clean_sets)
    checkpoint = out["victim_model"]
    assert checkpoint["architecture"] == "compact_cnn" and checkpoint["num_classes"] == NUM_CLASSES
    assert checkpoint["mean"] == pytest.approx(CIFAR10_MEAN) and checkpoint["std"] == pytest.approx(
        CIFAR10_STD
    )
    model = from_checkpoint(checkpoint).eval()
    reference = build_model("compact_cnn", NUM_CLASSES)
    reference.load_state_dict(state_dict)
    reference.eval()
    x = torch.rand(4, 3, SIZE, SIZE)
    mean, std = (
        torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1),
        torch.tensor(CIFAR10_STD).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        assert torch.allclose(model(x), reference((x - mean) / std), atol=1e-6)


def test_normalization_override_and_dataparallel_prefix(tmp_path, clean_sets, state_dict):
    prefixed = {f"module.{k}": v for k, v in state_dict.items()}
    record, *_ = write_record(tmp_path, clean_sets, prefixed)
    out = load_backdoorbench_result(
        record, *clean_sets, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]
    )
    checkpoint = out["victim_model"]
    assert checkpoint["mean"] == [0.5] * 3 and checkpoint["std"] == [0.25] * 3
    assert set(checkpoint["state_dict"]) == set(state_dict)
    with pytest.raises(ValueError, match="normalization"):
        load_backdoorbench_result(record, *clean_sets, mean=[0.5, 0.5, 0.5])


def test_numpy1_pickles_load(tmp_path, clean_sets, state_dict):
    """Records written under numpy 1.x name ``numpy.core.multiarray``
    (numpy 2 writes ``numpy._core``)."""
    record, *_ = write_record(tmp_path, clean_sets, state_dict)
    path = record / "attack_result.pt"
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            if name.endswith("data.pkl"):
                if b"numpy._core.multiarray" not in data:
                    pytest.skip("this numpy already writes numpy.core names")
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            archive.writestr(name, data)
    out = load_backdoorbench_result(record, *clean_sets)
    assert out["poisoned_train"]["poison"].sum() == 3


def test_guess_attack():
    assert guess_attack("badnet_0_1") == "badnets"
    assert guess_attack("preactresnet18_cifar10_blended_0_1") == "blended"
    assert guess_attack("poison_ink_0_1") == "poison_ink"
    assert guess_attack("cifar10-wanet") == "wanet"
    assert guess_attack("my_run") == "unknown"


# --- errors ---------------------------------------------------------------------------------------


def test_missing_record_names_the_path(tmp_path, clean_sets):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere" / "attack_result.pt")):
        load_backdoorbench_result(tmp_path / "nowhere", *clean_sets)


def test_missing_png_names_it(tmp_path, clean_sets, state_dict):
    record, *_ = write_record(tmp_path, clean_sets, state_dict)
    (record / "bd_train_dataset" / "4" / "4.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"bd_train_dataset/4/4\.png"):
        load_backdoorbench_result(record, *clean_sets)


@pytest.mark.parametrize(
    "content",
    [torch.randn(3, 4), {"model": {}, "num_classes": 10}, [1, 2, 3]],
    ids=["tensor", "dict-without-keys", "list"],
)
def test_not_a_result(tmp_path, clean_sets, content):
    path = tmp_path / "attack_result.pt"
    torch.save(content, path)
    with pytest.raises(
        ValueError, match=r"attack_result\.pt' is not a BackdoorBench attack result"
    ):
        load_backdoorbench_result(tmp_path, *clean_sets)


def test_garbage_file(tmp_path, clean_sets):
    (tmp_path / "attack_result.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="is not a BackdoorBench attack result"):
        read_attack_result(tmp_path / "attack_result.pt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("bd_test"), r"missing key\(s\) \['bd_test'\]"),
        (
            lambda r: r["bd_train"].pop("poison_indicator"),
            r"'bd_train' lacks key 'poison_indicator'",
        ),
        (
            lambda r: r["bd_test"]["bd_data_container"].pop("data_dict"),
            r"bd_test\['bd_data_container'\] lacks key 'data_dict'",
        ),
        (
            lambda r: r["bd_train"]["bd_data_container"]["data_dict"][np.int64(4)].pop(
                "other_info"
            ),
            r"lacks key 'other_info'",
        ),
        (
            lambda r: r["bd_train"]["bd_data_container"]["data_dict"].pop(np.int64(7)),
            r"index 7 as poisoned but its data_dict has no entry",
        ),
        (lambda r: r.update(bd_train=None), r"'bd_train' is None"),
    ],
    ids=["top-level", "set", "container", "entry", "entry-missing", "no-bd-train"],
)
def test_missing_key_is_named(tmp_path, clean_sets, state_dict, edit, message):
    record, _, _, result = write_record(tmp_path, clean_sets, state_dict)
    edit(result)
    torch.save(result, record / "attack_result.pt")
    with pytest.raises(ValueError, match=message) as info:
        load_backdoorbench_result(record, *clean_sets)
    assert str(record / "attack_result.pt") in str(info.value)


def test_unregistered_model_lists_registered_ones(tmp_path, clean_sets, state_dict):
    record, *_ = write_record(tmp_path, clean_sets, state_dict, model_name="vgg19_bn")
    with pytest.raises(
        ValueError,
        match=(
            r"'vgg19_bn'.*registered models: \['airbench', 'airbench_narrow', 'compact_cnn', "
            r"'compact_cnn_small', 'preactresnet18'"
        ),
    ):
        load_backdoorbench_result(record, *clean_sets)


def test_weights_that_do_not_fit_are_refused(tmp_path, clean_sets, state_dict):
    record, *_ = write_record(tmp_path, clean_sets, state_dict, model_name="preactresnet18")
    with pytest.raises(
        ValueError,
        match=r"attack_result\.pt' model: weights do not match architecture 'preactresnet18'",
    ):
        load_backdoorbench_result(record, *clean_sets)


def test_clean_sets_that_do_not_fit_are_refused(tmp_path, clean_sets, state_dict):
    clean_train, clean_test = clean_sets
    record, *_ = write_record(tmp_path, clean_sets, state_dict)
    shorter = {k: v[:10] for k, v in clean_train.items()}
    with pytest.raises(ValueError, match="has 12 entries but clean_train has 10 images"):
        load_backdoorbench_result(record, shorter, clean_test)
    shuffled = {k: v.roll(1, 0) for k, v in clean_train.items()}
    with pytest.raises(ValueError, match="another original label"):
        load_backdoorbench_result(record, shuffled, clean_test)
    bigger = make_image_set(torch.zeros(6, 3, 32, 32, dtype=torch.uint8), clean_test["labels"])
    with pytest.raises(ValueError, match=r"img_size is \[16, 16, 3\] but clean_test has 32x32"):
        load_backdoorbench_result(record, clean_train, bigger)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs(tmp_path, clean_sets, state_dict):
    marker = tmp_path / "pwned"
    # Inside an otherwise valid record saved by torch.save ...
    record, _, _, result = write_record(tmp_path, clean_sets, state_dict)
    result["bd_train"]["extra"] = _Payload(marker)
    torch.save(result, record / "attack_result.pt")
    with pytest.raises(ValueError, match="is not a BackdoorBench attack result"):
        load_backdoorbench_result(record, *clean_sets)
    # ... and as a bare pickle stream.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "attack_result.pt").write_bytes(
        pickle.dumps({"model_name": _Payload(marker)}, protocol=2)
    )
    with pytest.raises(ValueError, match="is not a BackdoorBench attack result"):
        load_backdoorbench_result(bare, *clean_sets)
    assert not marker.exists()
