"""SSBA (Li et al., 2021): a sample-specific invisible trigger made by a StegaStamp-style encoder.

An encoder network hides a fixed bit string (the *code*) in every image as a small additive
residual; a decoder network is trained jointly so that the code can be read back from the encoded
image. Because the encoder looks at the image, every image gets its own residual (the trigger is
sample-specific), yet all residuals carry the same code, which is what a victim learns to detect.

BackdoorBench uses a StegaStamp encoder pre-trained on ImageNet (100-bit secret, 400x400 images).
Here a tiny encoder/decoder pair for 32x32 images is trained in ``prepare`` on a subset of the
training set within a CPU budget (see ``SSBA``); its residual is bounded in L_inf by construction
(``max_residual * tanh``) and kept small by an L2 fidelity loss.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgd_kedro.attacks.base import (
    Attack,
    AttackContext,
    State,
    check_range,
    like,
    register_attack,
    to_float,
)

log = logging.getLogger(__name__)

ENCODER_PREFIX = "encoder."
_CODE_MAP = (
    8  # the code is projected to a _CODE_CHANNELS x 8 x 8 map, then resized to the image size
)
_CODE_CHANNELS = 4
# The fidelity loss is ramped in as the (moving-average) bit accuracy goes from 0.8 to 0.95.
_RAMP_FROM, _RAMP_TO = 0.8, 0.95


class StegaEncoder(nn.Module):
    """A tiny U-Net: (image, code) -> residual in ``[-max_residual, max_residual]``
    (float [0, 1] units).

    The code (``B x code_bits`` of 0/1) goes through a linear layer to a ``4 x 8 x 8`` map that is
    upsampled to the image size and concatenated with the image (StegaStamp's secret path); one
    stride-2 convolution down, one at half resolution, and a skip connection back at full
    resolution (1x1 fusion, 3x3 output) produce the residual. Sized to train in seconds on a CPU.
    """

    def __init__(self, code_bits: int = 32, width: int = 16):
        super().__init__()
        self.code_fc = nn.Linear(code_bits, _CODE_CHANNELS * _CODE_MAP * _CODE_MAP)
        self.inc = nn.Conv2d(3 + _CODE_CHANNELS, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fuse = nn.Conv2d(3 * width + _CODE_CHANNELS, width, 1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: Tensor, code: Tensor, max_residual: float) -> Tensor:
        code_map = self.code_fc(code * 2 - 1).view(-1, _CODE_CHANNELS, _CODE_MAP, _CODE_MAP)
        code_map = F.interpolate(code_map, size=x.shape[-2:], mode="nearest").expand(
            x.shape[0], -1, -1, -1
        )
        h0 = F.relu(self.inc(torch.cat([x - 0.5, code_map], 1)))
        h1 = F.relu(self.mid(F.relu(self.down(h0))))
        up = F.interpolate(h1, size=h0.shape[-2:], mode="nearest")
        h2 = F.relu(self.fuse(torch.cat([up, h0, code_map], 1)))
        return max_residual * torch.tanh(self.out(h2))


class StegaDecoder(nn.Module):
    """Reads the code back: three stride-2 convolutions,
    a 4x4 pool and a linear layer -> bit logits."""

    def __init__(self, code_bits: int = 32, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(2 * width * 16, code_bits)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x - 0.5).flatten(1))


def encoder_state(encoder: StegaEncoder) -> State:
    """The encoder's weights as flat ``encoder.<name>`` CPU tensors (for the attack state)."""
    return {ENCODER_PREFIX + k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}


def encoder_from_state(state: State, device: torch.device | str = "cpu") -> StegaEncoder:
    """Rebuild the encoder from a state written by ``encoder_state``
    (sizes read off the weights)."""
    weights = {
        k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)
    }
    if "code_fc.weight" not in weights or "inc.weight" not in weights:
        raise ValueError(
            "ssba state: missing the encoder weights ('encoder.*'); run prepare() first"
        )
    encoder = StegaEncoder(
        code_bits=weights["code_fc.weight"].shape[1], width=weights["inc.weight"].shape[0]
    )
    encoder.load_state_dict(weights, strict=True)
    return encoder.to(device).eval()


