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
    """(matplotlib Figure, rows) of `cnnlab aug preview`: the first `images` training images of
    cfg.data, one a row labelled "<class> (train #<index>)", each followed by `copies` draws of
    cfg.aug (columns "original", "copy 1", ...), titled with the preset and its ops. Small images
    are enlarged by an integer factor (nearest), so every image pixel stays a square of pixels."""
    import torch.nn.functional as F
    import torchvision
    from matplotlib.figure import Figure

    x, y, names = _preview_rows(cfg, images, copies)
    n, cols = x.shape[0], x.shape[1]
    tiles = x.flatten(0, 1)  # row i: original i, then its copies
    scale = max(1, 96 // tiles.shape[-1])  # small images are enlarged so they can be seen
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
    tile_h, tile_w = tiles.shape[-2] + 2, tiles.shape[-1] + 2  # a tile and its padding
    grid = torchvision.utils.make_grid(tiles, nrow=cols, padding=2, pad_value=1.0)
    h, w = grid.shape[-2:]
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.xaxis.tick_top()
    ax.set_xticks([2 + (tile_w - 3) / 2 + tile_w * k for k in range(cols)],
                  ["original"] + [f"copy {k}" for k in range(1, cols)])
    ax.set_yticks([2 + (tile_h - 3) / 2 + tile_h * k for k in range(n)],
                  [f"{names[int(c)]} (train #{i})" for i, c in enumerate(y)])
    ax.tick_params(length=0, labelsize=9)
    for side in ax.spines.values():
        side.set_visible(False)
    ops = ", ".join(cfg.aug.ops) or "no ops"
    ax.set_title(f"aug={cfg.aug.name} ({ops}) on {cfg.data.name}: each copy a new draw of the "
                 "preset", fontsize=10, pad=18)
    return fig, n


def _preview_rows(cfg, images: int, copies: int):
    """((n, 1 + copies, C, H, W) floats in [0, 1]: each training image then its augmented copies,
    the n labels, the class names)."""
    import torch

    from cnnlab import data
    from cnnlab.data import augment

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
    return torch.stack(rows, dim=1), y, list(bundle.class_names)


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
