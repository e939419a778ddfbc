"""The GPU fast path: inert on the CPU, falls back to eager when compiling fails;
CUDA tests (``gpu``)."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from torch import nn

from cgd_kedro import accelerate
from cgd_kedro.accelerate import Acceleration, autocast, compiled_forward, configure, grad_scaler
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.parameters import RuntimeConfig
from cgd_kedro.training.classifier import TrainingConfig, train_classifier

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def default_acceleration():
    yield
    configure()  # every test leaves the process-wide setting as it found it


def tiny_training(seed: int = 0, device: torch.device = CPU) -> tuple[dict, list[dict]]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 4, (64,), generator=generator)
    torch.manual_seed(seed)
    model = build_classifier("compact_cnn", 4, [0.5] * 3, [0.25] * 3)
    config = TrainingConfig(epochs=2, batch_size=16, lr=0.05)
    history = train_classifier(
        model, images, labels, config, device=device, generator=torch.Generator().manual_seed(seed)
    )
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, history


def test_the_cpu_result_is_the_same_whatever_the_fast_path_asks_for():
    configure("fp32", "off")
    plain_state, plain_history = tiny_training()
    configure("fp16", "on")
    state, history = tiny_training()
    assert history == plain_history
    assert all(torch.equal(state[key], plain_state[key]) for key in plain_state)
    assert isinstance(autocast(CPU), contextlib.nullcontext)
    assert not grad_scaler(CPU).is_enabled()


def test_compile_is_only_used_on_cuda_and_autocast_dtype_follows_the_setting():
    model = nn.Linear(2, 2)
    configure("auto", "on")
    assert compiled_forward(model, CPU, long_loop=True) is model
    assert accelerate.autocast_dtype(CPU) is None
    configure("fp16", "on")
    assert accelerate.autocast_dtype(torch.device("cuda")) is torch.float16
    configure("fp32", "on")
    assert accelerate.autocast_dtype(torch.device("cuda")) is None
    configure("auto", "auto")  # auto compiles only the long loops
    assert compiled_forward(model, torch.device("cuda"), long_loop=False) is model


def test_a_failing_compiled_graph_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this GPU")

    monkeypatch.setattr(torch, "compile", lambda model: broken)
    model = nn.Linear(3, 2)
    configure("auto", "on")
    # the device only decides; the model stays on the CPU
    forward = compiled_forward(model, torch.device("cuda"))
    x = torch.randn(4, 3)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(forward(x), model(x))
        assert torch.equal(forward(x), model(x))
    assert caplog.text.count("torch.compile failed (RuntimeError: no kernel for this GPU)") == 1


def test_runtime_parameters_name_a_bad_precision_or_compile():
    assert RuntimeConfig.from_params(
        {"precision": "bf16", "compile": "off"}
    ).acceleration == Acceleration("bf16", "off")
    with pytest.raises(
        ValueError, match=r"runtime\.precision = .int8.: must be .auto., .bf16., .fp16. or .fp32."
    ):
        RuntimeConfig.from_params({"precision": "int8"})
    with pytest.raises(ValueError, match=r"runtime\.compile = .*: must be .auto., .on. or .off."):
        RuntimeConfig.from_params({"compile": "yes"})
    with pytest.raises(ValueError, match=r"runtime\.cache_dir"):
        RuntimeConfig.from_params({"cache_dir": ""})


@pytest.mark.gpu
@needs_cuda
def test_cuda_training_in_bf16_with_compile_learns_and_keeps_fp32_weights():
    configure("auto", "on")
    cuda = torch.device("cuda")
    state, history = tiny_training(device=cuda)
    assert all(value.dtype in (torch.float32, torch.int64) for value in state.values())
    assert history[-1]["loss"] < history[0]["loss"] * 1.5 and all(
        torch.isfinite(torch.tensor(r["loss"])) for r in history
    )
    if torch.cuda.is_bf16_supported():
        assert accelerate.autocast_dtype(cuda) is torch.bfloat16


@pytest.mark.gpu
@needs_cuda
def test_cuda_and_cpu_predictions_agree_closely():
    from cgd_kedro.metrics import predict_logits

    torch.manual_seed(0)
    model = build_classifier("compact_cnn", 4, [0.5] * 3, [0.25] * 3).eval()
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    on_cpu = predict_logits(model, images, device=CPU)
    on_gpu = predict_logits(model, images, device=torch.device("cuda"))
    assert (on_cpu.argmax(1) == on_gpu.argmax(1)).float().mean() >= 0.9
