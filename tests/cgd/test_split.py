"""CGD scores and split rule on hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from cgd_kedro.cgd.split import (
    auroc,
    balance_classes,
    given_label_nll,
    rank_normalize,
    split_masks,
    split_quality,
)


def test_given_label_nll_matches_hand_computation():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    nll = given_label_nll(logits, torch.tensor([0, 1]))
    assert nll[0].item() == pytest.approx(math.log(2))
    assert nll[1].item() == pytest.approx(math.log(4))  # p(y=1) = 1 / (3 + 1)


def test_rank_normalize_is_rank_plus_one_over_n_with_stable_ties():
    r = rank_normalize(torch.tensor([3.0, 1.0, 2.0, 1.0]))
    assert r.tolist() == [1.0, 0.25, 0.75, 0.5]


def test_split_rule_on_rank_quantiles():
    r_clip = torch.tensor([0.10, 0.85, 0.95, 0.50, 0.50])
    r_sus = torch.tensor([0.50, 0.50, 0.50, 0.05, 0.15])
    clean, triggered = split_masks(r_clip, r_sus, sigma1=0.2, sigma2=0.1)
    assert clean.tolist() == [True, False, False, False, False]  # 0.85 > 0.8; 0.15 < 0.2
    assert triggered.tolist() == [False, False, True, True, False]  # 0.95 > 0.9; 0.05 < 0.1
    assert not bool((clean & triggered).any())


@pytest.mark.parametrize(
    ("sigma1", "sigma2", "match"),
    [(1.2, 0.1, "sigma1"), (0.2, -0.1, "sigma2"), (0.1, 0.2, "sigma2")],
)
def test_split_parameters_are_checked(sigma1, sigma2, match):
    with pytest.raises(ValueError, match=rf"split\.{match}"):
        split_masks(torch.rand(4), torch.rand(4), sigma1, sigma2)


def test_balance_classes_oversamples_to_the_largest_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    balanced = balance_classes(
        torch.tensor([0, 1, 2, 3, 5]), labels, torch.Generator().manual_seed(0)
    )
    counts = torch.bincount(labels[balanced], minlength=3)
    assert counts.tolist() == [3, 3, 3]
    assert set(balanced.tolist()) == {0, 1, 2, 3, 5}  # only members of the subset are repeated


def test_auroc_with_ties_matches_mann_whitney():
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(
        0.75
    )
    assert auroc(torch.ones(4), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.5)
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([0, 1])) == 1.0
    assert math.isnan(auroc(torch.rand(3), torch.zeros(3)))


def test_split_quality_counts_against_ground_truth():
    poison = torch.tensor([False, False, True, True])
    triggered = torch.tensor([False, True, True, False])
    quality = split_quality(
        torch.tensor([0, 0, 1]),
        triggered,
        poison,
        torch.tensor([0.25, 0.5, 0.75, 1.0]),
        torch.tensor([1.0, 0.75, 0.5, 0.25]),
    )
    assert quality["clean_size"] == 3 and quality["clean_poisoned_fraction"] == 0.0
    assert quality["triggered_recall"] == 0.5 and quality["triggered_precision"] == 0.5
    assert (
        quality["auroc_clip"] == 1.0
        and quality["auroc_sus"] == 1.0
        and quality["auroc_combined"] == 1.0
    )
