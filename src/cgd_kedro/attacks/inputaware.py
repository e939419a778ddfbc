"""Input-Aware dynamic backdoor (Nguyen & Tran, NeurIPS 2020): a per-input trigger and mask.

A generator network ``G`` makes a trigger pattern and a mask network ``M`` a (nearly binary) mask
for every input, and the triggered image is ``x' = x + m * (p - x)`` with ``p = G(x)`` and
``m = threshold(M(x))``. Two losses make the trigger input-specific:

- mask phase: ``lambda_norm * mean(relu(m - mask_density)) + lambda_div * L_div(M)``;
- joint phase: ``CE(classifier) + lambda_div * L_div(G)`` with backdoor samples (own trigger,
  target label) and *cross-trigger* samples (the trigger and mask made from ANOTHER image, true
  label), so a trigger only works on the image it was made for;

where ``L_div = mean(||x1 - x2|| / (||t(x1) - t(x2)|| + eps))`` (RMS distances) asks triggers of
different inputs to differ in proportion to the inputs' difference.

Departure from BackdoorBench: there the victim classifier itself is trained jointly with ``G`` and
the poisoned training set is written out afterwards. Here ``prepare`` trains ``M`` and then ``G``
jointly with a small *surrogate* classifier it creates itself (a narrower ``compact_cnn``), on a
subset of the training set; the poisoned training set is then static, made by the frozen
networks, and the victim is trained on it like for every other attack. Cross-trigger samples are
the attack's cover samples (``cover_ratio = 1``: as many as poisoned images, BackdoorBench's
``num_cross = num_bd``); ``cover`` pairs each image with another image of the same batch.
"""

from __future__ import annotations

import logging
import math

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
from cgd_kedro.models.classifier import Classifier
from cgd_kedro.models.compact_cnn import CompactCNN

log = logging.getLogger(__name__)

PATTERN_PREFIX = "generator."
MASK_PREFIX = "mask."
EPSILON = 1e-7


def _conv_block(c_in: int, c_out: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out, momentum=0.05),
    ]
    return [*layers, nn.ReLU()] if relu else layers


class TriggerNet(nn.Module):
    """BackdoorBench's input-aware generator, two scales deep: conv blocks down (max-pool) and up
    (bilinear), output ``tanh(.) / (2 + eps) + 0.5`` in (0, 1). ``out_channels`` = 3 for the
    pattern generator, 1 for the mask network."""

    def __init__(self, out_channels: int = 3, width: int = 8):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_conv_block(3, w),
            *_conv_block(w, w),
            nn.MaxPool2d(2),
            *_conv_block(w, 2 * w),
            *_conv_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_conv_block(2 * w, 2 * w),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            *_conv_block(2 * w, 2 * w),
            *_conv_block(2 * w, w),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            *_conv_block(w, w),
            *_conv_block(w, out_channels, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.body(x)) / (2 + EPSILON) + 0.5


def threshold(mask: Tensor) -> Tensor:
    """BackdoorBench's soft binarisation of the mask network's output:
    ``tanh(20 m - 10) / (2 + eps) + 0.5``."""
    return torch.tanh(mask * 20 - 10) / (2 + EPSILON) + 0.5


def _trigger(x: Tensor, pattern_net: nn.Module, mask_net: nn.Module) -> tuple[Tensor, Tensor]:
    """Pattern ``p = G(x)`` and mask ``m = threshold(M(x))`` for float [0, 1] images whose sides are
    resized to a multiple of 4 for the networks (and back)."""
    size = x.shape[-2:]
    padded = tuple(4 * math.ceil(s / 4) for s in size)
    z = (
        F.interpolate(x, size=padded, mode="bilinear", align_corners=False)
        if padded != tuple(size)
        else x
    )
    pattern, mask = pattern_net(z), threshold(mask_net(z))
    if padded != tuple(size):
        pattern = F.interpolate(pattern, size=size, mode="bilinear", align_corners=False)
        mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return pattern, mask


