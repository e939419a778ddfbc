"""Where WaNet's batched trigger spends its time,
and the exact alternatives to ``grid_sample`` tried.

WaNet's poisoned image is ``grid_sample(x, grid, bilinear, align_corners=True)`` with one grid for
every image. ``attacks.wanet.warp`` converts uint8 chunks to float, samples, rounds and clamps.
This script times each stage alone on ``--n`` uint8 32x32 images, the whole batched warp, the
same warp one image per call (the denominator of the trigger benchmark's speed-up), and three
exact re-formulations of the same bilinear map that precompute everything image-independent:

- ``9 shifted multiply-adds``: displacements are under one pixel at s = 0.5, so every bilinear tap
  is one of the 3 x 3 neighbours; the warp is 9 ``addcmul`` of shifted views with fixed weights;
- ``sparse matrix``: the warp as an ``HW x HW`` CSR matrix (4 taps per row) times the images;
- ``dense matrix``: the same matrix dense.

    python benchmarks/wanet_profile.py [--n 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from cgd_kedro.attacks.wanet import random_noise_grid, warp, warp_grid

CHUNK = 128


def bilinear_taps(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output index, input index, weight) of every in-bounds bilinear tap of ``grid``
    (1 x H x W x 2)."""
    _, height, width, _ = grid.shape
    ix = (grid[0, ..., 0].double() + 1) / 2 * (width - 1)
    iy = (grid[0, ..., 1].double() + 1) / 2 * (height - 1)
    x0, y0 = ix.floor(), iy.floor()
    wx1, wy1 = ix - x0, iy - y0
    output_index = torch.arange(height * width).view(height, width)
    rows, cols, weights = [], [], []
    for dy, dx, weight in (
        (0, 0, (1 - wy1) * (1 - wx1)),
        (0, 1, (1 - wy1) * wx1),
        (1, 0, wy1 * (1 - wx1)),
        (1, 1, wy1 * wx1),
    ):
        sy, sx = (y0 + dy).long(), (x0 + dx).long()
        valid = (sy >= 0) & (sy < height) & (sx >= 0) & (sx < width)
        rows.append(output_index[valid])
        cols.append((sy * width + sx)[valid])
        weights.append(weight[valid])
    return torch.cat(rows), torch.cat(cols), torch.cat(weights).float()


def shifted_multiply_adds(grid: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """The warp as ``(dy, dx, H x W weight)`` shifts:
    ``out[y, x] = sum w[y, x] * in[y + dy, x + dx]``."""
    _, height, width, _ = grid.shape
    plan: dict[tuple[int, int], torch.Tensor] = {}
    for row, col, weight in zip(*bilinear_taps(grid), strict=True):
        y, x, sy, sx = int(row) // width, int(row) % width, int(col) // width, int(col) % width
        plan.setdefault((sy - y, sx - x), torch.zeros(height, width))[y, x] += weight
    return [(dy, dx, w) for (dy, dx), w in sorted(plan.items())]


def warp_by_shifts(images: torch.Tensor, plan: list[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
    height, width = images.shape[-2:]
    out = torch.empty_like(images)
    for source, target in zip(images.split(CHUNK), out.split(CHUNK), strict=True):
        x = source.float()
        acc = torch.zeros_like(x)
        for dy, dx, weight in plan:
            ys, yd = (
                (slice(dy, height), slice(0, height - dy))
                if dy >= 0
                else (slice(0, height + dy), slice(-dy, height))
            )
            xs, xd = (
                (slice(dx, width), slice(0, width - dx))
                if dx >= 0
                else (slice(0, width + dx), slice(-dx, width))
            )
            acc[..., yd, xd].addcmul_(x[..., ys, xs], weight[yd, xd])
        target.copy_(acc.round_().clamp_(0, 255))
    return out


def warp_by_matrix(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(images)
    pixels = images.shape[-2] * images.shape[-1]
    for source, target in zip(images.split(CHUNK * 4), out.split(CHUNK * 4), strict=True):
        columns = source.reshape(-1, pixels).t().float().contiguous()  # HW x (N*C)
        warped = (
            matrix @ columns if matrix.layout == torch.strided else torch.sparse.mm(matrix, columns)
        )
        target.copy_(warped.t().reshape(source.shape).round_().clamp_(0, 255))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-n", type=int, default=500)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    grid = warp_grid(random_noise_grid(32, generator, k=4), s=0.5)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    as_float = images.float()
    out = torch.empty_like(images)
    chunk_grid = grid.expand(CHUNK, -1, -1, -1)

    def rate(function) -> float:
        function()
        started = time.perf_counter()
        for _ in range(args.repeat):
            function()
        return args.n * args.repeat / (time.perf_counter() - started)

    def convert() -> None:
        for chunk in images.split(CHUNK):
            chunk.float()

    def sample() -> None:
        for chunk in as_float.split(CHUNK):
            F.grid_sample(
                chunk,
                chunk_grid[: chunk.shape[0]],
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )

    def round_back() -> None:
        for chunk, target in zip(as_float.split(CHUNK), out.split(CHUNK), strict=True):
            target.copy_(chunk.round().clamp_(0, 255))

    def per_image() -> None:
        for i in range(args.loop_n):
            warp(images[i : i + 1], grid)

    rows, cols, weights = bilinear_taps(grid)
    with warnings.catch_warnings():  # torch's "sparse CSR is beta" notice
        warnings.simplefilter("ignore")
        sparse = (
            torch.sparse_coo_tensor(torch.stack([rows, cols]), weights, (1024, 1024))
            .coalesce()
            .to_sparse_csr()
        )
    dense = sparse.to_dense()
    plan = shifted_multiply_adds(grid)
    reference = warp(images, grid)
    alternatives = {
        "9 shifted multiply-adds": lambda: warp_by_shifts(images, plan),
        "sparse matrix (CSR)": lambda: warp_by_matrix(images, sparse),
        "dense matrix": lambda: warp_by_matrix(images, dense),
    }
    print(
        f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}; {args.n} uint8 "
        f"3x32x32 images, chunks of {CHUNK}\n"
    )
    print("| stage | img/s | values differing from warp() |\n|---|---|---|")
    batched = rate(lambda: warp(images, grid))
    started = time.perf_counter()
    per_image()
    single = args.loop_n / (time.perf_counter() - started)
    print(f"| warp(), batched (all stages) | {batched:,.0f} | - |")
    print(f"| warp(), one image per call | {single:,.0f} | - |")
    print(f"| stage: uint8 -> float | {rate(convert):,.0f} | - |")
    print(f"| stage: grid_sample alone (ATen bilinear kernel) | {rate(sample):,.0f} | - |")
    print(f"| stage: round, clamp, float -> uint8 | {rate(round_back):,.0f} | - |")
    for name, function in alternatives.items():
        difference = (function().int() - reference.int()).abs()
        differing = (
            f"{int(difference.gt(0).sum())} of {reference.numel():,} (max {int(difference.max())})"
        )
        print(f"| alternative: {name} | {rate(function):,.0f} | {differing} |")
    print(
        f"\nspeed-up batched / per image: {batched / single:.1f}x; 20x would need "
        f"{20 * single:,.0f} img/s batched"
    )


if __name__ == "__main__":
    main()
