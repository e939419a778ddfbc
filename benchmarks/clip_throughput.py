"""CLIP zero-shot scoring throughput:
batched (as ``clip_split`` scores) vs one image per forward pass.

Measures the embedded CLIP (``cgd-embedded-clip``, 32x32 input) and a ViT-B-32-sized open_clip
model (random weights: throughput does not depend on them; 32x32 images are resized to 224 on
the device, as for CIFAR) on the current device. Prints a table.

    python benchmarks/clip_throughput.py [--device auto|cpu|cuda] [--n 4096] [--vit-n 512]
        [--loop-n 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from cgd_kedro.clip.factory import EMBEDDED_CLIP, create_clip, get_tokenizer, preprocess_config
from cgd_kedro.clip.zero_shot import class_text_embeddings, image_embeddings, zero_shot_logits
from cgd_kedro.data.world import CLASS_NAMES, generate_images
from cgd_kedro.runtime import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn, n: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return n / (time.perf_counter() - start)


def _measure(
    model_name: str,
    images: torch.Tensor,
    templates: list[str],
    device: torch.device,
    batch_size: int,
    loop_n: int,
) -> str:
    """The table row of ``model_name``: ``images`` scored batched, then one per forward pass."""
    n = images.shape[0]
    model = create_clip(model_name).to(device).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    batch = images.to(device)

    text = class_text_embeddings(
        model, get_tokenizer(model_name), CLASS_NAMES, templates, device
    ).cpu()
    preprocess = preprocess_config(model)

    def score(x: torch.Tensor, batch_size: int) -> torch.Tensor:
        # text embedded once, as in clip_split
        return zero_shot_logits(image_embeddings(model, x, preprocess, device, batch_size), text)

    score(batch[:8], 8)  # warm-up
    batched = _rate(lambda: score(batch, batch_size), n, device)
    loop_n = min(loop_n, n)
    single = _rate(lambda: [score(batch[i : i + 1], 1) for i in range(loop_n)], loop_n, device)
    return (
        f"| {model_name:<18} | {size:>5} | {n:>5} | {batched:>13.0f} | {single:>16.1f} | "
        f"{batched / single:>7.1f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=4096, help="images scored batched (embedded CLIP)")
    parser.add_argument("--vit-n", type=int, default=512, help="images scored batched (ViT-B-32)")
    parser.add_argument("--loop-n", type=int, default=64, help="images scored one per forward pass")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    images = generate_images(max(args.n, args.vit_n), seed=0)["images"]
    templates = ["a photo of a {}"]
    print(f"device: {name}; 32x32 uint8 images; batch {args.batch_size}\n")
    print(
        f"| {'model':<18} | {'input':>5} | {'n':>5} | {'batched img/s':>13} | "
        f"{'one-by-one img/s':>16} | {'speed-up':>8} |"
    )
    print(f"|{'-' * 20}|{'-' * 7}|{'-' * 7}|{'-' * 15}|{'-' * 18}|{'-' * 10}|")
    for model_name, n in ((EMBEDDED_CLIP, args.n), ("ViT-B-32", args.vit_n)):
        row = _measure(model_name, images[:n], templates, device, args.batch_size, args.loop_n)
        print(row, flush=True)


if __name__ == "__main__":
    main()
