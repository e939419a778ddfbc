"""ANP: the neuron-noise hook is exact, masks are optimised on clean data only, pruning zeroes BN channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgd_kedro.defenses.anp import ANPConfig, _NeuronNoise, adversarial_neuron_pruning
from cgd_kedro.models.classifier import build_classifier


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


def test_pruning_zeroes_channels_with_low_masks_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.randint(3, (64,), generator=g)
    results, states = [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_classifier("compact_cnn", 3, (0.5,) * 3, (0.25,) * 3)
        config = ANPConfig(nb_iter=5, batch_size=16, lr=5.0, pruning_threshold=0.9)  # large lr: masks move
        results.append(adversarial_neuron_pruning(model, images, labels, config, device=torch.device("cpu"), generator=torch.Generator().manual_seed(1)))
        states.append(model.state_dict())
    assert results[0] == results[1] and all(torch.equal(states[0][k], v) for k, v in states[1].items())
    result = results[0]
    zeroed = sum(int(((m.weight == 0) & (m.bias == 0)).sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert 0 < result["pruned"] == zeroed < result["channels"]
    assert all(p.requires_grad for p in model.parameters())  # restored after the mask optimisation


def test_parameters_are_checked_by_name():
    with pytest.raises(ValueError, match="anp.anp_eps"):
        ANPConfig(anp_eps=1.5)
    with pytest.raises(ValueError, match="anp: unknown"):
        ANPConfig.from_params({"eps": 0.4})
