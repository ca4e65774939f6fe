"""Procedural shapes: a synthetic RGB image dataset generated from a seed, any size, offline.

Each image is one shape with random centre, size, rotation and colours on a background, plus
pixel noise. Shapes are implicit functions g(u, v) of the shape's own rotated and scaled
coordinates (inside where g <= 1), so a whole batch of one class renders as a few tensor ops,
and edges are anti-aliased from g. Three variants serve as a source and two transfer targets:

- `shapes`: 10 classes (circle ... crescent), flat background, solid shape, light noise.
- `shapes_style`: the same 10 classes in another style: striped pastel background, dark shapes
  filled with a gradient and outlined, stronger noise (same content, different appearance).
- `shapes_novel`: 10 different classes (semicircle, L, T, bar, dots, outlines, arc, chevron) in
  the base style (same appearance, classes the source never saw).
"""

from __future__ import annotations

import math

import torch

from cnnlab.data.registry import register_dataset
from cnnlab.data.base import Pools, Split


def _ngon(u, v, n):
    """Regular n-gon with circumradius 1."""
    r, phi = torch.hypot(u, v), torch.atan2(v, u)
    sector = 2 * math.pi / n
    return r * torch.cos(torch.remainder(phi, sector) - sector / 2) / math.cos(math.pi / n)


def _box(u, v, cu, cv, hu, hv):
    return torch.maximum((u - cu).abs() / hu, (v - cv).abs() / hv)


def _disc(u, v, cu, cv, radius):
    return torch.hypot(u - cu, v - cv) / radius


def _minus(a, b):
    """Inside a and outside b."""
    return torch.maximum(a, 2 - b)


def _star(u, v):
    r, phi = torch.hypot(u, v), torch.atan2(v, u)
    return r / (0.45 + 0.55 * torch.cos(2.5 * phi).abs() ** 2)


def _rotated(u, v, angle):
    c, s = math.cos(angle), math.sin(angle)
    return c * u + s * v, -s * u + c * v


BASE_SHAPES = {
    "circle": lambda u, v: _disc(u, v, 0, 0, 0.9),
    "triangle": lambda u, v: _ngon(u, v, 3),
    "square": lambda u, v: _ngon(u, v, 4),
    "pentagon": lambda u, v: _ngon(u, v, 5),
    "hexagon": lambda u, v: _ngon(u, v, 6),
    "star": _star,
    "cross": lambda u, v: torch.minimum(_box(u, v, 0, 0, 0.3, 1), _box(u, v, 0, 0, 1, 0.3)),
    "ring": lambda u, v: _minus(_disc(u, v, 0, 0, 1), _disc(u, v, 0, 0, 0.55)),
    "ellipse": lambda u, v: _disc(u / 1.0, v / 0.5, 0, 0, 1),
    "crescent": lambda u, v: _minus(_disc(u, v, 0, 0, 1), _disc(u, v, 0.45, 0, 0.75)),
}

NOVEL_SHAPES = {
    "semicircle": lambda u, v: torch.maximum(_disc(u, v, 0, 0, 1), 1 + 4 * v),
    "l_shape": lambda u, v: torch.minimum(_box(u, v, -0.7, 0, 0.3, 1), _box(u, v, 0, 0.7, 1, 0.3)),
    "t_shape": lambda u, v: torch.minimum(_box(u, v, 0, -0.7, 1, 0.3), _box(u, v, 0, 0.15, 0.3, 0.85)),
    "bar": lambda u, v: _box(u, v, 0, 0, 1, 0.25),
    "two_dots": lambda u, v: torch.minimum(_disc(u, v, -0.55, 0, 0.42), _disc(u, v, 0.55, 0, 0.42)),
    "three_dots": lambda u, v: torch.minimum(
        torch.minimum(_disc(u, v, 0, -0.6, 0.36), _disc(u, v, -0.55, 0.4, 0.36)),
        _disc(u, v, 0.55, 0.4, 0.36)),
    "hollow_square": lambda u, v: _minus(_box(u, v, 0, 0, 0.85, 0.85), _box(u, v, 0, 0, 0.5, 0.5)),
    "hollow_triangle": lambda u, v: _minus(_ngon(u, v, 3), _ngon(u / 0.5, v / 0.5, 3)),
    "arc": lambda u, v: torch.maximum(_minus(_disc(u, v, 0, 0, 1), _disc(u, v, 0, 0, 0.6)), 1 + 4 * v),
    "chevron": lambda u, v: torch.minimum(_box(*_rotated(u + 0.35, v, 0.6), 0, 0, 0.22, 0.9),
                                          _box(*_rotated(u - 0.35, v, -0.6), 0, 0, 0.22, 0.9)),
}

VARIANTS = {  # name: (classes, style, seed offset so variants do not share geometry)
    "shapes": (BASE_SHAPES, "plain", 0),
    "shapes_style": (BASE_SHAPES, "textured", 1),
    "shapes_novel": (NOVEL_SHAPES, "plain", 2),
}


def _uniform(gen, n, lo, hi, *shape):
    return torch.rand(n, *shape, generator=gen) * (hi - lo) + lo


