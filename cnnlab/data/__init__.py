"""Dataset registry: `create(cfg.data)` gives train/val/test splits that are stratified and seeded.

A dataset is one decorated function that loads its pools; everything else (test hold-out when a
dataset has no test split, the validation split, train subsetting, resizing, statistics) is done
here the same way for all of them, from `data.split_seed` only, so every run sees the same data.
"""

from __future__ import annotations

from typing import Any

from cnnlab.data.registry import DATASETS, register_dataset  # noqa: F401  (the public names)
from cnnlab.errors import UsageError


def _load_all() -> None:
    # Importing the modules runs their @register_dataset decorators.
    from cnnlab.data import digits, folder, shapes, torchvision_sets  # noqa: F401


DATASETS.set_loader(_load_all)


def list_datasets() -> dict[str, str]:
    """Registered dataset names -> one-line descriptions."""
    return {name: entry.description for name, entry in DATASETS.items()}


def missing(cfg: Any) -> str | None:
    """Why dataset `cfg.name` cannot be read on this machine, or None. Generated and packaged
    sets are always there; torchvision's file-backed sets are opened under data.root (their
    constructors read the files) and, for a set an OS package ships (fashion_mnist), the
    package's folder is checked when data.root does not hold it."""
    from cnnlab.data import torchvision_sets

    if cfg.name in torchvision_sets.SOURCES:
        return torchvision_sets.missing(cfg.name, cfg)
    return None


class _Relabelled:
    """A streamed dataset whose labels go through `lookup` (old index -> new index)."""

    def __init__(self, dataset, lookup):
        self.dataset, self.lookup = dataset, lookup

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        return image, int(self.lookup[int(label)])


def keep_classes(pools, classes: list[int], name: str):
    """`pools` with only the samples of `classes` (data.classes), relabelled 0..k-1 in the order
    listed, and their class names; before any split, so splits stay stratified and seeded."""
    import torch

    from cnnlab.data.base import Pools, Split

    n = len(pools.class_names)
    outside = [c for c in classes if c >= n]
    if outside:
        raise UsageError(f"data.classes names class {outside[0]}, but data={name} has {n} classes "
                         f"(0-{n - 1})")
    lookup = torch.full((n,), -1, dtype=torch.long)  # loaders keep labels below len(class_names)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))

    def cut(split):
        if split is None:
            return None
        kept = split.take((lookup[split.labels] >= 0).nonzero().squeeze(1))
        labels = lookup[kept.labels]
        if kept.in_memory:
            return Split(labels=labels, images=kept.images)
        return Split(labels=labels, dataset=_Relabelled(kept.dataset, lookup))

    return Pools(train=cut(pools.train), test=cut(pools.test),
                 class_names=[pools.class_names[c] for c in classes], mean=pools.mean,
                 std=pools.std, source=pools.source, skipped=pools.skipped)


def create(cfg: Any):
    """Load dataset `cfg.name` and cut it into a DataBundle following `cfg`'s split settings."""
    import torch

    from cnnlab.data.base import DataBundle, channel_stats, resize_images, stratified_pick

    pools = DATASETS.get(cfg.name).load(cfg)
    if cfg.get("classes") is not None:
        pools = keep_classes(pools, [int(c) for c in cfg.classes], cfg.name)
    train_pool, test = pools.train, pools.test
    if cfg.image_size and train_pool.in_memory:
        train_pool.images = resize_images(train_pool.images, cfg.image_size)
        if test is not None:
            test.images = resize_images(test.images, cfg.image_size)

    gen = torch.Generator().manual_seed(int(cfg.split_seed))
    if test is None:
        held = stratified_pick(train_pool.labels, gen, fraction=cfg.test_fraction, hold_out=True)
        test = train_pool.take(held.nonzero().squeeze(1))
        train_pool = train_pool.take((~held).nonzero().squeeze(1))
    if cfg.val_fraction > 0:
        held = stratified_pick(train_pool.labels, gen, fraction=cfg.val_fraction, hold_out=True)
        val = train_pool.take(held.nonzero().squeeze(1))
        train = train_pool.take((~held).nonzero().squeeze(1))
    else:
        val = train_pool.take(torch.zeros(0, dtype=torch.long))
        train = train_pool
    stats_source = train  # the training split before subsetting: statistics do not vary with size
    if cfg.train_per_class is not None or cfg.train_fraction is not None:
        keep = stratified_pick(train.labels, gen, per_class=cfg.train_per_class,
                               fraction=cfg.train_fraction)
        train = train.take(keep.nonzero().squeeze(1))
    if len(train) == 0:
        raise UsageError(f"dataset '{cfg.name}' has no training images left after splitting")

    if (cfg.mean is None) != (cfg.std is None):
        raise UsageError("set both data.mean and data.std, or neither")
    if cfg.mean is not None and cfg.std is not None:
        mean, std = list(cfg.mean), list(cfg.std)
    elif pools.mean is not None:
        mean, std = pools.mean, pools.std
    elif stats_source.in_memory:
        mean, std = channel_stats(stats_source.images)
    else:
        raise UsageError(f"set data.mean and data.std for the streamed dataset '{cfg.name}'")
    sample = train.images[0] if train.in_memory else train.dataset[0][0]
    if len(mean) != sample.shape[0] or len(std) != sample.shape[0]:
        raise UsageError(f"data.mean and data.std need {sample.shape[0]} values for {cfg.name} "
                         f"({sample.shape[0]} channels), got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise UsageError("data.std values must be positive")
    return DataBundle(
        name=cfg.name, train=train, val=val, test=test, class_names=list(pools.class_names),
        in_chans=int(sample.shape[0]), image_size=(int(sample.shape[1]), int(sample.shape[2])),
        mean=[float(m) for m in mean], std=[float(s) for s in std],
        info={"in_memory": train.in_memory, "skipped_images": pools.skipped,
              **({"source": pools.source} if pools.source else {})},
    )
