"""Batches for the engine: uint8 images in, normalised float batches on the device out.

In memory (the default for everything that fits): the whole split is one uint8 tensor on the
training device; an epoch is a seeded permutation cut into batches, and augmentation runs on the
whole batch on the device. No DataLoader, no per-image Python. Streamed folders go through a
torch DataLoader with worker processes and then take the same batch path, so a preset means the
same thing on both. The permutation depends only on (seed, epoch), so an epoch can be replayed
or resumed at any batch.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    # A distinct, reproducible stream per (seed, epoch); the multiplier keeps streams apart.
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + int(epoch)) % 2**63)


def _shard(order: torch.Tensor, rank: int, world: int, even: bool) -> torch.Tensor:
    """Rank `rank`'s every-world-th share of an epoch's order; `even` first drops the order's
    last len % world samples, so every rank gets the same count (and takes the same steps)."""
    if even:
        order = order[:order.numel() - order.numel() % world]
    return order[rank::world]


class _BatchPath:
    """What both loaders do to a uint8 batch on the device: augment, then normalise."""

    def __init__(self, mean, std, device, augment: Optional[Augment], channels_last: bool,
                 dtype=torch.float32, num_classes: Optional[int] = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_classes = num_classes
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.augment = augment
        self.channels_last = channels_last

    def finish(self, x_u8: torch.Tensor, gen: Optional[torch.Generator], y: torch.Tensor):
        """(normalised images, targets): targets are soft (N, classes) after mixup/cutmix."""
        x_u8 = x_u8.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.augment is None and x_u8.dtype == torch.uint8:
            return self._normalise(x_u8), y  # uint8 divided straight into the first float buffer
        x = x_u8.float().div_(255)
        if self.augment is not None:
            if getattr(self.augment, "mixes", False):
                x, y = self.augment(x, gen, y, self.num_classes)
            else:
                x = self.augment(x, gen)
        return self._normalise(x), y

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std, then into the memory order the model wants. The arithmetic runs in
        NCHW order: broadcasting a per-channel mean over an NHWC buffer of 3 channels was 5-8x
        slower on CPU (one thread, 64x3x32x32: sub 158 us and div 439 us in NHWC, against 30 and
        52 us in NCHW, plus 60 us for the copy into NHWC after). A uint8 x is divided by 255 on
        its way into the first buffer: float32 v / 255, the same bits as x.float() / 255."""
        if x.dtype == torch.uint8:
            out = torch.div(x.contiguous(), 255).sub_(self.mean)
        else:
            out = torch.sub(x.contiguous(), self.mean)
        out = out.div_(self.std)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out.to(self.dtype)


