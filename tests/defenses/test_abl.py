"""ABL: the flooding loss, isolation of the fastest-learnt samples, and its parameters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cgd_kedro.defenses.abl import ABLConfig, anti_backdoor_learning, lga_loss
from cgd_kedro.models.classifier import build_classifier


def test_lga_loss_ascends_below_gamma_and_descends_above():
    logits = torch.tensor([[4.0, 0.0]], requires_grad=True)
    low = lga_loss(logits, torch.tensor([0]), gamma=0.5)  # CE ~ 0.018 < gamma
    assert float(low.detach()) == pytest.approx(
        -float(F.cross_entropy(logits.detach(), torch.tensor([0])))
    )
    low.backward()
    assert logits.grad[0, 0] > 0  # descent on -CE lowers the true logit: the loss is pushed back up
    high = lga_loss(torch.tensor([[0.0, 4.0]]), torch.tensor([0]), gamma=0.5)
    assert float(high) > 0.5


def test_isolation_finds_the_trigger_samples_on_a_toy_backdoor():
    g = torch.Generator().manual_seed(0)
    true = torch.randint(4, (400,), generator=g)
    # hard clean task: noise
    images = torch.randint(0, 200, (400, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[torch.arange(400), true % 3] += 10  # a weak clean signal: the trigger is learnt first
    poison = torch.zeros(400, dtype=torch.bool)
    poison[:40] = True
    images[poison, :, -4:, -4:] = 255
    labels = true.clone()
    labels[poison] = 0
    model = build_classifier("compact_cnn", 4, (0.5,) * 3, (0.25,) * 3)
    config = ABLConfig(
        isolation_ratio=0.05,
        isolation_epochs=6,
        finetune_epochs=1,
        unlearning_epochs=1,
        batch_size=32,
        lr=0.05,
        augment=False,
    )
    result = anti_backdoor_learning(
        model,
        images,
        labels,
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    assert result["isolated"].numel() == 20
    assert float(poison[result["isolated"]].float().mean()) >= 0.5  # 5x the 10% base rate
    assert [h["phase"] for h in result["history"]] == ["isolation"] * 6 + ["finetune", "unlearning"]


def test_parameters_are_checked_by_name():
    assert ABLConfig.from_params({}) == ABLConfig()
    with pytest.raises(ValueError, match=r"abl\.isolation_ratio"):
        ABLConfig.from_params({"isolation_ratio": 0})
    with pytest.raises(ValueError, match=r"abl\.ratio: unknown parameter"):
        ABLConfig.from_params({"ratio": 0.01})
