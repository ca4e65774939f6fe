"""`cnnlab aug`: look at a preset (a PNG grid) and measure its speed."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cnnlab.cli.app import OVERRIDES, _compose, _groups_help, app, guarded

aug_app = typer.Typer(no_args_is_help=True, help="Augmentation presets: preview and benchmark.")
app.add_typer(aug_app, name="aug")


@aug_app.command("preview", epilog=_groups_help())
@guarded
def preview(overrides: Optional[List[str]] = OVERRIDES,
            images: int = typer.Option(8, "--images", help="Training images, one per row."),
            copies: int = typer.Option(6, "--copies", help="Augmented copies beside each original."),
            out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default: outputs/aug-<preset>-<data>.png).")):
    """Write a PNG grid: each training image, then augmented copies of it; prints the path."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from cnnlab import data
    from cnnlab.data import augment
    from cnnlab.errors import UsageError
    from cnnlab.run import ensure_writable

    if images < 1 or copies < 1:
        raise UsageError("--images and --copies must be at least 1")
    cfg = _compose(overrides)
    bundle = data.create(cfg.data)
    split = bundle.train
    n = min(images, len(split))
    x = (split.images[:n] if split.in_memory else torch.stack([split.dataset[i][0] for i in range(n)]))
    x = x.float().div(255)
    y = split.labels[:n]
    aug = augment.create(cfg.aug, train_images=split.images if split.in_memory else split.dataset)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = [x]
    for _ in range(copies):
        if aug is None:
            rows.append(x)
        elif aug.mixes:
            rows.append(aug(x, gen, y, bundle.num_classes)[0])
        else:
            rows.append(aug(x, gen))
    grid = torch.stack(rows, dim=1).flatten(0, 1)  # row i: original i, then its copies
    scale = max(1, 96 // grid.shape[-1])  # small images are enlarged so they can be seen
    if scale > 1:
        grid = F.interpolate(grid, scale_factor=scale, mode="nearest")
    path = out or ensure_writable(Path(cfg.outputs)) / f"aug-{cfg.aug.name}-{cfg.data.name}.png"
    torchvision.utils.save_image(grid, str(path), nrow=copies + 1, padding=2, pad_value=1.0)
    typer.echo(f"{path}  (rows: {n} training images; first column original, then {copies} "
               f"copies with aug={cfg.aug.name}: {', '.join(cfg.aug.ops) or 'no ops'})")


@aug_app.command("bench", epilog=_groups_help())
@guarded
def bench(overrides: Optional[List[str]] = OVERRIDES,
          batch: int = typer.Option(256, "--batch"), size: int = typer.Option(32, "--size"),
          threads: int = typer.Option(0, "--threads", help="torch CPU threads (0: torch's default).")):
    """Images/s of a preset on batches (default aug=alexnet), beside torchvision.transforms.v2
    applying flip + padded crop one image at a time (the usual DataLoader-style pipeline)."""
    import statistics
    import time

    import torch
    from torchvision.transforms import v2

    from cnnlab.data import augment

    # the batches are RGB size x size: compose checks the preset (pca, crop_size) against that
    cfg = _compose(["data=shapes", f"data.image_size={size}", "aug=alexnet", *(overrides or [])])
    ours = augment.bench(cfg.aug, batch=batch, size=size, threads=threads or None)
    per_image = v2.Compose([v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()])
    imgs = torch.rand(batch, 3, size, size)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        torch.stack([per_image(img) for img in imgs])
        times.append(time.perf_counter() - start)
    baseline = batch / statistics.median(times)
    typer.echo(f"aug={cfg.aug.name} ({', '.join(cfg.aug.ops)}), batch {batch} of 3x{size}x{size}: "
               f"{ours:,.0f} img/s (target 20,000)")
    typer.echo(f"torchvision v2 flip + crop, one image at a time: {baseline:,.0f} img/s -> "
               f"cnnlab's batched preset is {ours / baseline:.1f}x faster")
