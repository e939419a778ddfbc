"""MCR and I-BAU on a tiny BadNets victim: the curve's ends, the hypergradient, the parameter
errors, and both lowering the ASR."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgd_kedro.data.world import generate_images
from cgd_kedro.defenses.ibau import IBAUConfig, implicit_backdoor_unlearning, implicit_hypergradient
from cgd_kedro.defenses.mcr import (
    MCRConfig,
    bezier_weights,
    curve_from_tensors,
    curve_to_tensors,
    measure_curve,
    mode_connectivity_repair,
    reestimate_batchnorm,
    set_point,
)
from cgd_kedro.metrics import accuracy, predict_logits
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.training.classifier import TrainingConfig, train_classifier

CPU = torch.device("cpu")


def _trigger(images: torch.Tensor) -> torch.Tensor:
    triggered = images.clone()
    triggered[..., -3:, -3:] = 255
    return triggered


@pytest.fixture(scope="module")
def tiny_backdoor():
    """A small CNN with a BadNets backdoor (target 0, 10% poisoned) on 2,500 images of the embedded
    world (a weak but clearly backdoored victim: a few seconds of training), a 400-image clean set
    and the test sets. The world's task is not trivially separable, so clean-data training moves
    the weights (on a trivially separable toy the clean loss is zero everywhere and MCR's curve
    never leaves the backdoored end)."""
    world = generate_images(3300, seed=0, image_size=32, difficulty=0.0)
    images, labels = world["images"], world["labels"]
    train_images, train_labels = images[:2500].clone(), labels[:2500].clone()
    train_images[:250], train_labels[:250] = _trigger(train_images[:250]), 0
    torch.manual_seed(0)
    model = build_classifier("compact_cnn_small", 10, (0.5,) * 3, (0.25,) * 3)
    train_classifier(
        model,
        train_images,
        train_labels,
        TrainingConfig(epochs=8, batch_size=64, lr=0.05),
        device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    test_images, test_labels = images[2900:], labels[2900:]
    return (
        model,
        (images[2500:2900], labels[2500:2900]),
        (test_images, test_labels),
        _trigger(test_images[test_labels != 0]),
    )


def _asr(model: nn.Module, triggered: torch.Tensor) -> float:
    return accuracy(
        predict_logits(model, triggered, device=CPU).argmax(1),
        torch.zeros(len(triggered), dtype=torch.long),
    )


def _ca(model: nn.Module, test: tuple[torch.Tensor, torch.Tensor]) -> float:
    return accuracy(predict_logits(model, test[0], device=CPU).argmax(1), test[1])


def test_the_victim_is_backdoored(tiny_backdoor):
    model, _, test, triggered = tiny_backdoor
    # 10 classes: chance is 0.1 (CA) and ~0.1 (ASR)
    assert _ca(model, test) > 0.15 and _asr(model, triggered) > 0.5


def test_bezier_ends_are_exactly_the_end_points(tiny_backdoor):
    model, (clean_images, _), _, _ = tiny_backdoor
    assert bezier_weights(0.0, 3) == [1.0, 0.0, 0.0] and bezier_weights(1.0, 3) == [0.0, 0.0, 1.0]
    assert abs(sum(bezier_weights(0.37, 5)) - 1) < 1e-12
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    end = {n: p + 0.01 * torch.randn_like(p) for n, p in start.items()}
    middle = {n: torch.randn_like(p) for n, p in start.items()}
    for t, reference in ((0.0, start), (1.0, end)):
        expected = copy.deepcopy(model)
        with torch.no_grad():
            for name, parameter in expected.named_parameters():
                parameter.copy_(reference[name])
        reestimate_batchnorm(expected, clean_images, device=CPU)
        point = set_point(copy.deepcopy(model), [start, middle, end], t, clean_images, device=CPU)
        assert torch.equal(
            predict_logits(point, clean_images, device=CPU),
            predict_logits(expected, clean_images, device=CPU),
        )


def test_hypergradient_matches_finite_differences():
    """d/dθ L_out(δ*(θ), θ) on a tiny linear model, δ* = the inner map's fixed point."""
    torch.manual_seed(0)
    x0, y0 = torch.randn(8, 4), torch.randint(2, (8,))
    x1, y1 = torch.randn(8, 4), torch.randint(2, (8,))
    weight = (0.3 * torch.randn(2, 4)).requires_grad_(True)
    penalty, step = 1.0, 0.2  # strongly convex inner problem: Φ is a contraction

    def inner_loss(delta, w):
        return -F.cross_entropy((x0 + delta) @ w.T, y0) + penalty * delta.pow(2).sum()

    def inner_map(delta, w=weight):
        (gradient,) = torch.autograd.grad(inner_loss(delta, w), delta, create_graph=True)
        return delta - step * gradient

    def outer(delta, w=weight):
        return F.cross_entropy((x1 + delta) @ w.T, y1)

    def fixed_point(w):
        delta = torch.zeros(1, 4, requires_grad=True)
        for _ in range(500):
            delta = inner_map(delta, w).detach().requires_grad_(True)
        return delta

    delta = fixed_point(weight)
    (hypergradient,) = implicit_hypergradient(delta, [weight], inner_map, outer, iterations=200)
    numeric = torch.zeros_like(weight)
    eps = 1e-3
    for index in range(weight.numel()):
        shifted = []
        for sign in (1, -1):
            w = weight.detach().clone()
            w.view(-1)[index] += sign * eps
            w.requires_grad_(True)
            shifted.append(float(outer(fixed_point(w).detach(), w)))
        numeric.view(-1)[index] = (shifted[0] - shifted[1]) / (2 * eps)
    assert torch.allclose(hypergradient, numeric, atol=2e-4), (hypergradient, numeric)
    # the indirect term matters here: the plain partial derivative differs
    (partial,) = torch.autograd.grad(outer(delta.detach()), weight)
    assert not torch.allclose(partial, numeric, atol=2e-4)