def render(labels: torch.Tensor, shapes: dict, style: str, size: int,
           gen: torch.Generator) -> torch.Tensor:
    """Render one image per label as uint8 (N, 3, size, size); labels must be sorted."""
    n = labels.numel()
    radius = _uniform(gen, n, 0.24, 0.42) * size  # in pixels
    cx = radius + torch.rand(n, generator=gen) * (size - 2 * radius)
    cy = radius + torch.rand(n, generator=gen) * (size - 2 * radius)
    theta = _uniform(gen, n, 0, 2 * math.pi)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, size) - cx.view(n, 1, 1)
    dy = grid.view(1, size, 1) - cy.view(n, 1, 1)
    cos = (theta.cos() / radius).view(n, 1, 1)
    sin = (theta.sin() / radius).view(n, 1, 1)
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx

    # Labels are sorted, so each class is one contiguous slice: a loop over classes, each a view.
    g = torch.empty(n, size, size)
    bounds = torch.searchsorted(labels, torch.arange(len(shapes) + 1)).tolist()
    for c, fn in enumerate(shapes.values()):
        lo, hi = bounds[c], bounds[c + 1]
        if hi > lo:
            g[lo:hi] = fn(u[lo:hi], v[lo:hi])
    # (1 - g) * radius approximates the distance inside the edge in pixels; +0.5 anti-aliases.
    depth = g.neg_().add_(1).mul_(radius.view(n, 1, 1))
    alpha = (depth + 0.5).clamp_(0, 1).unsqueeze(1)

    if style == "plain":
        bg = torch.rand(n, 3, 1, 1, generator=gen)
        # at least 0.3 away from the background in every channel, so every shape is visible
        fg = torch.remainder(bg + 0.5 + _uniform(gen, n, -0.2, 0.2, 3, 1, 1), 1.0)
        img = torch.addcmul(bg, fg - bg, alpha)
        noise = 0.04
    else:
        c1 = _uniform(gen, n, 0.55, 1.0, 3, 1, 1)
        c2 = _uniform(gen, n, 0.55, 1.0, 3, 1, 1)
        freq = _uniform(gen, n, 0.4, 1.2).view(n, 1, 1)
        psi = _uniform(gen, n, 0, math.pi).view(n, 1, 1)
        phase = _uniform(gen, n, 0, 2 * math.pi).view(n, 1, 1)
        # sin(a x + b y + p) = sin(a x + p) cos(b y) + cos(a x + p) sin(b y): separable stripes
        ax = freq * psi.cos() * dx[:, :1, :] + phase  # (n, 1, W)
        by = freq * psi.sin() * dy[:, :, :1]  # (n, H, 1)
        t = torch.addcmul(ax.sin() * by.cos(), ax.cos(), by.sin()).mul_(0.5).add_(0.5)
        f1 = _uniform(gen, n, 0.0, 0.45, 3, 1, 1)
        f2 = _uniform(gen, n, 0.0, 0.45, 3, 1, 1)
        ramp = (u * 0.5).add_(0.5).clamp_(0, 1)
        inner = (depth - 1.0).clamp_(0, 1)  # 1.5 px in from the edge
        outline = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, 0.0, 1.0)
        # striped pastel background c2..c1, an outline, a dark gradient fill f2..f1: every pixel
        # is a mix of five colours, so one batched matmul of (colours x weights) draws it
        a = alpha.squeeze(1)
        weights = torch.stack([1 - a, t * (1 - a), a - inner, inner, ramp * inner], dim=1)
        colours = torch.cat([c2, c1 - c2, outline.expand(n, 3, 1, 1), f2, f1 - f2], dim=2)
        img = torch.bmm(colours.view(n, 3, 5), weights.view(n, 5, size * size)).view(n, 3, size, size)
        noise = 0.08
    # Luminance noise, uniform with the given standard deviation: drawing random numbers is the
    # slowest step here, and one draw per pixel (not per channel) costs a third as much.
    grain = torch.rand(n, 1, size, size, generator=gen).sub_(0.5).mul_(noise * math.sqrt(12) * 255)
    img = torch.addcmul(grain.add_(0.5), img, torch.tensor(255.0))
    return img.clamp_(0, 255).to(torch.uint8)  # +0.5 then truncation rounds to nearest


def generate(variant: str, num: int, size: int = 32, seed: int = 0, chunk: int = 256,
             part: int = 0):
    """`num` images of a variant with balanced classes: (uint8 images, int64 labels, names).

    `part` selects an independent stream (0: train pool, 1: test split), so the test images do
    not change when the number of training images does.
    """
    shapes, style, offset = VARIANTS[variant]
    gen = torch.Generator().manual_seed((int(seed) * 1000 + offset * 10 + part) % 2**63)
    k = len(shapes)
    images = torch.empty(num, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(num, dtype=torch.long)
    for i in range(0, num, chunk):
        m = min(chunk, num - i)
        # balanced classes, rendered class by class, then shuffled once at the end
        labels[i:i + m] = torch.sort((torch.arange(i, i + m) % k)).values
        images[i:i + m] = render(labels[i:i + m], shapes, style, size, gen)
    perm = torch.randperm(num, generator=gen)
    return images[perm], labels[perm], list(shapes)


def _make_loader(variant: str):
    def load(cfg) -> Pools:
        size = int(cfg.image_size or 32)
        num_train, num_test = int(cfg.num_train or 10000), int(cfg.num_test or 2000)
        images, labels, names = generate(variant, num_train, size, cfg.split_seed, part=0)
        test_images, test_labels, _ = generate(variant, num_test, size, cfg.split_seed, part=1)
        return Pools(train=Split(labels=labels, images=images),
                     test=Split(labels=test_labels, images=test_images), class_names=names)

    return load


register_dataset("shapes", "procedural 32x32 RGB shapes, 10 classes, generated from a seed",
                 size=32, channels=3)(_make_loader("shapes"))
register_dataset("shapes_style", "the shapes classes in another style (texture, palette, outline)",
                 size=32, channels=3)(_make_loader("shapes_style"))
register_dataset("shapes_novel", "10 other shape classes in the base style (a transfer target)",
                 size=32, channels=3)(_make_loader("shapes_novel"))
