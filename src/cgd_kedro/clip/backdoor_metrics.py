"""Zero-shot backdoor metrics of a CLIP model: CA on the clean test set and ASR on every non-target
test image carrying the trigger (the share classified as the target), both fractions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cgd_kedro.clip.factory import get_tokenizer, preprocess_config
from cgd_kedro.clip.triggers import ClipTrigger, triggered_non_target
from cgd_kedro.clip.zero_shot import class_text_embeddings, image_embeddings, zero_shot_logits
from cgd_kedro.metrics import accuracy


@torch.no_grad()
def zero_shot_backdoor_metrics(
    model: nn.Module,
    model_name: str,
    test_images: Tensor,
    test_labels: Tensor,
    class_names: Sequence[str],
    templates: Sequence[str],
    trigger: ClipTrigger,
    target: int,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """``{clean_acc, asr}`` of ``model`` (zero-shot with the prompted class names)."""
    text = class_text_embeddings(
        model, get_tokenizer(model_name), class_names, templates, device
    ).cpu()
    preprocess = preprocess_config(model)
    clean = zero_shot_logits(
        image_embeddings(model, test_images, preprocess, device, batch_size), text
    ).argmax(1)
    triggered, _ = triggered_non_target(test_images, test_labels, trigger, target)
    backdoor = zero_shot_logits(
        image_embeddings(model, triggered, preprocess, device, batch_size), text
    ).argmax(1)
    return {
        "clean_acc": accuracy(clean, test_labels),
        "asr": float((backdoor == target).float().mean()),
    }