@pytest.mark.parametrize(
    ("section", "params", "message"),
    [
        (MCRConfig, {"num_bends": 2}, r"mcr\.num_bends = 2: must be greater than or equal to 3"),
        (MCRConfig, {"ts": [0.5, 1.0]}, r"mcr\.ts = \[0\.5, 1\.0\]: every t must lie in \(0, 1\)"),
        (MCRConfig, {"t": 0.0}, r"mcr\.t = 0\.0: must be greater than 0"),
        (IBAUConfig, {"K": 0}, r"ibau\.K = 0: must be greater than or equal to 1"),
        (IBAUConfig, {"K": -1}, r"ibau\.K = -1"),
        (
            IBAUConfig,
            {"n_round": 2},
            r"ibau\.n_round: unknown parameter; did you mean 'n_rounds'\?",
        ),
    ],
)
def test_bad_parameters_are_named(section, params, message):
    with pytest.raises(ValueError, match=message):
        section.from_params(params)


def test_a_clean_set_smaller_than_a_batch_or_a_proxy_without_triggered_data_is_refused(
    tiny_backdoor,
):
    model, (clean_images, clean_labels), _, _ = tiny_backdoor
    config = MCRConfig.from_params({"batch_size": 128, "ft_epochs": 1, "curve_epochs": 1})
    with pytest.raises(
        ValueError,
        match=r"mcr: 40 clean training samples, fewer than one batch \(mcr\.batch_size = 128\)",
    ):
        mode_connectivity_repair(
            copy.deepcopy(model),
            clean_images[:50],
            clean_labels[:50],
            config,
            device=CPU,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match=r"mcr: the clean set has 5 samples; at least 10"):
        mode_connectivity_repair(
            copy.deepcopy(model),
            clean_images[:5],
            clean_labels[:5],
            config,
            device=CPU,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match=r"mcr\.selection = 'proxy': needs CGD's triggered subset"):
        mode_connectivity_repair(
            copy.deepcopy(model),
            clean_images,
            clean_labels,
            config.model_copy(update={"selection": "proxy"}),
            device=CPU,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match=r"ibau: the clean set has 1 samples"):
        implicit_backdoor_unlearning(
            copy.deepcopy(model),
            clean_images[:1],
            clean_labels[:1],
            IBAUConfig(),
            device=CPU,
            generator=torch.Generator(),
        )


def test_mcr_lowers_the_asr_and_keeps_clean_accuracy(tiny_backdoor):
    victim, (clean_images, clean_labels), test, triggered = tiny_backdoor
    model = copy.deepcopy(victim)
    config = MCRConfig.from_params(
        {
            "ft_epochs": 5,
            "ft_lr": 0.01,
            "curve_epochs": 5,
            "curve_lr": 0.01,
            "batch_size": 32,
            "ts": [0.3, 0.5, 0.7],
        }
    )
    result = mode_connectivity_repair(
        model,
        clean_images,
        clean_labels,
        config,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    assert result["t"] == 0.5 and [p["t"] for p in result["curve"]] == [0.3, 0.5, 0.7]
    assert _asr(model, triggered) < 0.5 * _asr(victim, triggered)
    assert _ca(model, test) >= _ca(victim, test) - 0.02
    # The saved curve rebuilds the defended model exactly (the
    # evaluation's test figures along t use it).
    bends, batchnorm_indices = curve_from_tensors(
        curve_to_tensors(result["bends"], result["batchnorm_indices"])
    )
    assert len(bends) == 3 and batchnorm_indices.numel() == 320  # 80 % of the 400 clean samples
    rebuilt = copy.deepcopy(victim)
    points = measure_curve(
        rebuilt,
        bends,
        clean_images[batchnorm_indices],
        [0.5],
        lambda m: {"asr": _asr(m, triggered)},
        device=CPU,
    )
    assert points == [{"t": 0.5, "asr": _asr(model, triggered)}]
    assert torch.equal(
        predict_logits(rebuilt, test[0], device=CPU), predict_logits(model, test[0], device=CPU)
    )
    with pytest.raises(ValueError, match=r"badnets\.mcr_cgd_curve: not an MCR curve"):
        curve_from_tensors({"weight": torch.zeros(2)}, source="badnets.mcr_cgd_curve")


def test_ibau_lowers_the_asr_and_keeps_clean_accuracy(tiny_backdoor):
    victim, (clean_images, clean_labels), test, triggered = tiny_backdoor
    model = copy.deepcopy(victim)
    # BackdoorBench's settings otherwise
    config = IBAUConfig.from_params({"n_rounds": 3, "batch_size": 64})
    result = implicit_backdoor_unlearning(
        model,
        clean_images,
        clean_labels,
        config,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(result["history"]) == 3
    # the fitted perturbation is projected onto the authors' L2 ball
    # (radius 10 in [0, 1] pixel units)
    assert all(0 < h["perturbation_norm"] <= 10 + 1e-4 for h in result["history"])
    assert _asr(model, triggered) < 0.8 * _asr(victim, triggered)
    assert _ca(model, test) >= _ca(victim, test) - 0.02
