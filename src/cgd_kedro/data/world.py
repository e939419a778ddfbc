"""The embedded world: a seeded, procedurally generated stand-in for CIFAR-10.

Every image shows one shape (the class) of a named colour and size, rotated and placed at random
on a textured background, with small distractor blobs ("clutter") and pixel noise. The same
generator also writes captions that name the class and its attributes, e.g.
``"a small red star on a striped background"``, which the project's own CLIP is trained on.

Everything is rendered in batches on tensors: shapes are signed-distance functions evaluated on
a pixel grid, so one call renders thousands of images without a per-image Python loop.
Rendering always happens on the CPU with a CPU generator, so a seed gives the same world on any
machine; it takes a few seconds for tens of thousands of images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from cgd_kedro.data.imageset import ImageSet, make_image_set
from cgd_kedro.runtime import derive_seed

CLASS_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "ring", "crescent", "heart", "arrow", "hourglass",
)  # fmt: skip

# Saturated, nameable colours (0-255); each image jitters its colour around the named one.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 85, 220),
    "yellow": (235, 210, 45),
    "purple": (145, 60, 190),
    "orange": (240, 135, 30),
    "white": (240, 240, 240),
    "cyan": (40, 200, 215),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted", "mottled")
SIZES: tuple[str, ...] = ("small", "large")

_CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} on a {background} background",
    "a photo of a {size} {colour} {shape}",
    "a {colour} {shape} on a {background} background",
    "a {shape} in {colour}, {size}, over a {background} background",
    "a picture of a {shape}",
)


# --- shapes as signed distance functions on local coordinates (unit radius ~ 1) ------------------


def _sd_box(x: Tensor, y: Tensor, half_w: float, half_h: float) -> Tensor:
    qx, qy = x.abs() - half_w, y.abs() - half_h
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _sd_circle(x: Tensor, y: Tensor, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> Tensor:
    return torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _sd_regular_polygon(x: Tensor, y: Tensor, sides: int, r: float) -> Tensor:
    # Distance to the nearest edge of a regular polygon with circumradius r (exact inside).
    angle = torch.atan2(y, x)
    sector = 2 * math.pi / sides
    local = torch.remainder(angle, sector) - sector / 2
    return torch.sqrt(x**2 + y**2) * torch.cos(local) - r * math.cos(math.pi / sides)


def _sd_star(x: Tensor, y: Tensor) -> Tensor:
    # A 5-pointed star as a radius that alternates between tips and notches (approximate SDF).
    angle = torch.atan2(y, x)
    # 1 at tips, 0 at notches
    wave = torch.abs(torch.remainder(angle * 5 / (2 * math.pi), 1.0) - 0.5) * 2
    radius = 0.45 + 0.6 * wave
    return (torch.sqrt(x**2 + y**2) - radius) * 0.7


def _sd_heart(x: Tensor, y: Tensor) -> Tensor:
    # The classic construction: a diamond (square turned 45 degrees) with a disc on each upper edge.
    cy = y - 0.25
    diamond = _sd_box((x + cy) / math.sqrt(2), (cy - x) / math.sqrt(2), 0.5, 0.5)
    lobes = torch.minimum(_sd_circle(x, y, 0.5, -0.42, -0.2), _sd_circle(x, y, 0.5, 0.42, -0.2))
    return torch.minimum(diamond, lobes)


def _sd_hourglass(x: Tensor, y: Tensor) -> Tensor:
    # Two triangles whose tips overlap at the centre (a polygon's first vertex points along +x).
    left = _sd_regular_polygon(x + 0.42, y, 3, 0.62)
    right = _sd_regular_polygon(-(x - 0.42), y, 3, 0.62)
    return torch.minimum(left, right)


def _sd_arrow(x: Tensor, y: Tensor) -> Tensor:
    shaft = _sd_box(x + 0.35, y, 0.6, 0.2)
    head = torch.maximum(_sd_regular_polygon(x - 0.35, y, 3, 0.65), -(x - 0.05))
    return torch.minimum(shaft, head)


_SHAPES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": lambda x, y: _sd_circle(x, y, 0.95),
    "square": lambda x, y: _sd_box(x, y, 0.78, 0.78),
    "triangle": lambda x, y: _sd_regular_polygon(x, y + 0.15, 3, 1.1),
    "star": _sd_star,
    "cross": lambda x, y: torch.minimum(_sd_box(x, y, 1.0, 0.3), _sd_box(x, y, 0.3, 1.0)),
    "ring": lambda x, y: (torch.sqrt(x**2 + y**2) - 0.72).abs() - 0.26,
    "crescent": lambda x, y: torch.maximum(
        _sd_circle(x, y, 1.0), -_sd_circle(x, y, 0.8, 0.5, 0.15)
    ),
    "heart": _sd_heart,
    "arrow": _sd_arrow,
    "hourglass": _sd_hourglass,
}


# --- sampling and rendering ----------------------------------------------------------------------


def _check_world_args(n: int, image_size: int, difficulty: float) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"world size: expected a non-negative integer, got {n!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"world.image_size: expected an integer >= 8, got {image_size!r}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"world.difficulty: expected a value in [0, 1], got {difficulty!r}")


def sample_attributes(n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Draw the nameable attributes of ``n`` images: class, colour, size and background."""
    return {
        "labels": torch.randint(len(CLASS_NAMES), (n,), generator=generator),
        "attr_colour": torch.randint(len(COLOUR_NAMES), (n,), generator=generator),
        "attr_size": torch.randint(len(SIZES), (n,), generator=generator),
        "attr_background": torch.randint(len(BACKGROUNDS), (n,), generator=generator),
    }


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _background(
    attrs: dict[str, Tensor], xs: Tensor, ys: Tensor, g: torch.Generator, difficulty: float
) -> Tensor:
    """Render ``B x 3 x H x W`` float backgrounds in [0, 255] for the drawn background kinds."""
    n, size = attrs["labels"].shape[0], xs.shape[-1]
    # Muted backgrounds (half-desaturated) so that the saturated shape colours usually stand out.
    base = 30 + 170 * torch.rand(n, 3, 1, 1, generator=g)
    base = 0.5 * base + 0.5 * base.mean(1, keepdim=True)
    # The pattern's second colour differs from the base by a random, difficulty-scaled amount.
    second = (base + (40 + 60 * difficulty) * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1)).clamp(
        0, 255
    )
    angle = _uniform(n, 0, math.pi, g).view(n, 1, 1)
    freq = _uniform(n, 4.0, 9.0, g).view(n, 1, 1)
    phase = _uniform(n, 0, 2 * math.pi, g).view(n, 1, 1)
    along = xs * torch.cos(angle) + ys * torch.sin(angle)
    across = -xs * torch.sin(angle) + ys * torch.cos(angle)
    low_res = torch.rand(n, 1, 4, 4, generator=g)
    mottled = torch.nn.functional.interpolate(
        low_res, size=(size, size), mode="bicubic", align_corners=False
    )
    patterns = torch.stack(
        [
            torch.zeros(n, size, size),
            (torch.sin(freq * along + phase) > 0).float(),
            ((torch.floor(freq * along / 3) + torch.floor(freq * across / 3)) % 2 == 0).float(),
            (
                (torch.remainder(along * freq / 3, 1) - 0.5) ** 2
                + (torch.remainder(across * freq / 3, 1) - 0.5) ** 2
                < 0.08
            ).float(),
            mottled[:, 0].clamp(0, 1),
        ],
        dim=1,
    )  # n x kinds x H x W
    weight = patterns[torch.arange(n), attrs["attr_background"]].unsqueeze(1)
    return base * (1 - weight) + second * weight


