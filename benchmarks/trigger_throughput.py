"""Triggers applied per second for every attack, batched vs one image at a time.

Each attack is prepared once on a small embedded-world training set (attacks that need a clean
surrogate get an untrained compact CNN: the cost of applying the trigger does not depend on how
well the surrogate is trained). Then ``apply`` runs on ``--n`` 32x32 uint8 images in batches of
``--batch-size``, and on ``--loop-n`` of them one image per call. Prints a table.

    python benchmarks/trigger_throughput.py [--device auto|cpu|cuda] [--n 50000] [--loop-n 500]
"""

from __future__ import annotations

import argparse
import time

import torch

from cgd_kedro.attacks import build_attack, list_attacks
from cgd_kedro.attacks.base import AttackContext
from cgd_kedro.data.world import generate_images
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.runtime import resolve_device

# Attacks whose trigger runs a network or an optimisation per image: measured on fewer images.
HEAVY = {"lc": 2000, "ssba": 10000, "inputaware": 10000}
# Cheap prepare() settings so the benchmark measures apply(), not trigger learning.
FAST_PREPARE = {
    "lf": {"steps": 2, "n_images": 256},
    "ssba": {"train_steps": 2, "train_images": 256},
    "inputaware": {"mask_steps": 2, "train_steps": 2, "train_images": 256},
    "trojannn": {"neuron_epoch": 2},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--loop-n", type=int, default=500)
    parser.add_argument("--attacks", nargs="*", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)

    pool = generate_images(2048, seed=0)
    images = pool["images"].repeat(args.n // 2048 + 1, 1, 1, 1)[: args.n].to(device)
    surrogate = build_classifier("compact_cnn", 10, [0.5] * 3, [0.25] * 3).to(device).eval()
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}; {args.n} images of 32x32 (heavy attacks: fewer, see n); "
        f"batch {args.batch_size}\n"
    )
    print(
        f"| {'attack':<11} | {'n':>6} | {'batched img/s':>13} | "
        f"{'per-image img/s':>15} | {'speed-up':>8} |"
    )
    print(f"|{'-' * 13}|{'-' * 8}|{'-' * 15}|{'-' * 17}|{'-' * 10}|")
    for attack_name in args.attacks or list_attacks():
        attack = build_attack(attack_name, **FAST_PREPARE.get(attack_name, {}))
        generator = torch.Generator().manual_seed(0)
        context = AttackContext(
            train_set={k: v for k, v in pool.items()},
            num_classes=10,
            target=0,
            device=device,
            generator=generator,
            surrogate=surrogate,
        )
        state = {k: v.to(device) for k, v in attack.prepare(context).items()}
        n = min(args.n, HEAVY.get(attack_name, args.n))
        batch = images[:n]
        attack.apply(batch[:64], state, generator)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for chunk in batch.split(args.batch_size):
            attack.apply(chunk, state, generator)
        _sync(device)
        batched = n / (time.perf_counter() - start)
        loop_n = min(args.loop_n, n)
        start = time.perf_counter()
        for i in range(loop_n):
            attack.apply(batch[i : i + 1], state, generator)
        _sync(device)
        single = loop_n / (time.perf_counter() - start)
        print(
            f"| {attack_name:<11} | {n:>6} | {batched:>13.0f} | {single:>15.0f} | "
            f"{batched / single:>7.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
