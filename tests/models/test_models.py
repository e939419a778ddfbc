"""Model registry, architectures, the normalising Classifier and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgd_kedro.models import MODEL_REGISTRY, build_model, list_models, register_model
from cgd_kedro.models.classifier import Classifier, build_classifier, from_checkpoint, to_checkpoint
from cgd_kedro.models.registry import check_architecture

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def _randomise_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Move running stats away from their init so that a lost buffer would change the outputs."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32, generator=g))
    model.eval()


def test_list_models():
    models = list_models()
    assert "compact_cnn" in models and "preactresnet18" in models
    assert models == sorted(models)


@pytest.mark.parametrize(
    ("name", "num_classes"),
    [
        ("compact_cnn", 10),
        ("compact_cnn", 3),
        ("compact_cnn_small", 10),
        ("preactresnet18", 10),
        ("preactresnet18", 43),
        ("airbench_narrow", 10),
        ("airbench", 43),
    ],
)
def test_output_shapes(name, num_classes):
    torch.manual_seed(0)
    model = build_model(name, num_classes).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, num_classes)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


def test_unknown_architecture_and_bad_num_classes():
    with pytest.raises(
        ValueError, match=r"architecture: unknown model 'resnet50'.*compact_cnn.*preactresnet18"
    ):
        build_model("resnet50", 10)
    with pytest.raises(ValueError, match=r"architecture: unknown model 'vgg'"):
        check_architecture("vgg")
    with pytest.raises(ValueError, match=r"num_classes: expected an integer >= 2, got 1"):
        build_model("compact_cnn", 1)
    with pytest.raises(ValueError, match=r"num_classes"):
        build_model("compact_cnn", 10.0)


def test_register_model_rejects_duplicates_and_registers_new():
    with pytest.raises(ValueError, match=r"model 'compact_cnn' is already registered"):
        register_model("compact_cnn")(lambda num_classes: nn.Linear(1, num_classes))
    name = "_test_only_linear"
    try:
        register_model(name)(
            lambda num_classes: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
        )
        assert name in list_models()
        assert build_model(name, 4)(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    finally:
        MODEL_REGISTRY.pop(name, None)


# --- PreActResNet18 parameter names (BackdoorBench's models/preact_resnet.py) --------------------


def _backdoorbench_preact18_keys() -> set[str]:
    """State-dict names of BackdoorBench's PreActResNet18, derived from its module structure:
    conv1, layer1..4 of two PreActBlocks (bn1, conv1, bn2, conv2, a 1x1 conv shortcut on the first
    block of layers 2-4), avgpool (no parameters) and linear. No final BatchNorm."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "linear.weight", "linear.bias"}
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            keys |= {f"{prefix}.bn1.{s}" for s in bn} | {f"{prefix}.bn2.{s}" for s in bn}
            keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            if layer > 1 and block == 0:
                keys.add(f"{prefix}.shortcut.0.weight")
    return keys


def test_preactresnet18_parameter_names_and_shapes():
    state = build_model("preactresnet18", 10).state_dict()
    expected_shapes = {
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.bn1.weight": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer3.0.shortcut.0.weight": (256, 128, 1, 1),
        "layer4.0.shortcut.0.weight": (512, 256, 1, 1),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
        "linear.weight": (10, 512),
        "linear.bias": (10,),
    }
    for key, shape in expected_shapes.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert "layer1.0.shortcut.0.weight" not in state
    assert "layer2.1.shortcut.0.weight" not in state
    # Everything BackdoorBench has is here with the same name.
    assert _backdoorbench_preact18_keys() <= set(state)
    # The canonical CIFAR PreActResNet18 parameter count.
    named = dict(build_model("preactresnet18", 10).named_parameters())
    assert (
        sum(p.numel() for k, p in named.items() if k in _backdoorbench_preact18_keys())
        == 11_171_146
    )
    assert sum(p.numel() for p in named.values()) == 11_171_146


def test_preactresnet18_state_dict_names_equal_backdoorbench():
    assert set(build_model("preactresnet18", 10).state_dict()) == _backdoorbench_preact18_keys()


def test_backdoorbench_shaped_state_dict_loads():
    state = build_model("preactresnet18", 10).state_dict()
    backdoorbench_state = {k: v for k, v in state.items() if k in _backdoorbench_preact18_keys()}
    checkpoint = {
        "architecture": "preactresnet18",
        "num_classes": 10,
        "mean": MEAN,
        "std": STD,
        "state_dict": backdoorbench_state,
    }
    from_checkpoint(checkpoint, source="attack_result.pt")


# --- Classifier and checkpoints -------------------------------------------------------------------


