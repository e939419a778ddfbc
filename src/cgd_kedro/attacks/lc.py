"""Label-consistent backdoor (Turner, Tsipras & Madry, 2019): clean-label, PGD-hardened images plus
a 3x3 pattern in each of the four corners.

Only target-class training images are poisoned and no label changes. Each of them is first made
hard to classify by an untargeted L_inf PGD perturbation against a clean *surrogate* classifier
(away from its true label, the target), so that the victim has to rely on the corner trigger to fit
it; then the corner patterns are stamped. Test images only get the corner patterns.

PGD: ``eps = 16`` (0-255 scale) as in the reference, no random start, 10 steps of 4/255 (Madry's
``2.5 * eps / steps`` rule; 10 steps of 2/255 could barely reach the ``eps`` ball). The corner
trigger is the reference's "all-corners" pattern at full amplitude (``amplitude = 1``).

Design: the PGD perturbation is image-specific, so it is computed inside ``apply(phase="train")``
on exactly the images it is given. ``prepare`` therefore stores the surrogate in the state (its
registered architecture name as ASCII bytes, ``num_classes``, normalisation and weights under the
``surrogate.`` prefix) together with the target class, and ``apply`` rebuilds it. This keeps
``apply`` a pure function of the images and the state, for any subset of target-class images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cgd_kedro.attacks.base import (
    Attack,
    AttackContext,
    State,
    check_range,
    like,
    register_attack,
    to_float,
)
from cgd_kedro.models.classifier import Classifier, build_classifier
from cgd_kedro.models.registry import build_model, list_models

# The "all-corners" trigger of the reference code (BackdoorBench ``utils/bd_img_transform/lc.py``):
# +1 = white (255), -1 = black (0) at full amplitude. The two left corners carry the same 3x3
# pattern; the two right corners carry it mirrored left-right.
_LEFT_CORNER = torch.tensor([[1, -1, -1], [-1, 1, -1], [1, -1, 1]], dtype=torch.float32)

SURROGATE_PREFIX = "surrogate."


def corner_pattern(height: int, width: int) -> Tensor:
    """The ``H x W`` sign map of the four-corner trigger:
    +1 / -1 on the 36 corner pixels, 0 elsewhere.

    Args:
        height: image height (at least 6, so that the top and bottom patterns do not overlap).
        width: image width (at least 6).
    """
    if min(height, width) < 6:
        raise ValueError(
            f"lc: the four-corner trigger needs images of at least 6x6 pixels, got {height}x{width}"
        )
    sign = torch.zeros(height, width)
    right = _LEFT_CORNER.flip(-1)
    sign[:3, :3], sign[-3:, :3] = _LEFT_CORNER, _LEFT_CORNER
    sign[:3, -3:], sign[-3:, -3:] = right, right
    return sign


def stamp_corners(images: Tensor, *, amplitude: float = 1.0) -> Tensor:
    """Add the four-corner trigger:
    ``x' = clip(x + amplitude * s)`` with ``s`` from :func:`corner_pattern`.

    At ``amplitude = 1`` the 36 corner pixels become exactly white (+1) or black (-1) whatever the
    image (the reference's default); smaller values give the
    reference's "reduced amplitude" trigger.

    Args:
        images: ``N x C x H x W``, uint8 in [0, 255] or float in [0, 1].
        amplitude: trigger amplitude on the [0, 1] scale, in [0, 1].

    Returns:
        A new tensor of the same dtype and device; pixels outside the corners are unchanged.
    """
    check_range("amplitude", amplitude, 0.0, 1.0)
    sign = corner_pattern(*images.shape[-2:]).to(images.device)
    return like(to_float(images) + amplitude * sign, images)


def pgd_untargeted(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    batch_size: int = 256,
) -> Tensor:
    """Untargeted L_inf PGD (no random start):
    maximise ``CE(model(x'), labels)`` with ``|x' - x| <= eps``.

    Each step is ``x' <- clip(proj_eps(x' + step_size * sign(grad)), 0, 1)``; the model's own
    parameters are not touched (no gradient is kept for them).

    Args:
        model: a classifier in eval mode taking float [0, 1] images.
        images: float ``N x C x H x W`` in [0, 1] on the model's device.
        labels: int64 ``N``, the labels to move away from.
        eps: L_inf radius on the [0, 1] scale.
        step_size: step on the [0, 1] scale.
        steps: number of steps (0 returns the input).
        batch_size: images per forward/backward pass (bounds memory
            only; results do not depend on it).

    Returns:
        Float adversarial images in [0, 1], detached.
    """
    outputs = []
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        adv = x.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step_size * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0, 1)
        outputs.append(adv.detach())
    return torch.cat(outputs) if outputs else images.clone()


# --- the surrogate as state tensors --------------------------------------------------------------


def _architecture_of(surrogate: Classifier, num_classes: int) -> str:
    shapes = {k: tuple(v.shape) for k, v in surrogate.net.state_dict().items()}
    for name in list_models():
        candidate = build_model(name, num_classes)
        candidate_shapes = {k: tuple(v.shape) for k, v in candidate.state_dict().items()}
        if type(candidate) is type(surrogate.net) and candidate_shapes == shapes:
            return name
    raise ValueError(
        "attack.surrogate: the surrogate's network matches no registered architecture with "
        f"{num_classes} classes (registered: {list_models()})"
    )


def pack_surrogate(surrogate: nn.Module, num_classes: int) -> State:
    """The surrogate classifier as state tensors (architecture name, normalisation, weights)."""
    if not isinstance(surrogate, Classifier):
        raise ValueError(
            "attack.surrogate: expected a cgd_kedro Classifier "
            f"(models.classifier.build_classifier), got {type(surrogate).__name__}"
        )
    name = _architecture_of(surrogate, num_classes)
    state = {
        f"{SURROGATE_PREFIX}architecture": torch.tensor(
            list(name.encode("ascii")), dtype=torch.uint8
        ),
        f"{SURROGATE_PREFIX}num_classes": torch.tensor([num_classes], dtype=torch.int64),
        f"{SURROGATE_PREFIX}mean": surrogate.mean.detach().flatten().cpu().clone(),
        f"{SURROGATE_PREFIX}std": surrogate.std.detach().flatten().cpu().clone(),
    }
    for key, value in surrogate.net.state_dict().items():
        state[f"{SURROGATE_PREFIX}net.{key}"] = value.detach().cpu().clone()
    return state


def unpack_surrogate(state: State, device: torch.device) -> Classifier:
    """Rebuild the surrogate stored by :func:`pack_surrogate`, in eval mode, frozen,
    on ``device``."""
    if f"{SURROGATE_PREFIX}architecture" not in state:
        raise ValueError(
            "lc: the attack state holds no surrogate; run prepare() with a surrogate first"
        )
    name = bytes(state[f"{SURROGATE_PREFIX}architecture"].tolist()).decode("ascii")
    model = build_classifier(
        name,
        int(state[f"{SURROGATE_PREFIX}num_classes"][0]),
        state[f"{SURROGATE_PREFIX}mean"].tolist(),
        state[f"{SURROGATE_PREFIX}std"].tolist(),
    )
    net_prefix = f"{SURROGATE_PREFIX}net."
    model.net.load_state_dict(
        {k[len(net_prefix) :]: v for k, v in state.items() if k.startswith(net_prefix)}
    )
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def label_consistent(
    images: Tensor,
    surrogate: nn.Module,
    target: int,
    *,
    eps: float = 16.0,
    step_size: float = 4.0,
    steps: int = 10,
    amplitude: float = 1.0,
) -> Tensor:
    """The training-time LC trigger:
    PGD away from ``target`` against ``surrogate``, then the corners.

    ``x' = corners(PGD_eps(x))``; every pixel outside the 36 corner pixels moves by at most ``eps``.

    Args:
        images: ``N x C x H x W`` target-class images, uint8 in [0, 255] or float in [0, 1].
        surrogate: a clean classifier in eval mode taking float [0, 1] images, on ``images.device``.
        target: the images' true label (the attack's target class).
        eps: L_inf bound of the adversarial perturbation on the 0-255 scale (reference: 16).
        step_size: PGD step on the 0-255 scale.
        steps: PGD steps.
        amplitude: corner-trigger amplitude in [0, 1] (1 = full black/white).

    Returns:
        A new tensor of the same dtype and device.
    """
    check_range("eps", eps, 0.0, 255.0)
    check_range("step_size", step_size, 0.0, 255.0)
    check_range("steps", steps, 0, 10_000, integer=True)
    x = to_float(images)
    labels = torch.full((x.shape[0],), target, dtype=torch.int64, device=x.device)
    adv = pgd_untargeted(
        surrogate, x, labels, eps=eps / 255, step_size=step_size / 255, steps=steps
    )
    # Quantise the hard image before stamping, as the reference does (it stores it as an image).
    return stamp_corners(like(adv, images), amplitude=amplitude)


@register_attack("lc")
class LabelConsistent(Attack):
    """Clean-label attack: PGD-hardened target-class images with a four-corner 3x3 trigger.

    Trigger parameters (0-255 scale): ``eps`` (PGD L_inf bound, 16), ``step_size`` (4), ``steps``
    (10), ``amplitude`` (corner-trigger amplitude in [0, 1], 1).
    """

    clean_label = True
    needs_surrogate = True
    supports_all_to_all = False

    def __init__(
        self, eps: float = 16.0, step_size: float = 4.0, steps: int = 10, amplitude: float = 1.0
    ):
        check_range("eps", eps, 0.0, 255.0)
        check_range("step_size", step_size, 0.0, 255.0)
        check_range("steps", steps, 0, 10_000, integer=True)
        check_range("amplitude", amplitude, 0.0, 1.0)
        self.eps, self.step_size, self.steps, self.amplitude = eps, step_size, steps, amplitude

    def prepare(self, context: AttackContext) -> State:
        if context.surrogate is None:
            raise ValueError(
                "lc: prepare() needs a clean surrogate classifier; context.surrogate is None"
            )
        return {
            "target": torch.tensor([context.target], dtype=torch.int64),
            **pack_surrogate(context.surrogate, context.num_classes),
        }

    def apply(
        self, images: Tensor, state: State, generator: torch.Generator, phase: str = "train"
    ) -> Tensor:
        if phase not in ("train", "test"):
            raise ValueError(f"lc: phase must be 'train' or 'test', got {phase!r}")
        if phase == "test" or images.shape[0] == 0:
            return stamp_corners(images, amplitude=self.amplitude)
        if "target" not in state:
            raise ValueError("lc: the attack state holds no target; run prepare() first")
        surrogate = unpack_surrogate(state, images.device)
        return label_consistent(
            images,
            surrogate,
            int(state["target"][0]),
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            amplitude=self.amplitude,
        )