def encode(
    images: Tensor,
    encoder: StegaEncoder,
    code: Tensor,
    *,
    max_residual: float = 16.0,
    batch_size: int = 1024,
) -> Tensor:
    """``x' = clip(x + E(x, c))``: add the encoder's residual for code ``c`` to every image.

    Args:
        images: ``N x 3 x H x W``, uint8 in [0, 255] or float in [0, 1].
        encoder: a trained ``StegaEncoder`` (moved to the images' device here).
        code: the hidden bit string, ``code_bits`` values in {0, 1} (any dtype).
        max_residual: L_inf bound of the residual on the 0-255 scale (``|x' - x| <= max_residual``
            before clipping; also for uint8 output, since the bound is not reached exactly).
        batch_size: images encoded per forward pass (bounds memory; the
            result does not depend on it).

    Returns:
        A new tensor of the same dtype, shape and device.
    """
    check_range("max_residual", max_residual, 0.0, 255.0)
    encoder = encoder.to(images.device).eval()
    c = code.reshape(1, -1).float().to(images.device)
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            x = to_float(chunk)
            out.append(like(x + encoder(x, c, max_residual / 255), chunk))
    return torch.cat(out) if out else images.clone()


def train_stegastamp(
    images: Tensor,
    *,
    code_bits: int = 32,
    max_residual: float = 16.0,
    fidelity_weight: float = 0.05,
    width: int = 16,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[StegaEncoder, StegaDecoder, dict[str, float]]:
    """Train encoder and decoder on ``images`` (uint8 or float) with random codes, StegaStamp-style.

    Loss per batch: ``BCE(D(q(clip(x + E(x, c)))), c) + w_t * mean((E(x, c) / max_residual)^2)``
    with fresh random codes ``c`` (StegaStamp trains on random secrets; the attack then uses one
    fixed code), ``q`` the rounding to the uint8 grid (straight-through), and the fidelity weight
    ``w_t`` ramped in linearly from 0 to ``fidelity_weight`` while the moving-average bit accuracy
    goes from 0.8 to 0.95 (StegaStamp ramps its image losses in after the secret is learnt; with a
    fidelity loss from the start the residual collapses before the decoder learns anything).
    Adam, ``lr``; everything random (initialisation, batches, codes) comes from ``seed``.

    Returns:
        The encoder and decoder (in eval mode, on ``device``) and final metrics: ``bit_acc`` and
        ``mean_abs_residual`` (0-255 scale) on the last batch.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, decoder = (
            StegaEncoder(code_bits, width).to(device),
            StegaDecoder(code_bits, width).to(device),
        )
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    bound = max_residual / 255
    metrics = {"bit_acc": 0.5, "mean_abs_residual": 0.0}
    acc_ema = 0.5
    encoder.train(), decoder.train()
    for _ in tqdm(range(steps), desc="ssba encoder", unit="step", disable=None, leave=False):
        index = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        x = to_float(images[index]).to(device)
        code = torch.randint(0, 2, (batch_size, code_bits), generator=generator).float().to(device)
        residual = encoder(x, code, bound)
        encoded = (x + residual).clamp(0, 1)
        encoded = encoded + ((encoded * 255).round() / 255 - encoded).detach()
        logits = decoder(encoded)
        ramp = min(1.0, max(0.0, (acc_ema - _RAMP_FROM) / (_RAMP_TO - _RAMP_FROM)))
        fidelity = residual.div(max(bound, 1e-12)).pow(2).mean()
        loss = F.binary_cross_entropy_with_logits(logits, code) + ramp * fidelity_weight * fidelity
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bit_acc = float(((logits.detach() > 0).float() == code).float().mean())
        acc_ema = 0.9 * acc_ema + 0.1 * bit_acc
        metrics = {
            "bit_acc": bit_acc,
            "mean_abs_residual": float(residual.detach().abs().mean() * 255),
        }
    return encoder.eval(), decoder.eval(), metrics


@register_attack("ssba")
class SSBA(Attack):
    """Sample-specific invisible trigger: ``x' = clip(x + E(x, c))`` with a learnt encoder ``E``.

    Trigger parameters (pixel values on the 0-255 scale):
        code_bits: length of the hidden bit string (StegaStamp: 100 at 400x400; 32 here at 32x32).
        max_residual: L_inf bound of the residual (``|x' - x| <= max_residual``), default 16.
        fidelity_weight: weight of the L2 fidelity loss on the residual (larger: smaller residual),
            default 0.05. With both defaults the residual averages about 5/255 (RMS about 6/255,
            PSNR about 32 dB) on the embedded world and a compact CNN trained 6 epochs on 10% poison
            learns it (ASR above 0.99); a bound of 8 with weight 0.2 (mean about 2.5/255) is more
            image-specific but only reached ASR 0.4 in that budget.
        width: channels of the encoder/decoder's first layer.
        train_images: size of the random training subset drawn from ``context.train_set``.
        train_steps, batch_size, lr: Adam steps, images per step and learning rate of ``prepare``.

    State: the encoder's weights (``encoder.*``) and the ``code`` (uint8 0/1, drawn from the
    context's generator). ``apply`` is deterministic; it does not draw from ``generator``.
    """

    clean_label = False
    needs_surrogate = False
    supports_all_to_all = True

    def __init__(
        self,
        code_bits: int = 32,
        max_residual: float = 16.0,
        fidelity_weight: float = 0.05,
        width: int = 16,
        train_images: int = 4000,
        train_steps: int = 400,
        batch_size: int = 64,
        lr: float = 3e-3,
    ):
        check_range("code_bits", code_bits, 1, 1024, integer=True)
        check_range("max_residual", max_residual, 0.0, 255.0)
        check_range("fidelity_weight", fidelity_weight, 0.0, 1e6)
        check_range("width", width, 1, 256, integer=True)
        check_range("train_images", train_images, 1, 10**8, integer=True)
        check_range("train_steps", train_steps, 1, 10**6, integer=True)
        check_range("batch_size", batch_size, 1, 10**5, integer=True)
        check_range("lr", lr, 1e-8, 10.0)
        self.code_bits, self.max_residual, self.fidelity_weight = (
            code_bits,
            max_residual,
            fidelity_weight,
        )
        self.width, self.train_images, self.train_steps = width, train_images, train_steps
        self.batch_size, self.lr = batch_size, lr

    def prepare(self, context: AttackContext) -> State:
        images = context.train_set["images"]
        seed = int(torch.randint(0, 2**62, (1,), generator=context.generator))
        code = torch.randint(
            0, 2, (self.code_bits,), generator=context.generator, dtype=torch.uint8
        )
        subset = torch.randperm(images.shape[0], generator=context.generator)[: self.train_images]
        encoder, _, metrics = train_stegastamp(
            images[subset],
            code_bits=self.code_bits,
            max_residual=self.max_residual,
            fidelity_weight=self.fidelity_weight,
            width=self.width,
            steps=self.train_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            device=context.device,
            seed=seed,
        )
        log.info(
            "ssba: encoder trained, bit accuracy %.3f, mean |residual| %.2f/255",
            metrics["bit_acc"],
            metrics["mean_abs_residual"],
        )
        return {**encoder_state(encoder), "code": code}

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        if "code" not in state:
            raise ValueError("ssba state: missing 'code'; run prepare() first")
        encoder = encoder_from_state(state, images.device)
        return encode(images, encoder, state["code"], max_residual=self.max_residual)


__all__ = [
    "SSBA",
    "StegaDecoder",
    "StegaEncoder",
    "encode",
    "encoder_from_state",
    "encoder_state",
    "train_stegastamp",
]
