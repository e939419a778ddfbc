"""Uploads are checked before anything is written: file names, sizes, formats, contents, shapes."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
from safetensors.torch import save

from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.platform.submissions import (
    SubmissionError,
    check_file_name,
    check_size,
    checked_checkpoint,
    inside,
    read_state_dict,
)

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def compact_state_dict(num_classes: int = 10) -> dict[str, torch.Tensor]:
    return build_classifier("compact_cnn", num_classes, MEAN, STD).net.state_dict()


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class RunsCode:
    """Unpickling this would run ``os.system`` (the classic malicious checkpoint)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "name",
    [
        "../model.pt",
        "a/b.pt",
        "..\\model.pt",
        "/etc/passwd.pt",
        ".hidden.pt",
        "model.exe",
        "",
        "mod el.pt",
    ],
)
def test_file_names_with_paths_or_odd_suffixes_are_refused(name):
    with pytest.raises(SubmissionError, match="file name"):
        check_file_name(name)


def test_plain_names_pass_and_sizes_are_bounded():
    assert check_file_name("victim-v2.safetensors") == "victim-v2.safetensors"
    check_size(10, limit=10)
    with pytest.raises(
        SubmissionError, match=r"^upload refused: the file is over the 64 MiB limit$"
    ):
        check_size(2 * 2**30)
    with pytest.raises(SubmissionError, match="empty"):
        check_size(0)


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    pickled = pickle.dumps({"net.weight": RunsCode(str(marker))})
    for data in (pickled, torch_bytes({"w": RunsCode(str(marker))})):
        with pytest.raises(
            SubmissionError, match=r"evil.pt: refused: it holds Python objects other than tensors"
        ) as refused:
            read_state_dict("evil.pt", data)
        # torch's own advice (load with weights_only=False) and its terminal
        # colours never reach the uploader
        assert "weights_only=False" not in str(refused.value) and "\x1b" not in str(refused.value)
    assert not marker.exists()


def test_damaged_nan_and_integer_weights_are_refused_by_name():
    state = compact_state_dict()
    archive = bytearray(torch_bytes(state))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() >= 64)
    offset = archive.find(state[key].numpy().tobytes()[:64])
    assert offset > 0
    archive[offset : offset + 16] = b"\xff" * 16  # bytes overwritten inside the tensor data
    with pytest.raises(
        SubmissionError, match=r"m.pt: refused: the archive is damaged \(checksum mismatch"
    ):
        read_state_dict("m.pt", bytes(archive))
    nan_state = dict(state) | {key: torch.full_like(state[key], float("nan"))}
    with pytest.raises(
        SubmissionError,
        match=rf"m.safetensors: refused: tensor\(s\) \['{key}'\] hold NaN or infinite values",
    ):
        read_state_dict("m.safetensors", save(nan_state))
    int_state = dict(state) | {key: state[key].round().to(torch.int32)}
    with pytest.raises(
        SubmissionError, match=rf"refused: {key} \(torch.int32\) must be floating-point tensors"
    ):
        checked_checkpoint("m.safetensors", save(int_state), "compact_cnn", 10, MEAN, STD)


def test_non_state_dict_contents_are_refused():
    with pytest.raises(SubmissionError, match=r"expected a state_dict .* got Tensor"):
        read_state_dict("image.pt", torch_bytes(torch.zeros(3, 32, 32)))
    with pytest.raises(SubmissionError, match="not tensors"):
        read_state_dict("mixed.pt", torch_bytes({"a": torch.zeros(1), "b": [1, 2]}))
    with pytest.raises(SubmissionError, match="not a readable safetensors file"):
        read_state_dict("junk.safetensors", b"\x00" * 100)


def test_a_state_dict_of_the_wrong_shape_or_architecture_is_refused_by_name():
    wrong_head = save(compact_state_dict(num_classes=7))
    with pytest.raises(
        SubmissionError,
        match=(
            r"wrong\.safetensors: weights do not match architecture 'compact_cnn' with 10 classes"
        ),
    ):
        checked_checkpoint("wrong.safetensors", wrong_head, "compact_cnn", 10, MEAN, STD)
    with pytest.raises(SubmissionError, match="unknown model 'resnet9000'"):
        checked_checkpoint(
            "ok.safetensors", save(compact_state_dict()), "resnet9000", 10, MEAN, STD
        )
    image_tensor = save({"image": torch.zeros(3, 32, 32)})  # a tensor file that is no model at all
    with pytest.raises(SubmissionError, match="weights do not match"):
        checked_checkpoint("image.safetensors", image_tensor, "compact_cnn", 10, MEAN, STD)


def test_good_checkpoints_in_both_formats_pass():
    state = compact_state_dict()
    for name, data in (
        ("m.safetensors", save(state)),
        ("m.pt", torch_bytes(state)),
        ("m.pth", torch_bytes({"state_dict": state})),
    ):
        checkpoint = checked_checkpoint(name, data, "compact_cnn", 10, MEAN, STD)
        assert checkpoint["architecture"] == "compact_cnn" and set(checkpoint["state_dict"]) == set(
            state
        )


def test_writes_are_confined(tmp_path):
    assert inside(tmp_path, tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(SubmissionError, match="outside"):
        inside(tmp_path / "data", tmp_path / "data" / ".." / "x")
