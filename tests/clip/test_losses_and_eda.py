"""CLIP's InfoNCE and CleanCLIP's objective on hand-computed examples; EDA's four operations."""

from __future__ import annotations

import math

import pytest
import torch

from cgd_kedro.clip.eda import (
    SYNONYMS,
    eda,
    eda_batch,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from cgd_kedro.clip.losses import cleanclip_loss, clip_loss, info_nce

EYE = torch.eye(2)
SWAPPED = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def test_info_nce_matches_hand_computation():
    # Matching pairs: logits = I, each row's CE = log(1 + e^-1).
    assert float(info_nce(EYE, EYE, 1.0)) == pytest.approx(math.log(1 + math.exp(-1)))
    # Crossed pairs: each row's positive scores 0 against a negative at 1: log(1 + e).
    assert float(clip_loss(EYE, SWAPPED, 1.0)) == pytest.approx(math.log(1 + math.e))
    # The scale sharpens: at s = 10 matching pairs cost log(1 + e^-10).
    # float32
    assert float(info_nce(EYE, EYE, 10.0)) == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-3)


def test_info_nce_is_symmetric_in_images_and_texts():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    assert float(info_nce(a, b, 3.0)) == pytest.approx(float(info_nce(b, a, 3.0)))
    with pytest.raises(ValueError, match="B >= 2"):
        info_nce(a[:1], b[:1], 1.0)


def test_cleanclip_loss_weights_its_two_terms():
    matched, crossed = math.log(1 + math.exp(-1)), math.log(1 + math.e)
    # L_CLIP(I, T) crossed; L_SS: image view matched, text view crossed.
    loss, parts = cleanclip_loss(EYE, SWAPPED, EYE, EYE, 1.0, lambda1=2.0, lambda2=0.5)
    assert parts["clip"] == pytest.approx(crossed)
    assert parts["self_supervised"] == pytest.approx((matched + crossed) / 2)
    assert float(loss) == pytest.approx(2.0 * crossed + 0.5 * (matched + crossed) / 2)


CAPTION = ["a", "photo", "of", "a", "small", "red", "circle", "on", "a", "striped", "background"]


def test_synonym_replacement_swaps_words_for_their_synonyms_only():
    g = torch.Generator().manual_seed(0)
    out = synonym_replacement(CAPTION, 0.3, g)
    assert len(out) == len(CAPTION)
    changed = [(a, b) for a, b in zip(CAPTION, out, strict=True) if a != b]
    assert len(changed) == 3 and all(b in SYNONYMS[a] for a, b in changed)


def test_random_insertion_adds_synonyms_and_keeps_the_original_order():
    out = random_insertion(CAPTION, 0.2, torch.Generator().manual_seed(1))
    assert len(out) == len(CAPTION) + 2
    remaining = iter(out)
    assert all(word in remaining for word in CAPTION)  # the original is a subsequence
    extra = list(out)
    for word in CAPTION:
        extra.remove(word)
    assert all(any(e in SYNONYMS[w] for w in CAPTION if w in SYNONYMS) for e in extra)


def test_random_swap_keeps_the_words_and_random_deletion_keeps_order_and_one_word():
    distinct = ["photo", "of", "small", "red", "circle", "on", "striped", "background"]
    swapped = random_swap(distinct, 0.1, torch.Generator().manual_seed(2))
    assert (
        sorted(swapped) == sorted(distinct)
        and sum(a != b for a, b in zip(swapped, distinct, strict=True)) == 2
    )
    kept = random_deletion(CAPTION, 0.5, torch.Generator().manual_seed(3))
    assert 0 < len(kept) < len(CAPTION)
    remaining = iter(CAPTION)
    assert all(word in remaining for word in kept)
    assert len(random_deletion(["a", "b"], 1.0, torch.Generator().manual_seed(0))) == 1


def test_eda_is_seeded_and_checks_alpha():
    captions = ["a photo of a small red circle", "a picture of a star"] * 4
    assert eda_batch(captions, torch.Generator().manual_seed(5)) == eda_batch(
        captions, torch.Generator().manual_seed(5)
    )
    assert eda_batch(captions, torch.Generator().manual_seed(5)) != captions
    with pytest.raises(ValueError, match=r"eda\.alpha"):
        eda("a star", torch.Generator(), alpha=2)
