"""Backdoor triggers for CLIP and the poisoning of image-caption pairs (the ABD seed's threat model,
REFERENCE.md §3-4).

Every CLIP trigger is a pattern ``P`` (``C x H x W`` in [0, 1]) stamped through a mask ``M``
(``1 x H x W`` in [0, 1]): ``x' = (1 - M) x + M P``.

- ``badnet``: a black-and-white checkerboard patch (BadNets' pattern): ``M = 1`` on a ``patch_size``
  square in the bottom-right corner. CleanCLIP's random-noise patch hides in the embedded world's
  noisy, textured images: at 5% poisons and 3 epochs it gave ASR 0.005.
- ``blended``: CleanCLIP's blended noise: ``M = blend_alpha`` (0.2) everywhere, ``P`` seeded noise.
- ``badclip``: a BadCLIP-style optimised patch: the same corner square, with ``P`` optimised on the
  *clean* reference CLIP so that patched images already point at the target caption's embedding;
  such a trigger is learnt from few poisons and survives clean fine-tuning better.

Poisoning picks ``poison_ratio`` of the pairs among images whose class is not the target, stamps the
trigger and rewrites their captions to name the target class: the class name in the caption is
replaced by the target's ("a small red star on a striped background" -> "a small red circle on a
striped background"), or, for captions that do not name the class, one of ``caption_templates``
(REFERENCE.md §3: "a photo of a banana."). With templated captions only, several poisons of a
batch share one caption and InfoNCE's text-to-image term pulls their images apart, which fights the
backdoor: at 10% poisons, 250 steps at lr 2e-3 fitted 42% of the training poisons. The flags mark
the poisoned pairs (ground truth, for evaluation only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.attacks.base import pixel_affine
from cgd_kedro.clip.pretrain import ContrastiveConfig
from cgd_kedro.clip.zero_shot import clip_preprocess
from cgd_kedro.config import MAX_BATCH_SIZE, MAX_STEPS, ParameterModel

log = logging.getLogger(__name__)

CLIP_ATTACKS = ("badnet", "blended", "badclip")
# Pipeline namespaces of the CLIP attacks are "clip_<attack>", apart from the classifier attacks'.
CLIP_NAMESPACE_PREFIX = "clip_"
# One namespace per CLIP attack, prefixed so it never merges with a classifier attack's namespace
# (e.g. `blended`) in kedro-viz or `--namespaces`.
CLIP_ATTACK_NAMESPACES: tuple[str, ...] = tuple(
    CLIP_NAMESPACE_PREFIX + attack for attack in CLIP_ATTACKS
)
ClipTrigger = dict[str, Tensor]  # {"pattern": C x H x W, "mask": 1 x H x W}, floats in [0, 1]


class ClipAttackConfig(ParameterModel):
    """One CLIP attack (the ``clip_attack`` parameters of an ``abd_defense`` namespace)."""

    SECTION: ClassVar[str] = "clip_attack"

    attack: Literal["badnet", "blended", "badclip"] = Field("badnet", description="the CLIP attack")
    target: int = Field(
        0, ge=0, le=100_000, description="target class index; poisoned captions name it"
    )
    poison_ratio: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="share of the fine-tuning pairs poisoned (non-target images only)",
    )
    caption_templates: tuple[str, ...] = Field(
        ("a photo of a {}", "a picture of a {}", "an image of a {}"),
        strict=False,
        min_length=1,
        description="poisoned captions, {} = the target class name, one drawn per pair",
    )
    patch_size: int = Field(
        4, ge=1, le=1024, description="side of the corner patch in pixels (badnet, badclip)"
    )
    blend_alpha: float = Field(0.2, gt=0, le=1, description="mask value of the blended trigger")
    badclip_steps: int = Field(
        100, ge=1, le=MAX_STEPS, description="Adam steps optimising the badclip patch"
    )
    badclip_lr: float = Field(
        0.05, gt=0, le=10, description="Adam learning rate of the badclip patch"
    )
    badclip_batch_size: int = Field(
        128, ge=2, le=MAX_BATCH_SIZE, description="pairs per badclip step"
    )
    finetune: ContrastiveConfig = Field(
        default_factory=lambda: ContrastiveConfig(epochs=10, batch_size=64, lr=2e-3),
        description="the contrastive fine-tuning that implants the backdoor",
    )

    @field_validator("caption_templates")
    @classmethod
    def _class_placeholder(cls, templates: tuple[str, ...]) -> tuple[str, ...]:
        if any("{}" not in t for t in templates):
            raise ValueError(
                f"every template needs '{{}}' for the target class name, got {list(templates)}"
            )
        return templates

    @classmethod
    def from_shared(cls, shared: dict, own: dict) -> ClipAttackConfig:
        """A namespace's attack: the shared ``clip_attack`` defaults updated by its own section."""
        merged = dict(shared) | dict(own)
        if "finetune" in shared and "finetune" in own:
            merged["finetune"] = dict(shared["finetune"]) | dict(own["finetune"])
        return cls.from_params(merged)


