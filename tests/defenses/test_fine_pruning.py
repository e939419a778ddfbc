"""Fine-Pruning: activations of the head's input channels, pruning by zeroed columns, the
accuracy-ratio stopping rule and fine-tuning that keeps pruned channels at zero."""

from __future__ import annotations

import pytest
import torch

from cgd_kedro.defenses.fine_pruning import (
    FinePruningConfig,
    channel_activations,
    fine_prune,
    prune_channels,
)
from cgd_kedro.models.classifier import last_linear


def test_activations_are_the_mean_head_input_and_pruning_zeroes_columns(toy_trained):
    model, images, _ = toy_trained
    activations = channel_activations(model, images, device=torch.device("cpu"), batch_size=50)
    # after ReLU
    assert activations.shape == (last_linear(model).in_features,) and bool((activations >= 0).all())
    features = []
    hook = last_linear(model).register_forward_pre_hook(lambda m, i: features.append(i[0]))
    with torch.no_grad():
        model(images.float() / 255)
    hook.remove()
    assert torch.allclose(activations, features[0].mean(0), atol=1e-5)
    prune_channels(model, torch.tensor([0, 5]))
    assert float(last_linear(model).weight[:, [0, 5]].abs().sum()) == 0.0


def test_fine_prune_respects_the_accuracy_ratio_and_keeps_channels_pruned(toy_trained):
    model, images, labels = toy_trained
    config = FinePruningConfig(
        acc_ratio=0.9, prune_step=0.1, epochs=2, batch_size=32, augment=False
    )
    result = fine_prune(
        model,
        images,
        labels,
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    assert 0 < result["pruned"] < result["channels"] == last_linear(model).in_features
    assert result["val_acc_pruned"] >= 0.9 * result["val_acc_before"]
    zero_columns = (last_linear(model).weight.abs().sum(0) == 0).sum()
    assert int(zero_columns) == result["pruned"] and len(result["history"]) == 2


def test_config_and_tiny_clean_set_errors(toy_trained):
    with pytest.raises(ValueError, match=r"fine_pruning\.acc_ratio"):
        FinePruningConfig.from_params({"acc_ratio": 1.5})
    with pytest.raises(
        ValueError, match=r"fine_pruning\.ratio: unknown parameter; did you mean .acc_ratio."
    ):
        FinePruningConfig.from_params({"ratio": 0.1})
    model, images, labels = toy_trained
    with pytest.raises(ValueError, match="at least 10"):
        fine_prune(
            model,
            images[:5],
            labels[:5],
            FinePruningConfig(),
            device=torch.device("cpu"),
            generator=torch.Generator(),
        )