def input_aware_trigger(
    images: Tensor,
    pattern_net: nn.Module,
    mask_net: nn.Module,
    *,
    source: Tensor | None = None,
    batch_size: int = 1024,
) -> Tensor:
    """``x' = x + m * (p - x)`` with ``p = G(s)``, ``m = threshold(M(s))`` made from ``s``.

    Args:
        images: ``N x 3 x H x W``, uint8 in [0, 255] or float in [0, 1].
        pattern_net: the trained pattern generator ``G`` (``TriggerNet(3)``).
        mask_net: the trained mask network ``M`` (``TriggerNet(1)``).
        source: the images the trigger is made from, same shape as ``images``; ``None`` (the
            backdoor) uses ``images`` themselves, another image gives
            a cross-trigger (cover) sample.
        batch_size: images per forward pass (bounds memory; the result does not depend on it).

    Returns:
        A new tensor of the same dtype, shape and device as ``images``.
    """
    source = images if source is None else source
    if source.shape != images.shape:
        raise ValueError(f"source: expected shape {tuple(images.shape)}, got {tuple(source.shape)}")
    pattern_net, mask_net = pattern_net.to(images.device).eval(), mask_net.to(images.device).eval()
    out = []
    with torch.no_grad():
        for chunk, src in zip(images.split(batch_size), source.split(batch_size), strict=True):
            x = to_float(chunk)
            pattern, mask = _trigger(to_float(src).to(images.device), pattern_net, mask_net)
            out.append(like(x + mask * (pattern - x), chunk))
    return torch.cat(out) if out else images.clone()


def other_image_index(n: int, generator: torch.Generator) -> Tensor:
    """A random derangement of ``range(n)``: ``partner[i] != i`` for every ``i`` when ``n >= 2``
    (a random cyclic order, each image paired with the next one in it); ``[0]`` when ``n == 1``."""
    order = torch.randperm(n, generator=generator)
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


def _rms_distance(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).mean(dim=(1, 2, 3)).sqrt()


def diversity_loss(inputs1: Tensor, inputs2: Tensor, out1: Tensor, out2: Tensor) -> Tensor:
    """``mean(||x1 - x2|| / (||t1 - t2|| + eps))`` with RMS distances
    (BackdoorBench's ``loss_div``)."""
    return (_rms_distance(inputs1, inputs2) / (_rms_distance(out1, out2) + EPSILON)).mean()


def nets_state(pattern_net: nn.Module, mask_net: nn.Module) -> State:
    """Both networks' weights and BatchNorm statistics as flat prefixed CPU tensors."""
    state = {
        PATTERN_PREFIX + k: v.detach().cpu().clone() for k, v in pattern_net.state_dict().items()
    }
    return state | {
        MASK_PREFIX + k: v.detach().cpu().clone() for k, v in mask_net.state_dict().items()
    }


def nets_from_state(
    state: State, device: torch.device | str = "cpu"
) -> tuple[TriggerNet, TriggerNet]:
    """Rebuild ``(G, M)`` from a state written by ``nets_state`` (width read off the weights)."""
    nets = []
    for prefix, channels in ((PATTERN_PREFIX, 3), (MASK_PREFIX, 1)):
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if "body.0.weight" not in weights:
            raise ValueError(
                f"inputaware state: missing the '{prefix}*' weights; run prepare() first"
            )
        net = TriggerNet(channels, width=weights["body.0.weight"].shape[0])
        net.load_state_dict(weights, strict=True)
        nets.append(net.to(device).eval())
    return nets[0], nets[1]


def _cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
    )


def _sampler(images: Tensor, labels: Tensor, generator: torch.Generator, device: torch.device):
    def batch(n: int) -> tuple[Tensor, Tensor]:
        index = torch.randint(0, images.shape[0], (n,), generator=generator)
        return to_float(images[index]).to(device), labels[index].to(device)

    return batch


