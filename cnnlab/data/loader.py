"""Batches for the engine: uint8 images in, normalised float batches on the device out.

In memory (the default for everything that fits): the whole split is one uint8 tensor on the
training device; an epoch is a seeded permutation cut into batches, and augmentation runs on
whole batches on the device (up to CHUNK_BATCHES of them per call). No DataLoader, no per-image
Python. Streamed folders go through a
torch DataLoader with worker processes and then take the same batch path, so a preset means the
same thing on both. The permutation depends only on (seed, epoch), so an epoch can be replayed
or resumed at any batch.
"""

from __future__ import annotations

import itertools
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
        self._neg_mean = -self.mean.view(1, -1, 1)

    def finish(self, x_u8: torch.Tensor, gen: Optional[torch.Generator], y: torch.Tensor,
               rows: Optional[torch.Tensor] = None):
        """(normalised images, targets): targets are soft (N, classes) after mixup/cutmix.
        rows: x_u8 holds the whole split and the batch is these rows of it (the compiled fused
        path reads them where they are; the other paths take them out first)."""
        x_u8 = x_u8.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if getattr(self.augment, "pixel_plan", None) is not None and x_u8.dtype == torch.uint8:
            return self._crop_normalised(x_u8, gen, rows), y
        if rows is not None:
            x_u8 = x_u8.index_select(0, rows)
        if self.augment is None and x_u8.dtype == torch.uint8:
            return self._normalise(x_u8), y  # uint8 divided straight into the first float buffer
        x = x_u8.float().div_(255)
        if self.augment is not None:
            if getattr(self.augment, "mixes", False):
                x, y = self.augment(x, gen, y, self.num_classes)
            else:
                x = self.augment(x, gen)
        return self._normalise(x), y

    def _crop_normalised(self, x_u8: torch.Tensor, gen, rows: Optional[torch.Tensor]) -> torch.Tensor:
        """A preset that is one fused crop (crop, flip, pca: augment.pixel_plan). On a CPU with
        numba, one compiled pass (`kernels.crop_normalise`). Otherwise the pixelwise work is done
        before the gather: the uint8 images and their padding pixel are scaled, shifted, clamped
        and normalised in place in one float buffer, then one gather crops and mirrors them
        straight into the model's memory order. Either way each output value goes through the
        same float operations as in augment-then-normalise, so the batch is the same to the bit."""
        from cnnlab.data import kernels
        from cnnlab.data.augment import gather_pixels, with_pad_pixel

        n, c = x_u8.shape[0] if rows is None else rows.numel(), x_u8.shape[1]
        shape, plan = (n, c, *x_u8.shape[2:]), self.augment.pixel_plan  # the batch's shape
        if kernels.enabled(self.device):
            pix, _, shift = plan(shape, gen, self.device, separable=True)
            rows = torch.arange(n) if rows is None else rows
            return kernels.crop_normalise(x_u8, rows, pix, shift, self._neg_mean, self.std,
                                          self.channels_last).to(self.dtype)
        pix, (oh, ow), shift = plan(shape, gen, self.device)
        if rows is not None:
            x_u8 = x_u8.index_select(0, rows)
        # uint8 to float32, then v / 255 (the bits of x.float() / 255); the padding pixel is 0
        src = with_pad_pixel(x_u8, plan.pad, torch.float32).div_(255)
        if shift is not None:
            src.add_(shift.view(n, c, 1)).clamp_(0, 1)
        # x - mean as x + (-mean): the same bits, and the kernel the shift has just run
        src.add_(self._neg_mean).div_(self.std.view(1, c, 1))
        return gather_pixels(src, pix, oh, ow, self.channels_last).to(self.dtype)

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


# The in-memory loader augments and normalises up to CHUNK_BATCHES batches in one call (at most
# CHUNK_BYTES of float images): a small batch pays each tensor op's fixed cost, which grows when
# the model's step has just evicted the caches; a chunk pays it once for several batches.
# lenet5 on shapes, aug=alexnet, one thread on the 2-core AMD EPYC, `cnnlab bench-train --steps
# 96`, chunks of 4 and 8 in alternation: the compiled pass's data phase was 0.26-0.28 ms a batch of
# 64 in chunks of 4 and 0.20-0.23 ms in chunks of 8 (the eager path: 0.61 ms one batch at a time,
# 0.41-0.44 ms in chunks of 4).
CHUNK_BATCHES = 8
CHUNK_BYTES = 8 << 20