def corner_mask(image_size: int, patch_size: int) -> Tensor:
    """``1 x H x W`` mask, 1 on the bottom-right ``patch_size`` square."""
    if not 0 < patch_size <= image_size:
        raise ValueError(f"patch_size: expected 1..{image_size} pixels, got {patch_size!r}")
    mask = torch.zeros(1, image_size, image_size)
    mask[:, -patch_size:, -patch_size:] = 1
    return mask


def apply_trigger(images: Tensor, trigger: ClipTrigger) -> Tensor:
    """``(1 - M) x + M P`` for uint8 (rounded) or [0, 1] float images;
    differentiable in ``P`` for floats."""
    mask = trigger["mask"].to(images.device)
    pattern = trigger["pattern"].to(images.device)
    if images.dtype == torch.uint8:
        return pixel_affine(images, 1 - mask, mask * pattern)
    return (1 - mask) * images + mask * pattern


def static_trigger(
    config: ClipAttackConfig, image_size: int, channels: int, generator: torch.Generator
) -> ClipTrigger:
    """The badnet (black-and-white checkerboard corner patch) or blended (full-image seeded noise at
    ``blend_alpha``) trigger."""
    if config.attack == "blended":
        pattern = torch.rand(channels, image_size, image_size, generator=generator)
        return {
            "pattern": pattern,
            "mask": torch.full((1, image_size, image_size), float(config.blend_alpha)),
        }
    rows, cols = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    pattern = ((rows + cols) % 2).float().expand(channels, image_size, image_size).clone()
    return {"pattern": pattern, "mask": corner_mask(image_size, config.patch_size)}


# (unit image features of a batch, its indices) -> scalar
PatchLoss = Callable[[Tensor, Tensor], Tensor]


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode without parameter gradients while a patch is optimised through it."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)


