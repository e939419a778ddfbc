"""The reference-CLIP configuration, its sources and zero-shot scoring."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.clip.factory import EMBEDDED_CLIP, create_clip, preprocess_config
from cgd_kedro.clip.reference import (
    DEFAULT_TEMPLATES,
    ClipConfig,
    clip_logits,
    linked_checkpoint,
    model_from_checkpoint,
)


def test_defaults_templates_and_parameter_errors():
    config = ClipConfig.from_params({})
    assert (
        config.model_name == EMBEDDED_CLIP and config.weights is None and config.logit_scale == 1.0
    )
    assert config.templates_for("gtsrb") == ("a centered photo of a {} traffic sign",)
    assert (
        config.templates_for("cifar10") == ("a photo of a {}",) == DEFAULT_TEMPLATES["tinyimagenet"]
    )
    assert ClipConfig.from_params({"templates": ["an {} icon"]}).templates_for("cifar10") == (
        "an {} icon",
    )
    for params, message in (
        ({"model_name": "nope"}, "clip.model_name"),
        ({"templates": ["no slot"]}, "clip.templates"),
        ({"logit_scale": 0}, "clip.logit_scale"),
        ({"batch_size": 0}, "clip.batch_size"),
        ({"weight": "x"}, "clip.weight: unknown parameter; did you mean 'weights'"),
        ({"pretrain": {"epochs": 0}}, "clip.pretrain.epochs"),
    ):
        with pytest.raises(ValueError, match=message):
            ClipConfig.from_params(params)


def test_sources_real_datasets_need_weights_or_a_stand_in_slice_and_missing_files_are_named(
    tmp_path,
):
    ClipConfig().check_source("embedded")
    # the stand-in
    ClipConfig(model_name="cgd-small-clip").check_source("cifar10", holdout_size=10000)
    with pytest.raises(
        ValueError,
        match=(
            r"dataset\.clip_holdout\.size: without clip\.weights, dataset 'cifar10' needs a slice"
        ),
    ):
        ClipConfig(model_name="cgd-small-clip").check_source("cifar10", holdout_size=0)
    with pytest.raises(ValueError, match=r"clip\.model_name: without clip\.weights .* 'ViT-B-32'"):
        ClipConfig(model_name="ViT-B-32").check_source("cifar10", holdout_size=10000)
    with pytest.raises(
        ValueError, match=r"clip\.model_name: the embedded world's CLIP is 'cgd-embedded-clip'"
    ):
        ClipConfig(model_name="cgd-small-clip").check_source("embedded")
    with pytest.raises(FileNotFoundError, match=r"clip\.weights: .*missing\.pt"):
        ClipConfig(weights=str(tmp_path / "missing.pt")).check_source("cifar10")


def test_linked_checkpoint_loads_the_users_file_and_scores_batched_like_one_by_one(tmp_path):
    torch.manual_seed(0)
    model = create_clip(EMBEDDED_CLIP)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    checkpoint = linked_checkpoint(ClipConfig(weights=str(tmp_path / "w.pt")))
    loaded = model_from_checkpoint(checkpoint)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert preprocess_config(loaded)["mean"] == (0.465, 0.465, 0.454)

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    kwargs = dict(logit_scale=2.0, device=torch.device("cpu"))
    batched = clip_logits(
        loaded,
        EMBEDDED_CLIP,
        images,
        ["circle", "star"],
        ["a photo of a {}"],
        batch_size=4,
        **kwargs,
    )
    single = torch.cat(
        [
            clip_logits(
                loaded,
                EMBEDDED_CLIP,
                images[i : i + 1],
                ["circle", "star"],
                ["a photo of a {}"],
                **kwargs,
            )
            for i in range(6)
        ]
    )
    assert batched.shape == (6, 2) and torch.allclose(batched, single, atol=1e-5)
    assert float(batched.abs().max()) <= 2.0 + 1e-5  # logit_scale x cosine


def test_weights_may_be_a_versioned_dataset_folder_its_latest_version_is_used(tmp_path):
    # The backdoored CLIP of `abd_defense` is saved as such a folder; pointing clip.weights at it
    # makes CGD score with a compromised CLIP.
    from safetensors.torch import save_file

    folder = tmp_path / "backdoored_clip.safetensors"
    states = []
    for version in ("2026-01-01T00.00.00.000Z", "2026-02-01T00.00.00.000Z"):
        torch.manual_seed(len(states))
        state = {k: v.contiguous() for k, v in create_clip(EMBEDDED_CLIP).state_dict().items()}
        (folder / version).mkdir(parents=True)
        save_file(state, str(folder / version / "backdoored_clip.safetensors"))
        states.append(state)
    config = ClipConfig(model_name=EMBEDDED_CLIP, weights=str(folder))
    config.check_source("embedded")
    checkpoint = linked_checkpoint(config)
    assert checkpoint["weights"].endswith("2026-02-01T00.00.00.000Z/backdoored_clip.safetensors")
    model = model_from_checkpoint(checkpoint)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in states[1].items())
