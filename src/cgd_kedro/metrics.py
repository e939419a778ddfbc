"""Classifier evaluation: clean accuracy (CA), attack success rate (ASR),
robust accuracy (RA), DER."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cgd_kedro.accelerate import autocast, prepare_model, to_device
from cgd_kedro.data.imageset import ImageSet
from cgd_kedro.training.classifier import to_unit_float


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: Tensor, *, device: torch.device, batch_size: int = 512
) -> Tensor:
    """Logits of ``model`` (in eval mode) for uint8 or [0, 1] float images, batched on ``device``;
    returned on CPU."""
    prepare_model(model, device).eval()
    with autocast(device):
        outputs = [
            model(
                to_unit_float(to_device(chunk, device)).contiguous(
                    memory_format=torch.channels_last
                )
            )
            .float()
            .cpu()
            for chunk in images.split(batch_size)
        ]
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    return float((predictions == labels).float().mean()) if labels.numel() else float("nan")


def evaluate_backdoor(
    model: nn.Module,
    clean_test: ImageSet,
    backdoor_test: ImageSet,
    *,
    device: torch.device,
    batch_size: int = 512,
) -> dict[str, float]:
    """CA on ``clean_test``; ASR and RA on ``backdoor_test``.

    ``backdoor_test`` holds triggered test images with ``labels`` = the attacker's target label and
    ``original_labels`` = the true class: ASR is the share predicted as the target, RA the share
    predicted as the true class. All three are fractions in [0, 1].
    """
    clean_pred = predict_logits(
        model, clean_test["images"], device=device, batch_size=batch_size
    ).argmax(1)
    bd_pred = predict_logits(
        model, backdoor_test["images"], device=device, batch_size=batch_size
    ).argmax(1)
    return {
        "clean_acc": accuracy(clean_pred, clean_test["labels"]),
        "asr": accuracy(bd_pred, backdoor_test["labels"]),
        "ra": accuracy(bd_pred, backdoor_test["original_labels"]),
    }


def defense_effectiveness_rating(before: dict[str, float], after: dict[str, float]) -> float:
    """DER = (max(0, ASR drop) - max(0, CA drop) + 1) / 2, in [0, 1]; 1 is the best defense."""
    asr_drop = before["asr"] - after["asr"]
    ca_drop = before["clean_acc"] - after["clean_acc"]
    return (max(0.0, asr_drop) - max(0.0, ca_drop) + 1) / 2