def _shape_alpha(labels: Tensor, u: Tensor, v: Tensor, radius_px: Tensor) -> Tensor:
    """Anti-aliased coverage in [0, 1] of each image's class shape at local coordinates (u, v)."""
    distance = torch.empty_like(u)
    for class_index, name in enumerate(CLASS_NAMES):
        rows = labels == class_index
        if rows.any():
            distance[rows] = _SHAPES[name](u[rows], v[rows])
    return (0.5 - distance * radius_px.view(-1, 1, 1)).clamp(0, 1)


def _render(
    attrs: dict[str, Tensor], g: torch.Generator, image_size: int, difficulty: float
) -> Tensor:
    n = attrs["labels"].shape[0]
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    xs, ys = xs.expand(n, -1, -1), ys.expand(n, -1, -1)
    canvas = _background(attrs, xs, ys, g, difficulty)

    # Clutter: up to 3 small discs of random colours, drawn under the main shape.
    max_clutter = round(3 * difficulty)
    for _ in range(max_clutter):
        active = torch.rand(n, generator=g) < 0.6
        cx, cy = _uniform(n, -0.9, 0.9, g), _uniform(n, -0.9, 0.9, g)
        r = _uniform(n, 0.03, 0.08, g)
        d = torch.sqrt((xs - cx.view(-1, 1, 1)) ** 2 + (ys - cy.view(-1, 1, 1)) ** 2) - r.view(
            -1, 1, 1
        )
        alpha = ((0.5 - d * image_size / 2).clamp(0, 1) * active.view(-1, 1, 1)).unsqueeze(1)
        colour = 255 * torch.rand(n, 3, 1, 1, generator=g)
        canvas = canvas * (1 - alpha) + colour * alpha

    # The main shape: size class sets the radius range; position keeps it mostly inside the frame.
    small = attrs["attr_size"] == 0
    radius = torch.where(small, _uniform(n, 0.34, 0.44, g), _uniform(n, 0.50, 0.64, g))
    spread = (1 - radius) * (0.35 + 0.45 * difficulty)
    cx, cy = _uniform(n, -1, 1, g) * spread, _uniform(n, -1, 1, g) * spread
    theta = _uniform(n, 0, 2 * math.pi, g)
    cos_t, sin_t = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    dx, dy = (
        (xs - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1),
        (ys - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1),
    )
    u, v = cos_t * dx + sin_t * dy, -sin_t * dx + cos_t * dy
    alpha = _shape_alpha(attrs["labels"], u, v, radius * image_size / 2).unsqueeze(1)
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    colour = palette[attrs["attr_colour"]].view(n, 3, 1, 1)
    colour = colour + (12 + 18 * difficulty) * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1)
    shading = 1 + 0.12 * u.unsqueeze(1).clamp(-1, 1)  # a light gradient across the shape
    canvas = canvas * (1 - alpha) + (colour * shading).clamp(0, 255) * alpha

    # Global photometric jitter and sensor noise.
    gain = _uniform(n, 1 - 0.2 * difficulty, 1 + 0.2 * difficulty, g).view(n, 1, 1, 1)
    offset = _uniform(n, -15 * difficulty, 15 * difficulty, g).view(n, 1, 1, 1)
    noise = torch.randn(canvas.shape, generator=g) * (2 + 10 * difficulty)
    return (canvas * gain + offset + noise).clamp(0, 255).round().to(torch.uint8)


