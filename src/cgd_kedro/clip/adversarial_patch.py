"""ABD's adversarial patch (REFERENCE.md §3): a universal patch in the bottom-right corner that
makes clean images behave, under the *backdoored* encoder, the way triggered images do.

A backdoor's signature in CLIP's embedding space is that triggered images leave their own captions
and gather at one point (the target's). The patch is optimised directly (Adam on a sigmoid-bounded
pattern) to reproduce that signature on clean image-caption pairs with the backdoor loss

    L_bd = mean_i cos(f(x_i + p), g(t_i)) - mean_i cos(f(x_i + p), c),
    c = normalise(mean_i f(x_i + p))

(its first term is the positive pair of CLIP's InfoNCE, driven down; the second pulls the patched
images together). The target class is never used: the defender does not know it.

Two ways to find the patch (``method``):

- ``direct`` (default): Adam on the logits of one sigmoid-bounded pattern.
- ``generator``: the paper's construction. A small MLP generator maps Gaussian noise to patches, a
  discriminator tells them from same-sized crops of the clean images, and the generator minimises
  ``L_bd + adversarial_weight * (non-saturating GAN loss)``, i.e. imitates the backdoor with
  patches that look like image content. The universal patch is the generator's output at ``z = 0``.

``benchmarks/abd_patch_methods.py`` compares the two on a backdoored CLIP (how well the patch
imitates the real trigger, and ABD's CA/ASR with each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.clip.triggers import (
    ClipTrigger,
    apply_trigger,
    corner_mask,
    frozen,
    optimise_corner_patch,
)
from cgd_kedro.clip.zero_shot import clip_preprocess
from cgd_kedro.config import MAX_BATCH_SIZE, MAX_STEPS, ParameterModel


class AdversarialPatchConfig(ParameterModel):
    """The ``abd.patch`` parameters."""

    SECTION: ClassVar[str] = "abd.patch"

    patch_size: int = Field(
        6,
        ge=1,
        le=1024,
        description=(
            "side of the corner patch in pixels (6 of 32 = 3.5% of the image; the paper: ~3%)"
        ),
    )
    steps: int = Field(200, ge=1, le=MAX_STEPS, description="Adam steps")
    lr: float = Field(
        0.05, gt=0, le=10, description="Adam learning rate on the patch's logits (direct)"
    )
    batch_size: int = Field(128, ge=2, le=MAX_BATCH_SIZE, description="clean pairs per step")
    method: Literal["direct", "generator"] = Field(
        "direct",
        description=(
            "direct (optimise the pattern) or generator (noise-fed generator with a "
            "discriminator, the paper's)"
        ),
    )
    generator_lr: float = Field(
        1e-3,
        gt=0,
        le=10,
        description="Adam learning rate of the generator and the discriminator (generator only)",
    )
    noise_dim: int = Field(
        32, ge=1, le=4096, description="the generator's noise dimension (generator only)"
    )
    adversarial_weight: float = Field(
        0.1,
        ge=0,
        le=1000,
        description="weight of the generator's GAN loss next to L_bd (generator only)",
    )


def backdoor_loss(patched_features: Tensor, text_features: Tensor) -> Tensor:
    """``L_bd`` on unit features: patched images away from their captions, toward each other."""
    centre = F.normalize(patched_features.mean(0), dim=-1)
    return (patched_features * text_features).sum(-1).mean() - (patched_features @ centre).mean()


def optimise_adversarial_patch(
    model: nn.Module,
    tokenizer,
    images: Tensor,
    captions: Sequence[str],
    config: AdversarialPatchConfig,
    preprocess: dict,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> tuple[ClipTrigger, list[float]]:
    """The universal corner patch for ``model`` from clean pairs; the trigger and ``L_bd`` per step.
    The model's weights are not changed."""
    model.to(device).eval()
    with torch.no_grad():
        text_features = torch.cat(
            [
                model.encode_text(chunk.to(device), normalize=True)
                for chunk in tokenizer(list(captions)).split(512)
            ]
        )
    if config.method == "generator":
        return _generate_patch(
            model, images, text_features, config, preprocess, device=device, generator=generator
        )
    return optimise_corner_patch(
        model,
        images,
        config.patch_size,
        lambda features, batch: backdoor_loss(features, text_features[batch.to(device)]),
        preprocess,
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        device=device,
        generator=generator,
        description="abd patch",
    )