def _chunk_size(augment, batch_size: int, image_numel: int) -> int:
    """Batches per augmentation call: CHUNK_BATCHES, fewer for large images; 1 when the preset
    has an op that draws once per batch (mixup's partners and batch lambda, the colour ops'
    order; augment.per_image is False), which a chunk would change."""
    if augment is not None and not getattr(augment, "per_image", False):
        return 1
    per_batch = batch_size * max(1, int(image_numel)) * 4
    return max(1, min(CHUNK_BATCHES, CHUNK_BYTES // per_batch))


class InMemoryLoader:
    """Seeded batches cut from a uint8 (N, C, H, W) tensor kept on the training device.

    With `rank`/`world` set, each process of a data-parallel job takes every world-th sample of
    the same epoch permutation, so the shards are disjoint and cover the epoch (`even`: all but
    the permutation's last len % world samples, so the ranks' shards are the same size).
    Augmentation draws from `aug_seed` (default seed + 1): the permutation must be the same on
    every rank, the augmentation need not be. Batches are made `chunk` at a time, in one
    augmentation and normalisation call (`_chunk_size`: 1 for presets with a per-batch draw);
    the draws then depend on where the chunks start, so a checkpoint's position names the
    chunk (`aug_from`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean, std, device="cpu", shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, augment: Optional[Augment] = None, channels_last: bool = False,
                 rank: int = 0, world: int = 1, dtype=torch.float32,
                 num_classes: Optional[int] = None, even: bool = False,
                 aug_seed: Optional[int] = None, chunk: Optional[int] = None):
        self.path = _BatchPath(mean, std, device, augment, channels_last, dtype, num_classes)
        self.images = images.to(self.path.device).contiguous()  # rows the batch path reads
        self.labels = labels.to(self.path.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world, self.even = seed, rank, world, even
        self.aug_seed = seed + 1 if aug_seed is None else aug_seed
        self.chunk = self._default_chunk() if chunk is None else max(1, int(chunk))
        self.epoch, self.start_batch, self._aug_state, self.gen = 0, 0, None, None
        self._aug_from, self._made = None, (0, 0, None)

    def _default_chunk(self) -> int:
        return _chunk_size(self.path.augment, self.batch_size, self.images[:1].numel())

    def set_epoch(self, epoch: int, start_batch: int = 0, aug_state=None,
                  aug_from: Optional[int] = None) -> None:
        """Start `epoch` at batch `start_batch`; `aug_state` is the augmentation generator's state
        before batch `aug_from` (default start_batch), the start of the chunk `start_batch` is in
        (from `position`): the chunk is made again from there, so a resumed epoch draws the same
        crops."""
        self.epoch, self.start_batch, self._aug_state, self.gen = epoch, start_batch, aug_state, None
        self._aug_from = aug_from

    def position(self, batches_done: int) -> dict:
        """Where the current epoch stands after `batches_done` batches: what a checkpoint keeps."""
        gen = getattr(self, "gen", None)
        made_from, made_to, state = getattr(self, "_made", (0, 0, None))
        if gen is None:
            aug, aug_from = None, batches_done
        elif made_from <= batches_done < made_to:  # inside a chunk made already: its start
            aug, aug_from = state, made_from
        else:
            aug, aug_from = gen.get_state(), batches_done
        return {"epoch": self.epoch, "batch": int(batches_done), "aug": aug,
                "aug_from": int(aug_from), "chunk": self.chunk}

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

    def _first_made(self, gen) -> int:
        """The batch the epoch's making starts at: the start of start_batch's chunk on resume."""
        if self._aug_from is None or gen is None:
            return self.start_batch
        return min(self._aug_from, self.start_batch)

    def _chunk(self, x_u8: torch.Tensor, y: torch.Tensor, b: int, gen, sizes: list[int],
               rows: Optional[torch.Tensor] = None):
        """Batches b, b + 1, ... (of `sizes` images) made from one chunk of uint8 images (rows:
        these rows of x_u8) in one call through the batch path; yields those from start_batch on."""
        self._made = (b, b + len(sizes), gen.get_state() if gen is not None else None)
        x, y = self.path.finish(x_u8, gen, y, rows)
        batches = [(x, y)] if len(sizes) == 1 else list(zip(x.split(sizes), y.split(sizes)))
        yield from batches[max(0, self.start_batch - b):]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        gen = self._aug_generator()
        bs, total = self.batch_size, len(self)
        b = self._first_made(gen)
        while b < total:
            end = min(b + self.chunk, total)
            # the batch path takes the images' rows out (index_select: a plain row gather, much
            # lighter per call than advanced indexing) or reads them in place
            idx = order[b * bs:end * bs]
            sizes = [min(bs, idx.numel() - k * bs) for k in range(end - b)]
            yield from self._chunk(self.images, self.labels.index_select(0, idx), b, gen, sizes,
                                   rows=idx)
            b = end


class StreamLoader:
    """The same batches for a Dataset too large for memory, decoded by DataLoader workers: the
    workers' batches are gathered into the same chunks as InMemoryLoader's (sized from the
    first batch) and take the same batch path."""

    def __init__(self, dataset, labels: torch.Tensor, batch_size: int, *, mean, std, device="cpu",
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 augment: Optional[Augment] = None, channels_last: bool = False, workers: int = 2,
                 rank: int = 0, world: int = 1, dtype=torch.float32,
                 num_classes: Optional[int] = None, even: bool = False,
                 aug_seed: Optional[int] = None, chunk: Optional[int] = None):
        self.path = _BatchPath(mean, std, device, augment, channels_last, dtype, num_classes)
        self.dataset, self.labels = dataset, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.workers, self.rank, self.world, self.even = seed, workers, rank, world, even
        self.aug_seed = seed + 1 if aug_seed is None else aug_seed
        self.chunk = chunk
        self.epoch, self.start_batch, self._aug_state, self.gen = 0, 0, None, None
        self._aug_from, self._made = None, (0, 0, None)

    set_epoch = InMemoryLoader.set_epoch
    position = InMemoryLoader.position
    _aug_generator = InMemoryLoader._aug_generator
    _first_made = InMemoryLoader._first_made
    _chunk = InMemoryLoader._chunk
    num_samples = InMemoryLoader.num_samples
    __len__ = InMemoryLoader.__len__

    def __iter__(self):
        from torch.utils.data import DataLoader, Subset

        n = self.labels.numel()
        order = _shard(torch.randperm(n, generator=_epoch_generator(self.seed, self.epoch))
                       if self.shuffle else torch.arange(n), self.rank, self.world, self.even)
        gen = self._aug_generator()
        bs, total = self.batch_size, len(self)
        b = self._first_made(gen)
        loader = DataLoader(Subset(self.dataset, order[b * bs:].tolist()), batch_size=bs,
                            drop_last=self.drop_last, num_workers=self.workers,
                            pin_memory=self.path.device.type == "cuda",
                            persistent_workers=False,
                            # worker seeds from our own stream, not the global RNG (which
                            # would shift dropout and init between in-memory and streamed runs)
                            generator=_epoch_generator(self.seed + 2, self.epoch))
        pending: list = []
        for batch in itertools.chain(loader, [None]):  # None: the end (flush what is pending)
            if batch is not None:
                if self.chunk is None:
                    self.chunk = _chunk_size(self.path.augment, bs, batch[0][:1].numel())
                pending.append(batch)
            if pending and (batch is None or len(pending) == self.chunk
                            or b + len(pending) >= total):
                x, y, sizes = _joined(pending)
                yield from self._chunk(x, y, b, gen, sizes)
                b, pending = b + len(pending), []


def _joined(batches: list) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The DataLoader's batches as one chunk: (images, labels, batch sizes)."""
    xs, ys = zip(*batches)
    sizes = [len(y) for y in ys]
    return ((xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))) + (sizes,)


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
