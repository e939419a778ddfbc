"""CGD unlearning: each loss term on hand-computed tensors, the early-stopping rule, the validation
hold-out, and that the defense never sees test data or poison flags."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from cgd_kedro.cgd.unlearn import (
    UnlearnConfig,
    best_unlearned_epoch,
    cgd_loss,
    cgd_unlearn,
    hold_out_validation,
    should_stop,
)
from cgd_kedro.defenses.abl import anti_backdoor_learning
from cgd_kedro.defenses.anp import adversarial_neuron_pruning
from cgd_kedro.defenses.fine_pruning import fine_prune
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.training.classifier import train_classifier


def test_each_term_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    clip = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    triggered = torch.tensor([False, True, True])
    loss, parts = cgd_loss(logits, labels, clip, triggered, alpha=0.5, beta=0.25, temperature=2.0)

    ce = -math.log(math.exp(2) / (math.exp(2) + 1))  # clean sample 0, label 0

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    kl = 0.0
    for z, c in (([0.0, 0.0], [3.0, 0.0]), ([1.0, 3.0], [0.0, 0.0])):
        p, q = softmax([x / 2 for x in c]), softmax([x / 2 for x in z])
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl = kl / 2 * 4  # batchmean over the 2 triggered samples, times T^2
    ll = (math.log(0.5 + 1e-6) + math.log(softmax([1.0, 3.0])[1] + 1e-6)) / 2
    assert parts["ce"] == pytest.approx(ce, rel=1e-6)
    assert parts["kl"] == pytest.approx(kl, rel=1e-5)
    assert parts["log_likelihood"] == pytest.approx(ll, rel=1e-6)
    assert float(loss) == pytest.approx(ce + 0.5 * kl + 0.25 * ll, rel=1e-5)


def test_triggered_term_pushes_the_given_label_down():
    logits = torch.tensor([[0.5, 2.0, -1.0]], requires_grad=True)
    labels, clip, triggered = torch.tensor([1]), torch.zeros(1, 3), torch.tensor([True])
    loss, _ = cgd_loss(logits, labels, clip, triggered, alpha=0.0, beta=1.0, temperature=3.0)
    loss.backward()
    stepped = logits.detach() - 0.1 * logits.grad  # one gradient-descent step
    assert F.softmax(stepped, 1)[0, 1] < F.softmax(logits.detach(), 1)[0, 1]


def test_kl_term_pulls_toward_clip_and_empty_terms_are_zero():
    logits = torch.tensor([[3.0, 0.0]], requires_grad=True)
    loss, parts = cgd_loss(
        logits,
        torch.tensor([0]),
        torch.tensor([[0.0, 3.0]]),
        torch.tensor([True]),
        alpha=1.0,
        beta=0.0,
        temperature=1.0,
    )
    loss.backward()
    assert logits.grad[0, 1] < 0 < logits.grad[0, 0]  # descent raises class 1, CLIP's choice
    assert parts["ce"] == 0.0
    _, parts = cgd_loss(
        logits.detach(),
        torch.tensor([0]),
        torch.zeros(1, 2),
        torch.tensor([False]),
        alpha=1,
        beta=1,
        temperature=3,
    )
    assert parts["kl"] == 0.0 and parts["log_likelihood"] == 0.0


def test_early_stopping_rule_in_points():
    assert not should_stop([0.90], 1.0)
    assert not should_stop([0.90, 0.895], 1.0)  # 0.5 points
    assert should_stop([0.90, 0.92, 0.91], 1.0)  # 1 point below the best
    assert not should_stop([0.90, 0.92, 0.911], 1.0)
    assert should_stop([0.90, 0.80], 5.0)


def test_unlearned_best_keeps_the_best_validation_epoch_once_unlearning_has_levelled_off():
    # Index 0 is the victim. Epoch 1 unlearns (agreement 0.93 -> 0.30) with the inflated accuracy,
    # epoch 2 goes on unlearning (0.30 -> 0.20) in the accuracy dip, epochs 3-4 have levelled off.
    accuracies, agreements = (
        [0.99, 0.98, 0.94, 0.96, 0.97, 0.95],
        [0.93, 0.30, 0.20, 0.21, 0.19, 0.20],
    )
    assert [best_unlearned_epoch(accuracies[:n], agreements[:n], 0.05) for n in range(2, 7)] == [
        1,
        2,
        3,
        4,
        4,
    ]
    # A steep fall again (epoch 3) revokes the earlier candidate, however good its accuracy.
    assert best_unlearned_epoch([0.99, 0.9, 0.98, 0.91], [0.9, 0.5, 0.48, 0.2], 0.05) == 3
    assert (
        best_unlearned_epoch([0.99, 0.9, 0.98, 0.91, 0.92], [0.9, 0.5, 0.48, 0.2, 0.19], 0.05) == 4
    )
    # The margin decides what counts as levelled off: epoch 3's fall of 0.03 does at 0.05 (epoch 2
    # stays kept for its accuracy), not at 0.02 (epoch 3 is still unlearning and revokes epoch 2).
    accuracies, agreements = [0.99, 0.97, 0.98, 0.95], [0.9, 0.2, 0.19, 0.16]
    assert best_unlearned_epoch(accuracies, agreements, 0.05) == 2
    assert best_unlearned_epoch(accuracies, agreements, 0.02) == 3
    with pytest.raises(ValueError, match="as many accuracies as agreements"):
        best_unlearned_epoch([0.9], [0.9], 0.05)


def _scripted_unlearning(monkeypatch, records, config):
    """Run ``cgd_unlearn`` on the toy with scripted ``(validation CA, triggered agreement)`` per
    record (epoch 0 first); returns the history, the final model and each epoch's weights."""
    import cgd_kedro.cgd.unlearn as unlearn_module

    images, labels, _, poison = _backdoored_toy()
    model = build_classifier("compact_cnn", 4, (0.5,) * 3, (0.25,) * 3)
    scripted = iter(value for record in records for value in record)
    monkeypatch.setattr(unlearn_module, "accuracy", lambda predictions, labels: next(scripted))
    snapshots = []

    def snapshot(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {}

    clean_indices, triggered = (~poison).nonzero().squeeze(1), poison.nonzero().squeeze(1)
    history = cgd_unlearn(
        model,
        images,
        labels,
        clean_indices,
        triggered,
        torch.zeros(400, 4),
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
        on_epoch_end=snapshot,
    )
    return history, model, snapshots


def _same_weights(model, snapshot) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in snapshot.items())