_CHUNK_SIZE = 4096  # images rendered per batch; each chunk draws from its own seed stream


def generate_images(
    n: int, *, seed: int, image_size: int = 32, difficulty: float = 0.5
) -> ImageSet:
    """Render ``n`` labelled images of the embedded world.

    Args:
        n: number of images.
        seed: the world's seed; the same seed always gives the same images.
        image_size: side of the square RGB images in pixels.
        difficulty: in [0, 1]; scales clutter, noise, colour jitter, pattern contrast and placement.

    Returns:
        An image set with ``images`` (uint8 ``n x 3 x S x S``), ``labels`` and the nameable
        attributes ``attr_colour``, ``attr_size`` and ``attr_background`` (int64 indices into
        ``COLOUR_NAMES``, ``SIZES`` and ``BACKGROUNDS``).
    """
    _check_world_args(n, image_size, difficulty)
    attrs = sample_attributes(n, torch.Generator().manual_seed(seed))
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    # One generator per chunk, so the result depends on (seed, n) only, never on batching.
    for start in range(0, n, _CHUNK_SIZE):
        rows = slice(start, start + _CHUNK_SIZE)
        chunk_generator = torch.Generator().manual_seed(derive_seed(seed, f"render/{start}"))
        images[rows] = _render(
            {k: v[rows] for k, v in attrs.items()}, chunk_generator, image_size, float(difficulty)
        )
    return make_image_set(images, attrs.pop("labels"), **attrs)


def captions_for(image_set: ImageSet, *, seed: int) -> list[str]:
    """One caption per image naming its class and attributes, template chosen per image."""
    g = torch.Generator().manual_seed(seed)
    template_ids = torch.randint(
        len(_CAPTION_TEMPLATES), (image_set["labels"].shape[0],), generator=g
    )
    return [
        _CAPTION_TEMPLATES[t].format(
            shape=CLASS_NAMES[label],
            colour=COLOUR_NAMES[colour],
            size=SIZES[size],
            background=BACKGROUNDS[background],
        )
        for t, label, colour, size, background in zip(
            template_ids.tolist(),
            image_set["labels"].tolist(),
            image_set["attr_colour"].tolist(),
            image_set["attr_size"].tolist(),
            image_set["attr_background"].tolist(),
            strict=True,
        )
    ]


def generate_caption_corpus(
    *, seed: int, n_captions: int, image_size: int = 32, difficulty: float = 0.5
) -> tuple[ImageSet, list[str]]:
    """The world's image-caption corpus (what the embedded CLIP is pretrained on).

    Drawn from its own seed streams of ``seed``, so it shares no image with the classification
    sets of ``generate_world(seed=seed, ...)`` and is the same whether or not those are generated.
    """
    corpus = generate_images(
        n_captions, seed=derive_seed(seed, "captions"), image_size=image_size, difficulty=difficulty
    )
    return corpus, captions_for(corpus, seed=derive_seed(seed, "caption-templates"))


def generate_world(
    *,
    seed: int,
    n_train: int,
    n_test: int,
    n_captions: int,
    image_size: int = 32,
    difficulty: float = 0.5,
) -> tuple[ImageSet, ImageSet, ImageSet, list[str]]:
    """The whole embedded world: train and test classification sets and a disjoint caption corpus.

    The three parts are drawn from independent seed streams of ``seed``, so none shares an image
    with another, and growing one part does not change the others.
    """
    train = generate_images(
        n_train, seed=derive_seed(seed, "train"), image_size=image_size, difficulty=difficulty
    )
    test = generate_images(
        n_test, seed=derive_seed(seed, "test"), image_size=image_size, difficulty=difficulty
    )
    corpus, captions = generate_caption_corpus(
        seed=seed, n_captions=n_captions, image_size=image_size, difficulty=difficulty
    )
    return train, test, corpus, captions