class PatchGenerator(nn.Module):
    """Gaussian noise ``B x noise_dim`` -> patches ``B x C x p x p`` in [0, 1]."""

    def __init__(self, noise_dim: int, channels: int, patch_size: int, hidden: int = 128) -> None:
        super().__init__()
        self.shape = (channels, patch_size, patch_size)
        self.net = nn.Sequential(
            nn.Linear(noise_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels * patch_size * patch_size),
        )

    def forward(self, noise: Tensor) -> Tensor:
        return torch.sigmoid(self.net(noise)).view(-1, *self.shape)


def _discriminator(channels: int, patch_size: int, hidden: int = 128) -> nn.Module:
    """Real image crops vs generated patches (a logit per patch)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * patch_size**2, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


def _random_crops(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """One random ``size x size`` crop of each image (the discriminator's real samples)."""
    height, width = images.shape[-2:]
    n, channels = images.shape[:2]
    offsets = torch.arange(size)
    rows = (torch.randint(height - size + 1, (n,), generator=generator)[:, None] + offsets).to(
        images.device
    )
    cols = (torch.randint(width - size + 1, (n,), generator=generator)[:, None] + offsets).to(
        images.device
    )
    batch, channel = (
        torch.arange(n, device=images.device),
        torch.arange(channels, device=images.device),
    )
    return images[
        batch[:, None, None, None],
        channel[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def _generate_patch(
    model: nn.Module,
    images: Tensor,
    text_features: Tensor,
    config: AdversarialPatchConfig,
    preprocess: dict,
    *,
    device: torch.device,
    generator: torch.Generator,
) -> tuple[ClipTrigger, list[float]]:
    """The ``generator`` method: returns the patch at ``z = 0`` and ``L_bd`` per step."""
    _, channels, height, _ = images.shape
    size = config.patch_size
    mask = corner_mask(height, size).to(device)
    with torch.random.fork_rng(
        devices=[]
    ):  # the networks' initialisation follows `generator`, not global state
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        patch_generator = PatchGenerator(config.noise_dim, channels, size).to(device)
        discriminator = _discriminator(channels, size).to(device)
    optimise_generator = torch.optim.Adam(
        patch_generator.parameters(), lr=config.generator_lr, betas=(0.5, 0.999)
    )
    optimise_discriminator = torch.optim.Adam(
        discriminator.parameters(), lr=config.generator_lr, betas=(0.5, 0.999)
    )

    def to_canvas(
        patches: Tensor,
    ) -> Tensor:  # B x C x p x p -> B x C x H x W, the patch bottom-right
        return F.pad(patches, (height - size, 0, height - size, 0))

    losses = []
    with frozen(model):
        for _ in tqdm(
            range(config.steps), desc="abd patch generator", unit="step", disable=None, leave=False
        ):
            batch = torch.randint(images.shape[0], (config.batch_size,), generator=generator)
            x = images[batch].to(device).float() / 255
            noise = torch.randn(config.batch_size, config.noise_dim, generator=generator).to(device)
            patches = patch_generator(noise)
            real = _random_crops(x, size, generator)
            # discriminator: real crops -> 1, generated patches -> 0
            d_real, d_fake = discriminator(real), discriminator(patches.detach())
            d_loss = F.binary_cross_entropy_with_logits(
                d_real, torch.ones_like(d_real)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            optimise_discriminator.zero_grad(set_to_none=True)
            d_loss.backward()
            optimise_discriminator.step()
            # generator: imitate the backdoor, look like image content
            features = model.encode_image(
                clip_preprocess(
                    apply_trigger(x, {"pattern": to_canvas(patches), "mask": mask}), **preprocess
                ),
                normalize=True,
            )
            bd = backdoor_loss(features, text_features[batch.to(device)])
            d_out = discriminator(patches)
            g_loss = bd + config.adversarial_weight * F.binary_cross_entropy_with_logits(
                d_out, torch.ones_like(d_out)
            )
            optimise_generator.zero_grad(set_to_none=True)
            g_loss.backward()
            optimise_generator.step()
            losses.append(float(bd.detach()))
    with torch.no_grad():
        pattern = to_canvas(patch_generator(torch.zeros(1, config.noise_dim, device=device)))[0]
    return {"pattern": pattern.cpu(), "mask": mask.cpu()}, losses