def test_unlearned_best_stops_after_patience_and_restores_the_kept_weights(monkeypatch):
    # Epochs 1-2 are still unlearning (agreement 0.95 -> 0.70 -> 0.20), epoch 3 has levelled off and
    # is kept, epochs 4-5 bring no better candidate, so patience 2 stops at epoch 5.
    records = [
        (0.99, 0.95),
        (0.97, 0.70),
        (0.95, 0.20),
        (0.96, 0.20),
        (0.93, 0.21),
        (0.94, 0.20),
        (0.99, 0.20),
    ]
    config = UnlearnConfig(
        epochs=6, batch_size=64, max_batches_per_epoch=2, augment=False, patience=2
    )
    history, model, snapshots = _scripted_unlearning(monkeypatch, records, config)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4, 5]
    assert [h["triggered_agreement"] for h in history] == [0.95, 0.70, 0.20, 0.20, 0.21, 0.20]
    assert history[-1]["stopped"] == "no better candidate for 2 epochs; kept epoch 3"
    assert _same_weights(model, snapshots[3]) and not _same_weights(model, snapshots[5])


def test_validation_is_held_out_of_distinct_clean_samples():
    clean = torch.tensor(
        [0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    )
    train, validation = hold_out_validation(clean, 0.1, torch.Generator().manual_seed(0))
    assert validation.numel() == 2 and not torch.isin(train, validation).any()
    assert set(train.tolist()) | set(validation.tolist()) == set(clean.tolist())
    with pytest.raises(ValueError, match="fewer than 2"):
        hold_out_validation(torch.tensor([4, 4]), 0.1, torch.Generator())


def test_config_errors_name_the_parameter():
    assert UnlearnConfig.from_params({}) == UnlearnConfig()
    for params, name in (
        ({"alpha": -1}, "cgd.alpha"),
        ({"tolerance": -0.5}, "cgd.tolerance"),
        (
            {"early_stopping": "best"},
            "cgd.early_stopping = 'best': must be 'unlearned_best' or 'tolerance'",
        ),
        ({"patience": 0}, "cgd.patience"),
        ({"agreement_margin": 2}, "cgd.agreement_margin"),
        ({"epochs": 0}, "cgd.epochs"),
        ({"temp": 3}, "cgd.temp: unknown parameter"),
        ({"curve_test_images": 0}, "cgd.curve_test_images"),
        ({"schedule": "step"}, "cgd.schedule"),
    ):
        with pytest.raises(ValueError, match=name):
            UnlearnConfig.from_params(params)


def test_default_optimiser_is_the_reference_sgd_without_momentum(monkeypatch):
    built = []
    monkeypatch.setattr(
        torch.optim,
        "SGD",
        lambda params, **kwargs: built.append(kwargs) or torch.optim.Adam(params),
    )
    images, labels, _true, poison = _backdoored_toy()
    model = build_classifier("compact_cnn", 4, (0.5,) * 3, (0.25,) * 3)
    config = UnlearnConfig.from_params({"epochs": 1, "max_batches_per_epoch": 1, "batch_size": 32})
    cgd_unlearn(
        model,
        images,
        labels,
        (~poison).nonzero().squeeze(1),
        poison.nonzero().squeeze(1),
        torch.zeros(400, 4),
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    assert built == [{"lr": config.lr, "momentum": 0.0, "weight_decay": 5e-4}]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_follows_the_schedule_over_the_whole_budget(monkeypatch, schedule):
    seen = []
    original_step = torch.optim.SGD.step
    monkeypatch.setattr(
        torch.optim.SGD,
        "step",
        lambda self, *a, **k: (
            seen.append(self.param_groups[0]["lr"]) or original_step(self, *a, **k)
        ),
    )
    images, labels, _true, poison = _backdoored_toy()
    model = build_classifier("compact_cnn", 4, (0.5,) * 3, (0.25,) * 3)
    config = UnlearnConfig(
        epochs=2,
        max_batches_per_epoch=4,
        batch_size=32,
        lr=0.02,
        schedule=schedule,
        patience=5,
        augment=False,
    )
    cgd_unlearn(
        model,
        images,
        labels,
        (~poison).nonzero().squeeze(1),
        poison.nonzero().squeeze(1),
        torch.zeros(400, 4),
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    assert len(seen) == 8  # 2 epochs x 4 batches
    expected = (
        [0.02] * 8
        if schedule == "constant"
        else [0.02 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)]
    )
    assert seen == pytest.approx(expected)


@pytest.mark.parametrize(
    "defense",
    [cgd_unlearn, anti_backdoor_learning, fine_prune, adversarial_neuron_pruning, train_classifier],
    ids=lambda f: f.__name__,
)
def test_defense_functions_take_no_test_data_or_poison_flags(defense):
    parameters = set(inspect.signature(defense).parameters)
    assert {"images", "labels"} <= parameters
    assert not any(
        word in p for p in parameters for word in ("test", "poison", "backdoor", "flag", "original")
    )


def _backdoored_toy(seed=0):
    """4 colour classes; a quarter of the images carry a white corner and label 0."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(4, (400,), generator=g)
    images = torch.randint(0, 100, (400, 3, 16, 16), generator=g, dtype=torch.uint8)
    images[torch.arange(400), true % 3] += 120
    images[true == 3] += 60
    poison = torch.zeros(400, dtype=torch.bool)
    poison[:100] = True
    images[poison, :, -4:, -4:] = 255
    labels = true.clone()
    labels[poison] = 0
    return images, labels, true, poison


def test_unlearning_removes_a_toy_backdoor_and_reports_history():
    images, labels, true, poison = _backdoored_toy()
    model = build_classifier("compact_cnn", 4, (0.5,) * 3, (0.25,) * 3)
    from cgd_kedro.training.classifier import TrainingConfig, train_classifier

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    train_classifier(
        model,
        images,
        labels,
        TrainingConfig(epochs=6, batch_size=32, lr=0.05, augment=False),
        device=torch.device("cpu"),
        generator=g,
    )
    asr = lambda m: float(  # noqa: E731
        (m(images[poison].float() / 255).argmax(1) == 0)[true[poison] != 0].float().mean()
    )
    with torch.no_grad():
        assert asr(model.eval()) > 0.9
    clip = F.one_hot(true, 4).float() * 5  # a perfect "CLIP" for the toy
    clean_indices, triggered = (~poison).nonzero().squeeze(1), poison.nonzero().squeeze(1)
    config = UnlearnConfig(
        alpha=0.5,
        beta=0.5,
        epochs=3,
        batch_size=32,
        max_batches_per_epoch=20,
        lr=0.2,
        tolerance=50.0,
        augment=False,
    )
    history = cgd_unlearn(
        model,
        images,
        labels,
        clean_indices,
        triggered,
        clip,
        config,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(1),
        on_epoch_end=lambda m: {"asr": asr(m)},
    )
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert history[0]["asr"] > 0.9 and history[-1]["asr"] < 0.2
    assert history[-1]["val_clean_acc"] > 0.8 and {"ce", "kl", "log_likelihood", "loss"} <= set(
        history[-1]
    )


def test_tolerance_rule_stops_on_a_drop_below_the_best_fine_tuned_epoch_and_restores_the_previous_weights(  # noqa: E501 (the test name)
    monkeypatch,
):
    # Validation accuracies: epoch 0 (inflated, not compared), then 0.90, 0.95, 0.93; the triggered
    # agreement (0.5) is recorded but unused by this rule.
    records = [(acc, 0.5) for acc in (0.99, 0.90, 0.95, 0.93, 0.97)]
    config = UnlearnConfig(
        epochs=5, batch_size=64, max_batches_per_epoch=2, augment=False, early_stopping="tolerance"
    )
    history, model, snapshots = _scripted_unlearning(monkeypatch, records, config)
    assert [h["val_clean_acc"] for h in history] == [
        0.99,
        0.90,
        0.95,
        0.93,
    ]  # 0.90 < 0.99 - 0.01 did not stop
    assert history[-1]["stopped"].endswith("restored epoch 2") and all(
        "stopped" not in h for h in history[:-1]
    )
    assert _same_weights(model, snapshots[2]) and not _same_weights(model, snapshots[3])
