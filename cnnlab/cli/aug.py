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
    """Write a PNG grid: each training image (rows labelled with its class), then augmented copies
    of it (columns labelled original, copy 1, ...); prints the path."""
    from cnnlab.errors import UsageError
    from cnnlab.run import ensure_writable

    if images < 1 or copies < 1:
        raise UsageError("--images and --copies must be at least 1")
    cfg = _compose(overrides)
    fig, n = preview_figure(cfg, images, copies)
    path = out or ensure_writable(Path(cfg.outputs)) / f"aug-{cfg.aug.name}-{cfg.data.name}.png"
    fig.savefig(str(path), bbox_inches="tight", pad_inches=0.05)
    typer.echo(f"{path}  (rows: {n} training images; first column original, then {copies} "
               f"copies with aug={cfg.aug.name}: {', '.join(cfg.aug.ops) or 'no ops'})")


def preview_figure(cfg, images: int, copies: int):
    """(matplotlib Figure, rows) of `cnnlab aug preview` for a composed config: its data's first
    training images and draws of its aug preset (cnnlab.data.preview.preview_figure)."""
    from cnnlab import data
    from cnnlab.data import augment
    from cnnlab.data.preview import preview_figure as figure

    bundle = data.create(cfg.data)
    split = bundle.train
    aug = augment.create(cfg.aug, train_images=split.images if split.in_memory else split.dataset)
    return figure(bundle, aug, cfg.aug, cfg.data.name, images, copies, seed=cfg.seed)


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