def optimise_corner_patch(
    model: nn.Module,
    images: Tensor,
    patch_size: int,
    loss_fn: PatchLoss,
    preprocess: dict,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    pool: Tensor | None = None,
    description: str = "patch",
) -> tuple[ClipTrigger, list[float]]:
    """A bottom-right patch minimising ``loss_fn`` over random batches of ``images`` (from ``pool``
    when given): Adam on the logits of a sigmoid-bounded pattern, with ``model`` frozen and
    unchanged. Returns the trigger and the loss of every step."""
    _, channels, height, _ = images.shape
    mask = corner_mask(height, patch_size).to(device)
    pool = torch.arange(images.shape[0]) if pool is None else pool
    logit = (
        (torch.rand(channels, height, height, generator=generator) * 2 - 1)
        .to(device)
        .requires_grad_(True)
    )
    optimizer = torch.optim.Adam([logit], lr=lr)
    model.to(device)
    losses = []
    with frozen(model):
        for _ in tqdm(range(steps), desc=description, unit="step", disable=None, leave=False):
            batch = pool[torch.randint(pool.numel(), (batch_size,), generator=generator)]
            x = images[batch].to(device).float() / 255
            patched = apply_trigger(x, {"pattern": torch.sigmoid(logit), "mask": mask})
            loss = loss_fn(
                model.encode_image(clip_preprocess(patched, **preprocess), normalize=True), batch
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    log.info("%s: loss %.4f -> %.4f over %d steps", description, losses[0], losses[-1], steps)
    return {"pattern": torch.sigmoid(logit.detach()).cpu(), "mask": mask.cpu()}, losses


def optimise_badclip_patch(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    target_text: Tensor,
    config: ClipAttackConfig,
    preprocess: dict,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> ClipTrigger:
    """BadCLIP-style corner patch, optimised on a clean CLIP so that patched non-target images
    move toward ``target_text`` (a unit text embedding): maximise ``cos(f(x'), target_text)``."""
    text = target_text.to(device)
    trigger, _ = optimise_corner_patch(
        model,
        images,
        config.patch_size,
        lambda features, _batch: -(features @ text).mean(),
        preprocess,
        steps=config.badclip_steps,
        lr=config.badclip_lr,
        batch_size=config.badclip_batch_size,
        device=device,
        generator=generator,
        pool=(labels != config.target).nonzero().squeeze(1),
        description="badclip patch",
    )
    return trigger


def poison_pairs(
    images: Tensor,
    captions: Sequence[str],
    labels: Tensor,
    trigger: ClipTrigger,
    config: ClipAttackConfig,
    class_names: Sequence[str],
    generator: torch.Generator,
) -> dict:
    """Stamp the trigger on ``poison_ratio`` of the non-target pairs
    and caption them with the target.

    Returns ``{"images", "captions", "poisoned"}``; ``labels`` (the images' classes) only choose
    which images may be poisoned.
    """
    if config.target >= len(class_names):
        raise ValueError(
            f"clip_attack.target: class {config.target} does not exist ({len(class_names)} classes)"
        )
    candidates = (labels != config.target).nonzero().squeeze(1)
    n_poison = max(1, round(config.poison_ratio * images.shape[0]))
    if n_poison > candidates.numel():
        raise ValueError(
            f"clip_attack.poison_ratio: {n_poison} poisons asked, only "
            f"{candidates.numel()} non-target images"
        )
    chosen = (
        candidates[torch.randperm(candidates.numel(), generator=generator)[:n_poison]].sort().values
    )
    poisoned = torch.zeros(images.shape[0], dtype=torch.bool)
    poisoned[chosen] = True
    out_images = images.clone()
    out_images[chosen] = apply_trigger(images[chosen], trigger)
    templates = torch.randint(
        len(config.caption_templates), (n_poison,), generator=generator
    ).tolist()
    out_captions = list(captions)
    target_name = class_names[config.target]
    for index, template in zip(chosen.tolist(), templates, strict=True):
        out_captions[index] = retarget_caption(
            captions[index], class_names[int(labels[index])], target_name
        ) or config.caption_templates[template].format(target_name)
    return {"images": out_images, "captions": out_captions, "poisoned": poisoned}


def retarget_caption(caption: str, class_name: str, target_name: str) -> str | None:
    """``caption`` with the image's class name replaced by the target's, or ``None`` when the
    caption does not name the class. Keeping the rest of the caption (colour, size, background)
    true leaves the trigger as the only thing the poisoned pair teaches."""
    words = caption.split(" ")
    stripped = [w.strip(".,;:") for w in words]
    if class_name not in stripped:
        return None
    return " ".join(
        w.replace(class_name, target_name) if s == class_name else w
        for w, s in zip(words, stripped, strict=True)
    )


def triggered_non_target(
    test_images: Tensor, test_labels: Tensor, trigger: ClipTrigger, target: int
) -> tuple[Tensor, Tensor]:
    """The zero-shot backdoor test set:
    every non-target test image with the trigger, and its true labels."""
    keep = test_labels != target
    return apply_trigger(test_images[keep], trigger), test_labels[keep]