class InMemoryLoader:
    """Seeded batches cut from a uint8 (N, C, H, W) tensor kept on the training device.

    With `rank`/`world` set, each process of a data-parallel job takes every world-th sample of
    the same epoch permutation, so the shards are disjoint and cover the epoch (`even`: all but
    the permutation's last len % world samples, so the ranks' shards are the same size).
    Augmentation draws from `aug_seed` (default seed + 1): the permutation must be the same on
    every rank, the augmentation need not be.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean, std, device="cpu", shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, augment: Optional[Augment] = None, channels_last: bool = False,
                 rank: int = 0, world: int = 1, dtype=torch.float32,
                 num_classes: Optional[int] = None, even: bool = False,
                 aug_seed: Optional[int] = None):
        self.path = _BatchPath(mean, std, device, augment, channels_last, dtype, num_classes)
        self.images = images.to(self.path.device)
        self.labels = labels.to(self.path.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world, self.even = seed, rank, world, even
        self.aug_seed = seed + 1 if aug_seed is None else aug_seed
        self.epoch, self.start_batch, self._aug_state, self.gen = 0, 0, None, None

    def set_epoch(self, epoch: int, start_batch: int = 0, aug_state=None) -> None:
        """Start `epoch` at batch `start_batch`; `aug_state` is the augmentation generator's state
        after the batches before it (from `position`), so a resumed epoch draws the same crops."""
        self.epoch, self.start_batch, self._aug_state, self.gen = epoch, start_batch, aug_state, None

    def position(self, batches_done: int) -> dict:
        """Where the current epoch stands after `batches_done` batches: what a checkpoint keeps."""
        gen = getattr(self, "gen", None)
        return {"epoch": self.epoch, "batch": int(batches_done),
                "aug": gen.get_state() if gen is not None else None}

    def _aug_generator(self):
        gen = (_epoch_generator(self.aug_seed, self.epoch, self.path.device)
               if self.path.augment else None)
        if gen is not None and getattr(self, "_aug_state", None) is not None:
            gen.set_state(self._aug_state)
        self.gen = gen
        return gen

    @property
    def num_samples(self) -> int:
        n = self.labels.numel()
        return len(range(self.rank, n - n % self.world if self.even else n, self.world))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample order for the current epoch."""
        n = self.labels.numel()
        if self.shuffle:
            order = torch.randperm(n, generator=_epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        return _shard(order, self.rank, self.world, self.even).to(self.path.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        gen = self._aug_generator()
        for b in range(self.start_batch, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            # index_select: a plain row gather, much lighter per call than advanced indexing
            yield self.path.finish(self.images.index_select(0, idx), gen,
                                   self.labels.index_select(0, idx))


class StreamLoader:
    """The same batches for a Dataset too large for memory, decoded by DataLoader workers."""

    def __init__(self, dataset, labels: torch.Tensor, batch_size: int, *, mean, std, device="cpu",
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 augment: Optional[Augment] = None, channels_last: bool = False, workers: int = 2,
                 rank: int = 0, world: int = 1, dtype=torch.float32,
                 num_classes: Optional[int] = None, even: bool = False,
                 aug_seed: Optional[int] = None):
        self.path = _BatchPath(mean, std, device, augment, channels_last, dtype, num_classes)
        self.dataset, self.labels = dataset, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.workers, self.rank, self.world, self.even = seed, workers, rank, world, even
        self.aug_seed = seed + 1 if aug_seed is None else aug_seed
        self.epoch, self.start_batch, self._aug_state, self.gen = 0, 0, None, None

    set_epoch = InMemoryLoader.set_epoch
    position = InMemoryLoader.position
    _aug_generator = InMemoryLoader._aug_generator
    num_samples = InMemoryLoader.num_samples
    __len__ = InMemoryLoader.__len__

    def __iter__(self):
        from torch.utils.data import DataLoader, Subset

        n = self.labels.numel()
        order = _shard(torch.randperm(n, generator=_epoch_generator(self.seed, self.epoch))
                       if self.shuffle else torch.arange(n), self.rank, self.world, self.even)
        order = order[self.start_batch * self.batch_size:]
        loader = DataLoader(Subset(self.dataset, order.tolist()), batch_size=self.batch_size,
                            drop_last=self.drop_last, num_workers=self.workers,
                            pin_memory=self.path.device.type == "cuda",
                            persistent_workers=False,
                            # worker seeds from our own stream, not the global RNG (which
                            # would shift dropout and init between in-memory and streamed runs)
                            generator=_epoch_generator(self.seed + 2, self.epoch))
        gen = self._aug_generator()
        for x, y in loader:
            yield self.path.finish(x, gen, y)


def make_loader(split, batch_size: int, *, train: bool, bundle, device, seed: int,
                augment: Optional[Augment] = None, channels_last: bool = False, workers: int = 2,
                rank: int = 0, world: int = 1, dtype=torch.float32,
                num_classes: Optional[int] = None, aug_seed: Optional[int] = None):
    """A loader for one split: shuffled, augmented and with full batches only when training.

    rank/world: this process's shard of a data-parallel run. Training shards are even (the
    epoch's last len % world samples sit out), so every rank takes the same number of steps."""
    # Every sample once per epoch; only a lone last sample is dropped (batch norm needs two).
    n = len(split) // world
    drop_last = train and n > 1 and n % batch_size == 1
    kw = dict(mean=bundle.mean, std=bundle.std, device=device, shuffle=train,
              drop_last=drop_last, seed=seed,
              augment=augment if train else None, channels_last=channels_last,
              rank=rank, world=world, dtype=dtype, num_classes=num_classes,
              even=train and world > 1, aug_seed=aug_seed)
    if split.in_memory:
        return InMemoryLoader(split.images, split.labels, batch_size, **kw)
    return StreamLoader(split.dataset, split.labels, batch_size, workers=workers, **kw)
