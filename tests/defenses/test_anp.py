"""ANP: the neuron-noise hook is exact, masks are optimised on clean data only, pruning zeroes BN
channels lowest mask first and stops before the held-out clean accuracy falls below the ratio."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgd_kedro.defenses import anp
from cgd_kedro.defenses.anp import (
    ANPConfig,
    _NeuronNoise,
    adversarial_neuron_pruning,
    optimise_masks,
)


def test_hook_is_identity_at_mask_one_and_scales_channels_as_written():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.5, -0.5, 1.0]))
    x = torch.randn(2, 3, 4, 4)
    reference = bn(x)
    noise = _NeuronNoise(bn, torch.device("cpu"))
    assert torch.allclose(bn(x), reference)
    with torch.no_grad():
        noise.mask.copy_(torch.tensor([1.0, 0.0, 0.5]))
        noise.delta.fill_(0.1)
        noise.xi.fill_(-0.2)
    noise.perturb = True
    out = bn(x)
    beta = bn.bias.view(1, -1, 1, 1)
    expected = torch.tensor([1.1, 0.1, 0.6]).view(1, -1, 1, 1) * (reference - beta) + 0.8 * beta
    assert torch.allclose(out, expected, atol=1e-6)
    noise.handle.remove()


def _zeroed_channels(model: nn.Module) -> int:
    return sum(
        int(((m.weight == 0) & (m.bias == 0)).sum())
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
    )


def test_masks_move_only_with_clean_loss_and_leave_the_model_unchanged(toy_trained):
    model, images, labels = toy_trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = ANPConfig(nb_iter=5, batch_size=16, lr=5.0)  # large lr: masks move in a few steps
    masks = optimise_masks(
        model,
        images,
        labels,
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
    )
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(masks) == n_bn and all(((m >= 0) & (m <= 1)).all() for m in masks.values())
    assert any(bool((m < 1).any()) for m in masks.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # restored after the mask optimisation


def test_pruning_takes_every_candidate_when_accuracy_allows_and_is_seeded(toy_trained):
    model, images, labels = toy_trained
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    results, states = [], []
    for _ in range(2):
        model.load_state_dict(initial)
        config = ANPConfig(nb_iter=5, batch_size=16, lr=5.0, pruning_threshold=0.9, acc_ratio=1e-6)
        results.append(
            adversarial_neuron_pruning(
                model,
                images,
                labels,
                config,
                device=torch.device("cpu"),
                generator=torch.Generator().manual_seed(1),
            )
        )
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert results[0] == results[1] and all(
        torch.equal(states[0][k], v) for k, v in states[1].items()
    )
    result = results[0]
    assert (
        0
        < result["pruned"]
        == result["candidates"]
        == _zeroed_channels(model)
        == sum(result["masks_below"].values())
    )


def test_pruning_stops_before_held_out_accuracy_falls_below_the_ratio(toy_trained, monkeypatch):
    model, images, labels = toy_trained
    # Every channel a candidate (random masks below the threshold): pruning them all would leave
    # chance accuracy, so only the held-out accuracy check can stop it.
    random_masks = lambda m, *a, **k: {  # noqa: E731
        n: torch.rand(b.num_features) * 0.1
        for n, b in m.named_modules()
        if isinstance(b, nn.BatchNorm2d)
    }
    monkeypatch.setattr(anp, "optimise_masks", random_masks)
    config = ANPConfig(pruning_threshold=0.2, acc_ratio=0.9, prune_step=0.05)
    result = adversarial_neuron_pruning(
        model,
        images,
        labels,
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
    )
    assert result["val_acc_before"] > 0.6  # the toy model is well above chance (1/3)
    assert 0 < result["pruned"] < result["candidates"] == result["channels"]
    assert result["val_acc_pruned"] >= 0.9 * result["val_acc_before"]
    assert _zeroed_channels(model) == result["pruned"]


def test_parameters_are_checked_by_name():
    with pytest.raises(ValueError, match=r"anp\.anp_eps"):
        ANPConfig.from_params({"anp_eps": 1.5})
    with pytest.raises(ValueError, match=r"anp\.eps: unknown parameter; did you mean .anp_eps."):
        ANPConfig.from_params({"eps": 0.4})
    with pytest.raises(ValueError, match=r"anp\.acc_ratio"):
        ANPConfig.from_params({"acc_ratio": 0})
