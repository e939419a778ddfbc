"""Victim-training throughput (images/s) of every registered model on the current device.

Measures full training steps as ``train_classifier`` runs them: uint8 batch -> float, batched
random crop + flip on the device, forward, cross-entropy, backward, SGD step. Prints a table.

    python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--batch-size 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cgd_kedro.metrics import predict_logits
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.models.registry import list_models
from cgd_kedro.runtime import resolve_device
from cgd_kedro.training.augment import crop_and_flip
from cgd_kedro.training.classifier import to_unit_float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_throughput(
    architecture: str, device: torch.device, batch_size: int, steps: int, image_size: int = 32
) -> float:
    generator = torch.Generator().manual_seed(0)
    model = build_classifier(architecture, 10, [0.5] * 3, [0.25] * 3).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randint(
        0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=device
    )
    labels = torch.randint(0, 10, (batch_size,), device=device)

    def step() -> None:
        x = crop_and_flip(to_unit_float(images), generator).contiguous(
            memory_format=torch.channels_last
        )
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, cuDNN autotuning, oneDNN primitive caches
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def inference_throughput(architecture: str, device: torch.device, n: int = 4096) -> float:
    model = build_classifier(architecture, 10, [0.5] * 3, [0.25] * 3)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    predict_logits(model, images[:512], device=device)
    _sync(device)
    start = time.perf_counter()
    predict_logits(model, images, device=device)
    _sync(device)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; "
        f"{args.steps} timed steps\n"
    )
    print(f"| {'model':<16} | {'params (M)':>10} | {'train img/s':>11} | {'eval img/s':>10} |")
    print(f"|{'-' * 18}|{'-' * 12}|{'-' * 13}|{'-' * 12}|")
    for architecture in list_models():
        params = (
            sum(
                p.numel()
                for p in build_classifier(architecture, 10, [0.5] * 3, [0.25] * 3).parameters()
            )
            / 1e6
        )
        train = training_throughput(architecture, device, args.batch_size, args.steps)
        evaluate = inference_throughput(architecture, device)
        print(
            f"| {architecture:<16} | {params:>10.2f} | {train:>11.0f} | {evaluate:>10.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
