"""Clean accuracy against training minutes for the CPU profile's victim candidates on real CIFAR-10.

Trains each ``architecture`` for each epoch budget with the CPU profile's recipe
(``conf/cifar10/parameters.yml``: SGD 0.2, warm-up 15 %, cosine, label smoothing 0.1, batch 256,
crop + flip) on the training set minus the 10,000-image CLIP holdout, exactly as ``--env cifar10``
does, and prints test accuracy and wall-clock minutes as a table. Slow by design (one full training
per cell): it is how the profile's architecture and epochs were chosen.

    python benchmarks/cifar10_cpu_profile.py --root /path/to/cifar10
        [--architectures airbench_narrow compact_cnn] [--epochs 4 6 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from cgd_kedro.data.sources import (
    DEFAULT_CLIP_HOLDOUT,
    DatasetConfig,
    hold_out_clip_slice,
    read_source,
)
from cgd_kedro.metrics import accuracy, predict_logits
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.runtime import resolve_device
from cgd_kedro.training.classifier import TrainingConfig, train_classifier

CPU_PROFILE_RECIPE = {
    "batch_size": 256,
    "lr": 0.2,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup": 0.15,
    "label_smoothing": 0.1,
    "flip": True,
}
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", required=True, help="CIFAR-10: cifar-10-batches-py/ or an image folder"
    )
    parser.add_argument("--architectures", nargs="+", default=["airbench_narrow", "compact_cnn"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[4, 6, 8])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = DatasetConfig.from_params(
        {"name": "cifar10", "root": args.root, "cache_dir": "data/02_intermediate/cifar10/decoded"}
    )
    source, test, _ = read_source(config)
    train, _ = hold_out_clip_slice(source, DEFAULT_CLIP_HOLDOUT, 10, seed=0)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"CIFAR-10 from {args.root}: {train['labels'].numel()} training images; device {where}; "
        f"torch {torch.__version__}\n"
    )
    print("| architecture | epochs | minutes | test CA |")
    print("|---|---|---|---|")
    for architecture in args.architectures:
        for epochs in args.epochs:
            generator = torch.Generator().manual_seed(args.seed)
            torch.manual_seed(args.seed)
            model = build_classifier(architecture, 10, CIFAR10_MEAN, CIFAR10_STD)
            started = time.perf_counter()
            train_classifier(
                model,
                train["images"],
                train["labels"],
                TrainingConfig(epochs=epochs, **CPU_PROFILE_RECIPE),
                device=device,
                generator=generator,
                description=f"{architecture} x {epochs}",
            )
            minutes = (time.perf_counter() - started) / 60
            ca = accuracy(
                predict_logits(model, test["images"], device=device).argmax(1), test["labels"]
            )
            print(f"| {architecture} | {epochs} | {minutes:.1f} | {ca:.4f} |", flush=True)


if __name__ == "__main__":
    main()
