"""What an augmentation preset does to training images, as a labelled grid: the first training
images, each followed by fresh draws of the preset. `cnnlab aug preview` saves it as a PNG and a
run's TensorBoard logger shows it beside the scalars (cnnlab.training.loggers)."""

from __future__ import annotations

from typing import Any


def preview_rows(bundle, aug, images: int, copies: int, seed: int = 0):
    """((n, 1 + copies, C, H, W) floats in [0, 1]: each of the first n training images of
    `bundle` then `copies` draws of `aug` (cnnlab.data.augment.create's callable, or None), the n
    labels, the class names). The draws come from their own generator seeded with `seed`: the
    global random state a run trains with is left as it was."""
    import torch

    split = bundle.train
    n = min(images, len(split))
    x = (split.images[:n] if split.in_memory else torch.stack([split.dataset[i][0] for i in range(n)]))
    x = x.float().div(255)
    y = split.labels[:n]
    gen = torch.Generator().manual_seed(seed)
    rows = [x]
    for _ in range(copies):
        if aug is None:
            rows.append(x)
        elif aug.mixes:
            rows.append(aug(x, gen, y, bundle.num_classes)[0])
        else:
            rows.append(aug(x, gen))
    return torch.stack(rows, dim=1), y, list(bundle.class_names)


def preview_figure(bundle, aug, aug_cfg: Any, data_name: str, images: int, copies: int, seed: int = 0):
    """(matplotlib Figure, rows): preview_rows as one image, a row per training image labelled
    "<class> (train #<index>)", columns "original", "copy 1", ..., titled with the preset
    (aug_cfg.name) and its ops. Small images are enlarged by an integer factor (nearest), so every
    image pixel stays a square of pixels."""
    import torch.nn.functional as F
    import torchvision
    from matplotlib.figure import Figure

    x, y, names = preview_rows(bundle, aug, images, copies, seed)
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
    ops = ", ".join(aug_cfg.ops) or "no ops"
    ax.set_title(f"aug={aug_cfg.name} ({ops}) on {data_name}: each copy a new draw of the "
                 "preset", fontsize=10, pad=18)
    return fig, n
