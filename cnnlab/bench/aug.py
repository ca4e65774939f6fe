"""`cnnlab aug bench`: cnnlab's batched augmentation beside two references, measured side by side.

  cnnlab     the preset as training runs it (cnnlab.data.augment.create), on whole batches
  fair       the same ops, per-sample random, on the whole batch with plain tensor ops, one op at a
             time as a user would write them: F.pad and a gather of each sample's window (crop),
             torch.where over a mirrored copy (flip), a (N, 3) @ (3, 3) matmul and a broadcast
             add (PCA lighting). It draws its random numbers in the order cnnlab does, so for one
             generator both give the same images: the ratio is the price of the implementation
             alone. Only for presets whose ops are all crop, flip or pca.
  per-image  torchvision.transforms.v2 one image at a time (RandomCrop, RandomHorizontalFlip, and
             PCA lighting as a per-image add), as a DataLoader worker's transform would run; also
             only for presets whose ops are all crop, flip or pca

Rounds interleave the pipelines (in rotating order), so a slow spell on a shared machine hits them
alike; rates are medians over rounds, ratios medians of the per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

FAIR_OPS = ("crop", "flip", "pca")


def _lighting(train_images):
    """(3 components, 3 channels) float32: delta = alpha @ proj, alpha ~ N(0, pca_std) per image."""
    import torch

    from cnnlab.data.pca import rgb_pca

    eigvals, eigvecs = rgb_pca(train_images)
    return (eigvecs * eigvals).T.contiguous().to(torch.float32)


def fair_baseline(aug: Any, train_images=None) -> Callable | None:
    """The fair baseline for an aug config: fn(x, gen) -> augmented batch, or None when the preset
    has an op other than crop, flip and pca (or none)."""
    import torch
    import torch.nn.functional as F

    ops = list(aug.ops)
    if not ops or any(o not in FAIR_OPS for o in ops):
        return None
    pad, size = int(aug.crop_padding), int(getattr(aug, "crop_size", 0) or 0)
    flip_p, std = float(aug.flip_p), float(aug.pca_std)
    proj = _lighting(train_images) if "pca" in ops else None

    def crop(x, gen):
        n, c, h, w = x.shape
        oh, ow = (size, size) if size else (h, w)
        padded = F.pad(x, (pad, pad, pad, pad))
        ph, pw = padded.shape[-2:]
        oy = torch.randint(0, ph - oh + 1, (n,), generator=gen, device=x.device)
        ox = torch.randint(0, pw - ow + 1, (n,), generator=gen, device=x.device)
        rows = oy.view(n, 1, 1) + torch.arange(oh, device=x.device).view(1, oh, 1)
        cols = ox.view(n, 1, 1) + torch.arange(ow, device=x.device).view(1, 1, ow)
        idx = (rows * pw + cols).view(n, 1, oh * ow).expand(n, c, oh * ow)
        return padded.flatten(2).gather(2, idx).view(n, c, oh, ow)

    def flip(x, gen):
        mirror = torch.rand(x.shape[0], generator=gen, device=x.device) < flip_p
        return torch.where(mirror.view(-1, 1, 1, 1), x.flip(3), x)

    def pca(x, gen):
        alpha = torch.randn(x.shape[0], 3, generator=gen, device=x.device) * std
        delta = (alpha @ proj.to(x.device)).to(x.dtype)
        return (x + delta.view(-1, 3, 1, 1)).clamp(0, 1)

    fns = [{"crop": crop, "flip": flip, "pca": pca}[o] for o in ops]

    def baseline(x, gen):
        for fn in fns:
            x = fn(x, gen)
        return x

    return baseline


def per_image_v2(aug: Any, size: int, train_images=None):
    """(fn(batch) -> batch running torchvision v2 on each image in turn, description, left-out
    ops): the preset's crop, flip and pca. fn is None when the preset has another op (or none):
    a per-image pipeline that leaves ops out would not be a comparison."""
    import torch
    from torchvision.transforms import v2

    steps, names, left = [], [], []
    for op in list(aug.ops):
        if op == "crop":
            side = int(getattr(aug, "crop_size", 0) or 0) or size
            steps.append(v2.RandomCrop(side, padding=int(aug.crop_padding)))
            names.append(f"RandomCrop({side}, padding={int(aug.crop_padding)})")
        elif op == "flip":
            steps.append(v2.RandomHorizontalFlip(float(aug.flip_p)))
            names.append(f"RandomHorizontalFlip({float(aug.flip_p):g})")
        elif op == "pca":
            proj, std = _lighting(train_images), float(aug.pca_std)
            steps.append(v2.Lambda(lambda img, proj=proj, std=std:
                                   (img + ((torch.randn(3) * std) @ proj).view(3, 1, 1)).clamp(0, 1)))
            names.append("PCA lighting (per-image add)")
        else:
            left.append(op)
    if not steps or left:
        return None, "no ops", left
    transform = v2.Compose(steps)

    def run(x):
        return torch.stack([transform(img) for img in x])

    return run, ", ".join(names) or "no ops", left


@dataclass
class AugBench:
    """Rates (img/s) per pipeline per round; medians and ratios from them."""
    batch: int
    size: int
    threads: int
    rounds: dict[str, list[float]] = field(default_factory=dict)
    v2_ops: str = ""
    left_out: list[str] = field(default_factory=list)

    def rate(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of a's rate / b's rate."""
        return statistics.median(x / y for x, y in zip(self.rounds[a], self.rounds[b]))


def measure(aug: Any, batch: int = 256, size: int = 32, threads: int | None = None,
            rounds: int = 7, calls: int = 10, warmup: int = 2, seed: int = 0) -> AugBench:
    """Interleaved rounds: per round `calls` batches through cnnlab and the fair baseline, one
    batch through torchvision v2 per image. `threads` sets torch's intra-op threads meanwhile."""
    import torch

    from cnnlab.data import augment

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        train = torch.randint(0, 256, (64, 3, size, size), generator=g, dtype=torch.uint8)
        x = torch.rand(batch, 3, size, size, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        ours = augment.create(aug, train_images=train)
        fair = fair_baseline(aug, train)
        v2_fn, v2_ops, left = per_image_v2(aug, size, train)
        gen = torch.Generator().manual_seed(seed)
        pipes = {}
        if ours is not None:
            pipes["cnnlab"] = ((lambda: ours(x, gen, y, 10)) if ours.mixes else (lambda: ours(x, gen)), calls)
        if fair is not None:
            pipes["fair"] = (lambda: fair(x, gen), calls)
        if v2_fn is not None:
            pipes["per-image v2"] = (lambda: v2_fn(x), 1)
        for fn, _ in pipes.values():
            for _ in range(warmup):
                fn()
        out = AugBench(batch, size, torch.get_num_threads(), {k: [] for k in pipes}, v2_ops, left)
        names = list(pipes)
        for r in range(rounds if names else 0):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn, k = pipes[name]
                start = time.perf_counter()
                for _ in range(k):
                    fn()
                out.rounds[name].append(batch * k / (time.perf_counter() - start))
        return out
    finally:
        torch.set_num_threads(before)