def test_classifier_normalises_inside():
    torch.manual_seed(1)
    model = build_classifier("compact_cnn", 10, MEAN, STD)
    _randomise_bn_stats(model)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(x)
        expected = model.net((x - mean) / std)
        unnormalised = model.net(x)
    assert torch.equal(out, expected)
    assert not torch.allclose(out, unnormalised)
    # mean/std are buffers that follow .to() but stay out of the
    # state_dict (BackdoorBench-compatible).
    assert torch.equal(model.mean.flatten(), torch.tensor(MEAN))
    assert all(k.startswith("net.") for k in model.state_dict())
    assert set(model.net.state_dict()) == {k[len("net.") :] for k in model.state_dict()}


@pytest.mark.parametrize(
    ("mean", "std"), [((0.5, 0.5), STD), (MEAN, (0.2, 0.0, 0.3)), (MEAN, (0.2, -1.0, 0.3))]
)
def test_bad_normalisation(mean, std):
    with pytest.raises(ValueError, match=r"normalization: expected 3 means and 3 positive stds"):
        build_classifier("compact_cnn", 10, mean, std)


@pytest.mark.parametrize("architecture", ["compact_cnn", "preactresnet18"])
def test_checkpoint_round_trip_gives_identical_outputs(architecture):
    torch.manual_seed(3)
    model = build_classifier(architecture, 7, MEAN, STD)
    _randomise_bn_stats(model, seed=4)
    checkpoint = to_checkpoint(model, architecture, 7)
    assert checkpoint["architecture"] == architecture
    assert checkpoint["num_classes"] == 7
    assert checkpoint["mean"] == pytest.approx(MEAN) and checkpoint["std"] == pytest.approx(STD)
    assert set(checkpoint["state_dict"]) == set(model.net.state_dict())

    torch.manual_seed(99)  # a rebuilt model starts from other weights
    restored = from_checkpoint(checkpoint)
    assert isinstance(restored, Classifier)
    restored.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    for key, value in model.net.state_dict().items():
        assert torch.equal(restored.net.state_dict()[key], value), key
    assert torch.equal(restored.mean, model.mean) and torch.equal(restored.std, model.std)


def test_checkpoint_is_a_detached_copy():
    torch.manual_seed(0)
    model = build_classifier("compact_cnn", 10, MEAN, STD)
    checkpoint = to_checkpoint(model, "compact_cnn", 10)
    saved = checkpoint["state_dict"]["head.bias"].clone()
    with torch.no_grad():
        model.net.head.bias.add_(1.0)
    assert torch.equal(checkpoint["state_dict"]["head.bias"], saved)
    assert not checkpoint["state_dict"]["head.bias"].requires_grad


def test_from_checkpoint_with_another_architecture_names_the_source():
    torch.manual_seed(0)
    checkpoint = to_checkpoint(build_classifier("compact_cnn", 10, MEAN, STD), "compact_cnn", 10)
    checkpoint["architecture"] = "preactresnet18"
    with pytest.raises(ValueError) as info:
        from_checkpoint(checkpoint, source="data/06_models/victim.safetensors")
    message = str(info.value)
    assert message.startswith(
        "data/06_models/victim.safetensors: weights do not match architecture "
        "'preactresnet18' with 10 classes"
    )


def test_from_checkpoint_with_another_num_classes_names_the_source():
    torch.manual_seed(0)
    checkpoint = to_checkpoint(build_classifier("compact_cnn", 10, MEAN, STD), "compact_cnn", 10)
    checkpoint["num_classes"] = 43
    with pytest.raises(
        ValueError,
        match=r"^victim: weights do not match architecture 'compact_cnn' with 43 classes",
    ):
        from_checkpoint(checkpoint, source="victim")


def test_from_checkpoint_missing_fields():
    with pytest.raises(
        ValueError,
        match=r"^ckpt: not a cgd_kedro classifier checkpoint \(missing \['mean', 'std'\]\)",
    ):
        from_checkpoint(
            {"architecture": "compact_cnn", "num_classes": 10, "state_dict": {}}, source="ckpt"
        )


def test_airbench_feature_layer_is_one_value_per_last_conv_channel():
    from cgd_kedro.models.classifier import last_linear, penultimate_features

    torch.manual_seed(0)
    model = build_classifier("airbench_narrow", 10, (0.5,) * 3, (0.25,) * 3).eval()
    assert last_linear(model).in_features == 128
    features = penultimate_features(model, torch.rand(4, 3, 32, 32))
    assert features.shape == (4, 128)
    assert sum(p.numel() for p in model.parameters()) < 600_000  # half airbench94's widths: ~0.5 M
    with torch.no_grad():  # 64 px inputs (Tiny-ImageNet) work too: the last pool is adaptive
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 10)
