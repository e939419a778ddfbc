"""CGD's entropy map and the clean / triggered split (REFERENCE.md §1.1-1.2).

The two "entropies" are per-sample negative log-likelihoods of the *given* label under CLIP's
zero-shot logits and under the suspicious model's logits, turned into ranks in (0, 1]. Poisoned
samples tend to have a *high* CLIP NLL (CLIP ignores the trigger, so the flipped label looks
wrong) and a *low* suspicious NLL (the suspicious model learns the trigger shortcut first).

Ground-truth poison flags never enter the split; ``split_quality`` uses them only to evaluate it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from cgd_kedro.config import ParameterModel


class SplitConfig(ParameterModel):
    """The ``split`` parameters (the reference's defaults)."""

    SECTION: ClassVar[str] = "split"

    sigma1: float = Field(
        0.2, ge=0, lt=1, description="clean = r_clip <= 1 - sigma1 and r_sus >= sigma1"
    )
    sigma2: float = Field(
        0.1, ge=0, lt=1, description="triggered = r_clip > 1 - sigma2 or r_sus < sigma2"
    )
    balance: bool = Field(True, description="oversample the clean subset to equal class sizes")

    @model_validator(mode="after")
    def _disjoint(self) -> SplitConfig:
        if self.sigma2 > self.sigma1:
            raise ValueError(
                f"split.sigma2 = {self.sigma2}: must not exceed sigma1 ({self.sigma1}) or a sample "
                "could be clean and triggered"
            )
        return self


def given_label_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """``-log softmax(logits)[i, labels[i]]`` for every sample (float64 for stable ranking)."""
    return F.cross_entropy(logits.double(), labels, reduction="none")


def rank_normalize(values: Tensor) -> Tensor:
    """``(rank + 1) / N`` with rank 0 for the smallest value; ties keep their input order."""
    order = torch.sort(values, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(values.numel())
    return (ranks.double() + 1) / values.numel()


def split_masks(
    r_clip: Tensor, r_sus: Tensor, sigma1: float = 0.2, sigma2: float = 0.1
) -> tuple[Tensor, Tensor]:
    """The split rule on rank scores.

    clean     = (r_clip <= 1 - sigma1) & (r_sus >= sigma1)
    triggered = (r_clip >  1 - sigma2) | (r_sus <  sigma2)

    Samples in neither mask are unused. With ``sigma2 <= sigma1`` the two masks are disjoint.
    """
    for name, value in (("sigma1", sigma1), ("sigma2", sigma2)):
        if not 0 <= value < 1:
            raise ValueError(f"split.{name}: expected a rank quantile in [0, 1), got {value!r}")
    if sigma2 > sigma1:
        raise ValueError(
            f"split.sigma2: must not exceed sigma1 ({sigma1}) or a sample could "
            "be clean and triggered"
        )
    clean = (r_clip <= 1 - sigma1) & (r_sus >= sigma1)
    triggered = (r_clip > 1 - sigma2) | (r_sus < sigma2)
    return clean, triggered


def balance_classes(indices: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
    """Oversample ``indices`` with replacement so every class (by ``labels[indices]``) reaches the
    size of the largest class; classes absent from ``indices`` stay absent."""
    given = labels[indices]
    classes, counts = torch.unique(given, return_counts=True)
    target = int(counts.max()) if counts.numel() else 0
    parts = []
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
        members = indices[given == cls]
        extra = members[torch.randint(count, (target - count,), generator=generator)]
        parts.append(torch.cat([members, extra]))
    return torch.cat(parts).sort().values if parts else indices.new_empty(0)


def auroc(scores: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for detecting ``positives`` (ties count one half)."""
    positives = positives.bool()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Mann-Whitney U with average ranks for ties.
    order = torch.argsort(scores.double())
    sorted_scores = scores.double()[order]
    ranks = torch.empty(scores.numel(), dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    ranks[order] = average[inverse]
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def split_quality(
    clean_balanced: Tensor, triggered: Tensor, poison: Tensor, r_clip: Tensor, r_sus: Tensor
) -> dict[str, float]:
    """How well the split separates ground-truth poisoned samples (evaluation only).

    Args:
        clean_balanced: indices of the class-balanced clean subset (with repeats).
        triggered: boolean mask of the triggered subset.
        poison: ground-truth poison flags.
        r_clip, r_sus: rank scores; high r_clip and low r_sus indicate poison.
    """
    n_poison = int(poison.sum())
    caught = int((triggered & poison).sum())
    return {
        "clean_size": int(clean_balanced.numel()),
        "clean_poisoned_fraction": float(poison[clean_balanced].float().mean())
        if clean_balanced.numel()
        else 0.0,
        "triggered_size": int(triggered.sum()),
        "triggered_recall": caught / n_poison if n_poison else float("nan"),
        "triggered_precision": caught / int(triggered.sum())
        if int(triggered.sum())
        else float("nan"),
        "auroc_clip": auroc(r_clip, poison),
        "auroc_sus": auroc(-r_sus, poison),
        "auroc_combined": auroc(r_clip - r_sus, poison),
    }


def cgd_split(
    labels: Tensor,
    clip_logits: Tensor,
    suspicious_logits: Tensor,
    config: SplitConfig,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Scores and split of one training set from its *given* labels and the two models' logits.

    Returns ``r_clip``, ``r_sus`` (rank scores), boolean masks ``clean`` and ``triggered``, and
    ``clean_indices`` (the clean subset's indices, class-balanced with
    repeats when ``config.balance``).
    """
    if not clip_logits.shape[0] == suspicious_logits.shape[0] == labels.shape[0]:
        raise ValueError(
            f"cgd split: {labels.shape[0]} labels but {clip_logits.shape[0]} CLIP and "
            f"{suspicious_logits.shape[0]} suspicious logits rows"
        )
    r_clip = rank_normalize(given_label_nll(clip_logits, labels))
    r_sus = rank_normalize(given_label_nll(suspicious_logits, labels))
    clean, triggered = split_masks(r_clip, r_sus, config.sigma1, config.sigma2)
    clean_indices = clean.nonzero().squeeze(1)
    if config.balance:
        clean_indices = balance_classes(clean_indices, labels, generator)
    return {
        "r_clip": r_clip,
        "r_sus": r_sus,
        "clean": clean,
        "triggered": triggered,
        "clean_indices": clean_indices,
    }