@torch.no_grad()
def _recalibrate_batchnorm(net: nn.Module, batch, batch_size: int, batches: int = 8) -> None:
    """Re-estimate BatchNorm running statistics of the final weights (exact averages over a few
    batches), so that the eval-mode network used by ``apply`` matches the train-mode one that
    was optimised; with only a few hundred steps the running averages still lag the weights."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for _ in range(batches):
        net(batch(batch_size)[0])
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    net.eval()


def train_mask_network(
    images: Tensor,
    *,
    mask_density: float = 0.032,
    lambda_div: float = 1.0,
    lambda_norm: float = 100.0,
    width: int = 8,
    steps: int = 100,
    batch_size: int = 128,
    lr: float = 0.01,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> TriggerNet:
    """Phase 1: ``steps`` Adam steps (betas (0.5, 0.9), cosine schedule) of the mask network on
    ``lambda_norm * mean(relu(m1 - mask_density)) + lambda_div * L_div(x1, x2, m1, m2)`` with two
    independent random batches ``x1``, ``x2`` (BackdoorBench's ``train_mask_step``).

    Returns:
        The mask network ``M`` in eval mode on ``device`` (``threshold(M(x))`` is the mask).
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mask_net = TriggerNet(1, width).to(device)
    batch = _sampler(
        images,
        torch.zeros(images.shape[0], dtype=torch.long),
        torch.Generator().manual_seed(seed),
        device,
    )
    optimizer = torch.optim.Adam(mask_net.parameters(), lr=lr, betas=(0.5, 0.9))
    scheduler = _cosine(optimizer, steps)
    mask_net.train()
    for _ in tqdm(range(steps), desc="inputaware mask", unit="step", disable=None, leave=False):
        (x1, _), (x2, _) = batch(batch_size), batch(batch_size)
        m1, m2 = threshold(mask_net(x1)), threshold(mask_net(x2))
        loss = lambda_norm * F.relu(m1 - mask_density).mean() + lambda_div * diversity_loss(
            x1, x2, m1, m2
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    _recalibrate_batchnorm(mask_net, batch, batch_size)
    return mask_net.requires_grad_(False)


def train_pattern_generator(
    images: Tensor,
    labels: Tensor,
    mask_net: nn.Module,
    *,
    num_classes: int,
    target: int,
    lambda_div: float = 1.0,
    poison_rate: float = 0.1,
    width: int = 8,
    surrogate_width: int = 16,
    steps: int = 250,
    batch_size: int = 128,
    lr_generator: float = 0.01,
    lr_classifier: float = 0.05,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[TriggerNet, dict[str, float]]:
    """Phase 2: the pattern generator ``G`` trained jointly with a surrogate classifier.

    ``steps`` steps of ``G`` (Adam, betas (0.5, 0.9)) and a surrogate ``CompactCNN(width=
    surrogate_width)`` (SGD, momentum 0.9, weight decay 5e-4), both with cosine schedules, on
    ``CE + lambda_div * L_div(G)``: in each batch of ``batch_size`` the first
    ``n = round(poison_rate * batch_size)`` images get their own trigger and label ``target``, the
    next ``n`` get the trigger and mask of an image of a second batch (cross samples, true labels),
    the rest stay clean (BackdoorBench's ``train_step`` with ``num_cross = num_bd``).

    Returns:
        ``G`` in eval mode on ``device`` and last-step metrics of the surrogate on the training
        batch: ``clean_acc``, ``bd_acc``, ``cross_acc``, and ``mask_density`` (mean mask value).
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pattern_net = TriggerNet(3, width).to(device)
        surrogate = Classifier(
            CompactCNN(num_classes, width=surrogate_width), [0.5] * 3, [0.25] * 3
        ).to(device)
    batch = _sampler(images, labels, torch.Generator().manual_seed(seed), device)
    mask_net = mask_net.to(device).eval()
    optimizer_g = torch.optim.Adam(pattern_net.parameters(), lr=lr_generator, betas=(0.5, 0.9))
    optimizer_c = torch.optim.SGD(
        surrogate.parameters(), lr=lr_classifier, momentum=0.9, weight_decay=5e-4
    )
    scheduler_g, scheduler_c = _cosine(optimizer_g, steps), _cosine(optimizer_c, steps)
    num_bd = max(1, round(poison_rate * batch_size))
    if 2 * num_bd > batch_size:
        raise ValueError(
            f"attack.trigger.poison_rate: {poison_rate} leaves no room for cross samples"
        )
    metrics = {"clean_acc": 0.0, "bd_acc": 0.0, "cross_acc": 0.0, "mask_density": 0.0}
    pattern_net.train(), surrogate.train()
    for _ in tqdm(
        range(steps), desc="inputaware generator", unit="step", disable=None, leave=False
    ):
        (x1, y1), (x2, _) = batch(batch_size), batch(batch_size)
        own, cross, other = x1[:num_bd], x1[num_bd : 2 * num_bd], x2[num_bd : 2 * num_bd]
        with torch.no_grad():
            m1, m2 = threshold(mask_net(own)), threshold(mask_net(other))
        p1, p2 = pattern_net(own), pattern_net(other)
        inputs = torch.cat([own + m1 * (p1 - own), cross + m2 * (p2 - cross), x1[2 * num_bd :]])
        targets = torch.cat([torch.full_like(y1[:num_bd], target), y1[num_bd:]])
        logits = surrogate(inputs)
        loss = F.cross_entropy(logits, targets) + lambda_div * diversity_loss(own, other, p1, p2)
        optimizer_g.zero_grad(set_to_none=True)
        optimizer_c.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_g.step()
        optimizer_c.step()
        scheduler_g.step()
        scheduler_c.step()
        hit = (logits.detach().argmax(1) == targets).float()
        metrics = {
            "bd_acc": float(hit[:num_bd].mean()),
            "cross_acc": float(hit[num_bd : 2 * num_bd].mean()),
            "clean_acc": float(hit[2 * num_bd :].mean()) if batch_size > 2 * num_bd else 0.0,
            "mask_density": float(m1.mean()),
        }
    _recalibrate_batchnorm(pattern_net, batch, batch_size)
    return pattern_net.requires_grad_(False), metrics


@register_attack("inputaware")
class InputAware(Attack):
    """Per-input trigger ``x' = x + m(x) * (G(x) - x)``; cover samples use another image's trigger.

    Trigger parameters (BackdoorBench defaults where it has them):
        mask_density: target share of mask pixels (0.032), enforced by the norm penalty.
        lambda_div: weight of the diversity loss (1).
        lambda_norm: weight of the mask norm penalty (100).
        poison_rate: share of backdoor (and as many cross) samples per batch while ``prepare``
            trains the generator (BackdoorBench: the poisoning ratio, 0.1).
        width: channels of the first layer of ``G`` and ``M`` (BackdoorBench: 32, 3 scales; here
            2 scales, narrower, to train on a CPU).
        surrogate_width: width of the ``compact_cnn`` surrogate trained jointly with ``G``.
        train_images: size of the random training subset used by ``prepare``.
        mask_steps, train_steps, batch_size: optimisation steps of the two phases and batch size.
        lr_generator, lr_classifier: learning rates of ``G``/``M`` (Adam) and the surrogate (SGD).

    State: ``generator.*`` and ``mask.*`` network weights. ``apply`` is deterministic; ``cover``
    draws the pairing of images from ``generator``.

    Strength: with a frozen generator and a victim trained from scratch on the static poisoned set
    (10% poison + 10% cross samples), a compact CNN reached ASR 0.74 (10k images, 6 epochs) and
    0.58 (20k images, 8 epochs; it then also learns to reject cross triggers), well below
    BackdoorBench's jointly trained 98%; without cross samples ASR was 0.89 (10k, 6 epochs).
    """

    clean_label = False
    needs_surrogate = False  # it trains its own surrogate in prepare()
    supports_all_to_all = False  # prepare() trains the generator for all-to-one on context.target
    cover_ratio = (
        1.0  # cross-trigger samples per poisoned sample (BackdoorBench: num_cross = num_bd)
    )

    def __init__(
        self,
        mask_density: float = 0.032,
        lambda_div: float = 1.0,
        lambda_norm: float = 100.0,
        poison_rate: float = 0.1,
        width: int = 8,
        surrogate_width: int = 16,
        train_images: int = 5000,
        mask_steps: int = 100,
        train_steps: int = 250,
        batch_size: int = 128,
        lr_generator: float = 0.01,
        lr_classifier: float = 0.05,
    ):
        check_range("mask_density", mask_density, 0.0, 1.0)
        check_range("lambda_div", lambda_div, 0.0, 1e6)
        check_range("lambda_norm", lambda_norm, 0.0, 1e6)
        check_range("poison_rate", poison_rate, 0.0, 0.5)
        check_range("width", width, 1, 256, integer=True)
        check_range("surrogate_width", surrogate_width, 1, 256, integer=True)
        check_range("train_images", train_images, 2, 10**8, integer=True)
        check_range("mask_steps", mask_steps, 0, 10**6, integer=True)
        check_range("train_steps", train_steps, 1, 10**6, integer=True)
        check_range("batch_size", batch_size, 4, 10**5, integer=True)
        check_range("lr_generator", lr_generator, 1e-8, 10.0)
        check_range("lr_classifier", lr_classifier, 1e-8, 10.0)
        if poison_rate * batch_size < 0.5:
            raise ValueError(
                f"attack.trigger.poison_rate: {poison_rate} x batch_size {batch_size} rounds to no "
                "backdoor sample per batch"
            )
        self.mask_density, self.lambda_div, self.lambda_norm = mask_density, lambda_div, lambda_norm
        self.poison_rate, self.width, self.surrogate_width = poison_rate, width, surrogate_width
        self.train_images, self.mask_steps, self.train_steps = train_images, mask_steps, train_steps
        self.batch_size, self.lr_generator, self.lr_classifier = (
            batch_size,
            lr_generator,
            lr_classifier,
        )

    def prepare(self, context: AttackContext) -> State:
        train = context.train_set
        seed = int(torch.randint(0, 2**62, (1,), generator=context.generator))
        subset = torch.randperm(train["labels"].shape[0], generator=context.generator)[
            : self.train_images
        ]
        images, labels = train["images"][subset], train["labels"][subset]
        common = {"width": self.width, "batch_size": self.batch_size, "device": context.device}
        mask_net = train_mask_network(
            images,
            mask_density=self.mask_density,
            lambda_div=self.lambda_div,
            lambda_norm=self.lambda_norm,
            steps=self.mask_steps,
            lr=self.lr_generator,
            seed=seed,
            **common,
        )
        pattern_net, metrics = train_pattern_generator(
            images,
            labels,
            mask_net,
            num_classes=context.num_classes,
            target=context.target,
            lambda_div=self.lambda_div,
            poison_rate=self.poison_rate,
            surrogate_width=self.surrogate_width,
            steps=self.train_steps,
            lr_generator=self.lr_generator,
            lr_classifier=self.lr_classifier,
            seed=seed + 1,
            **common,
        )
        log.info(
            "inputaware: surrogate clean acc %.3f, backdoor acc %.3f, cross acc "
            "%.3f; mask density %.4f",
            metrics["clean_acc"],
            metrics["bd_acc"],
            metrics["cross_acc"],
            metrics["mask_density"],
        )
        return nets_state(pattern_net, mask_net)

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        pattern_net, mask_net = nets_from_state(state, images.device)
        return input_aware_trigger(images, pattern_net, mask_net)

    def cover(self, images: Tensor, state: State, generator: torch.Generator) -> Tensor:
        """Cross-trigger samples: each image gets the trigger and mask made from another image of
        the batch (a random derangement drawn from ``generator``). A batch of one image has no
        other image; it gets the trigger of its own 180-degree rotation instead."""
        pattern_net, mask_net = nets_from_state(state, images.device)
        if images.shape[0] == 1:
            source = torch.flip(images, dims=(-2, -1))
        else:
            source = images[other_image_index(images.shape[0], generator).to(images.device)]
        return input_aware_trigger(images, pattern_net, mask_net, source=source)
