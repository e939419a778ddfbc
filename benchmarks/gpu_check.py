"""The GPU check's measurements (run by ``benchmarks/gpu_check.sh``); prints one table per part.

1. Victim training images/s: the project's ``train_classifier`` (bf16 autocast, channels_last,
   torch.compile, data on the device) vs a plain PyTorch loop (fp32,
   eager) on the same model and batch.
2. CLIP scoring images/s: the project's ``image_embeddings`` vs a raw
   open_clip ``encode_image`` in fp32.
3. CGD on real CIFAR-10 (BadNets, the GPU profile with short budgets, through ``kedro run``):
   CGD's seconds and the run's peak GPU memory.
4. Trigger throughput of every attack, batched vs a per-image loop (``trigger_throughput.py``).

Without CUDA, parts 1-3 are skipped with a message and part 4 runs on the CPU.

    python benchmarks/gpu_check.py [--cifar10 /data/cifar10-jpg] [--seconds 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cgd_kedro.accelerate import configure
from cgd_kedro.clip.factory import create_clip, preprocess_config
from cgd_kedro.clip.zero_shot import clip_preprocess, image_embeddings
from cgd_kedro.models.classifier import build_classifier
from cgd_kedro.training.classifier import TrainingConfig, train_classifier

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, device: torch.device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def victim_training(
    device: torch.device,
    architecture: str = "preactresnet18",
    batch_size: int = 128,
    steps: int = 60,
) -> tuple[float, float]:
    """(project img/s, plain-loop img/s) for ``steps`` training steps of ``architecture``."""
    images = torch.randint(0, 256, (steps * batch_size, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (steps * batch_size,))
    model = build_classifier(architecture, 10, [0.5] * 3, [0.25] * 3)
    config = TrainingConfig(epochs=1, batch_size=batch_size, lr=0.01)
    generator = torch.Generator().manual_seed(0)
    train_classifier(
        model,
        images[: 8 * batch_size],
        labels[: 8 * batch_size],
        config,
        device=device,
        generator=generator,
    )  # compile, autotune
    project = _timed(
        lambda: train_classifier(model, images, labels, config, device=device, generator=generator),
        device,
    )

    plain = build_classifier(architecture, 10, [0.5] * 3, [0.25] * 3).to(device).train()
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = images.to(device), labels.to(device)

    def plain_loop(n_steps: int) -> None:
        for step in range(n_steps):
            x = x_all[step * batch_size : (step + 1) * batch_size].float() / 255
            loss = F.cross_entropy(plain(x), y_all[step * batch_size : (step + 1) * batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    plain_loop(8)
    return steps * batch_size / project, steps * batch_size / _timed(
        lambda: plain_loop(steps), device
    )


def clip_scoring(
    device: torch.device, model_name: str = "ViT-B-32", n: int = 2048, batch_size: int = 256
) -> tuple[float, float]:
    """(project img/s, raw open_clip img/s) embedding ``n`` 32x32 images
    resized to the model's input."""
    model = create_clip(model_name).to(device).eval()
    preprocess = preprocess_config(model)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    image_embeddings(model, images[:batch_size], preprocess, device, batch_size)
    project = _timed(
        lambda: image_embeddings(model, images, preprocess, device, batch_size), device
    )
    # the raw forward gets preprocessed input for free
    ready = clip_preprocess(images.to(device), **preprocess)

    @torch.no_grad()
    def raw() -> None:
        for chunk in ready.split(batch_size):
            model.encode_image(chunk)

    raw()
    return n / project, n / _timed(raw, device)


def cgd_on_cifar10(root: str, seconds: int) -> dict:
    """``kedro run`` of the GPU profile up to BadNets' CGD with short budgets;
    CGD seconds and peak memory."""
    params = ",".join(
        [
            f"dataset.root={root}",
            "dataset.max_per_class=1000",
            "dataset.clip_holdout.size=2000",
            "victim.training.epochs=3",
            "clip.pretrain.epochs=2",
            "suspicious.runs=1",
            "suspicious.training.epochs=1",
            "cgd.epochs=2",
            "cgd.max_batches_per_epoch=40",
        ]
    )
    command = [
        sys.executable,
        "-m",
        "kedro",
        "run",
        "--env",
        "cifar10_gpu",
        "--to-nodes",
        "badnets.unlearn_with_cgd",
        "--params",
        params,
    ]
    environment = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=seconds
    )
    if done.returncode != 0:
        raise RuntimeError(f"kedro run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = sorted(
        (ROOT / "data/07_model_output/cifar10/badnets/cgd_report.json").glob("*/cgd_report.json")
    )[-1]
    cgd = json.loads(report.read_text())
    peak = [
        line
        for line in done.stdout.splitlines() + done.stderr.splitlines()
        if "peak GPU memory" in line
    ]
    return {
        "run_seconds": time.perf_counter() - started,
        "cgd_seconds": cgd.get("seconds"),
        "peak": peak[-1].strip() if peak else "n/a",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cifar10",
        default=None,
        help="CIFAR-10 root (image folder or cifar-10-batches-py); no CIFAR part without it",
    )
    parser.add_argument(
        "--seconds", type=int, default=300, help="time limit of the CIFAR-10 kedro run"
    )
    parser.add_argument("--trigger-n", type=int, default=10_000)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(
        f"torch {torch.__version__}; device: "
        f"{torch.cuda.get_device_name(0) if cuda else 'no CUDA GPU'}\n",
        flush=True,
    )
    if not cuda:
        print(
            "SKIPPED (no CUDA GPU): victim training, CLIP scoring, CGD on CIFAR-10 "
            "and peak GPU memory.\n",
            flush=True,
        )
    else:
        device = torch.device("cuda")
        configure("auto", "on")
        torch.cuda.reset_peak_memory_stats()
        project, plain = victim_training(device)
        print("| part | project img/s | plain PyTorch img/s | speed-up |\n|---|---|---|---|")
        print(
            f"| victim training (preactresnet18, batch 128) | {project:.0f} | {plain:.0f} | "
            f"{project / plain:.2f}x |",
            flush=True,
        )
        project, raw = clip_scoring(device)
        print(
            f"| CLIP scoring (ViT-B-32, 224 px, batch 256) | {project:.0f} | {raw:.0f} (open_clip "
            f"fp32) | {project / raw:.2f}x |"
        )
        print(
            f"\npeak GPU memory of parts 1-2: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
            flush=True,
        )
        if args.cifar10:
            result = cgd_on_cifar10(args.cifar10, args.seconds)
            print(
                "\nCIFAR-10 GPU profile, BadNets, short budgets: kedro run "
                f"{result['run_seconds']:.0f} s, CGD "
                f"{result['cgd_seconds']:.1f} s; {result['peak']}",
                flush=True,
            )
        else:
            print("\nSKIPPED: CGD on CIFAR-10 (no --cifar10 root given).", flush=True)
    print("\ntrigger throughput (batched vs one image per call):", flush=True)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/trigger_throughput.py"),
            "--n",
            str(args.trigger_n),
            "--loop-n",
            "200",
        ],
        check=True,
        cwd=ROOT,
    )


if __name__ == "__main__":
    main()
