"""A compiled CPU kernel for the loader's fused batch path: crop, flip, PCA lighting and
normalisation of uint8 images in one pass (numba).

Why a compiled loop: for presets of crop, flip and PCA lighting (`augment.pixel_plan`), every
output value is one source pixel, or the padding's zero, sent through the same few float32
operations: v / 255, + the image's lighting shift, clamp to [0, 1], + (-mean), / std. Eager
PyTorch runs that as a row gather, a uint8-to-float divide, four in-place passes and one pixel
gather, and each of those pays a cold-cache cost right after a training step has evicted the
caches. Here, per image and channel, the 256 values a uint8 can take go through those operations
once (a 256-entry table), and one loop over the output reads the images' pixels in place, looks
them up and writes straight into the model's memory order.

The batch is the same to the bit: each table entry is the same sequence of IEEE float32
operations as the eager path (numba compiles without fastmath, so nothing is reassociated or
fused), and the table is indexed by the pixel's own value. tests/data/test_loader_batch_path.py
checks both paths against the ops run one by one.

numba (a well-kept JIT compiler for numeric Python loops) is a dependency; where it cannot be
imported, or CNNLAB_KERNELS=torch is set, or the batch lives on a GPU, the loader takes the eager
path, which gives the same bits. The kernel runs on the calling thread. Its first call compiles
it (0.7 s on the 2-core AMD EPYC), and numba caches the machine code on disk for later
processes (where no folder can hold that cache, each process compiles it afresh).

lenet5 on shapes, aug=alexnet, one thread, 2-core AMD EPYC (`cnnlab bench-train model=lenet5
data=shapes aug=alexnet trainer.threads=1`, three runs each, the two paths in alternation): the
data phase took 0.19-0.21 ms a batch of 64 here and 0.36-0.41 ms on the eager path, and
end to end came to 0.96-0.97x the fixed-batch ceiling against 0.92x.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

ENV = "CNNLAB_KERNELS"  # "torch": always the eager path (to compare, or to rule the kernel out)


def enabled(device: torch.device) -> bool:
    """Whether the loader's fused path runs compiled here: a CPU batch, numba importable and
    CNNLAB_KERNELS not set to "torch"."""
    if torch.device(device).type != "cpu" or os.environ.get(ENV, "").strip().lower() == "torch":
        return False
    return _kernel() is not None


def _crop_normalise_loop(src, rows, row_table, col_table, oy, ox, shift, neg_mean, std, base, out):
    """The kernel, compiled by numba (`_kernel`). src (N, C, HW) uint8; rows (n,): which images;
    output pixel (r, c) of image i is source pixel row_table[oy[i], r] + col_table[ox[i], c],
    the padding when that is HW or more; shift (n, C); base[v] = float32(v) / 255; out
    (n, oh, ow, C) float32 in any memory order."""
    n, c, hw = rows.shape[0], src.shape[1], src.shape[2]
    oh, ow = row_table.shape[1], col_table.shape[1]
    zero, one = np.float32(0.0), np.float32(1.0)
    look = np.empty((c, 256), np.float32)
    for i in range(n):
        for ch in range(c):  # every value a pixel can take, through the float32 operations
            s, m, d = shift[i, ch], neg_mean[ch], std[ch]
            for v in range(256):
                look[ch, v] = (min(max(base[v] + s, zero), one) + m) / d
        image, starts, cols = src[rows[i]], row_table[oy[i]], col_table[ox[i]]
        for r in range(oh):  # then each output pixel looks its source pixel's value up
            start, dest = starts[r], out[i, r]
            for x in range(ow):
                q = start + cols[x]
                if q >= hw:
                    for ch in range(c):
                        dest[x, ch] = look[ch, 0]
                elif c == 3:
                    dest[x, 0] = look[0, image[0, q]]
                    dest[x, 1] = look[1, image[1, q]]
                    dest[x, 2] = look[2, image[2, q]]
                else:
                    for ch in range(c):
                        dest[x, ch] = look[ch, image[ch, q]]


@functools.lru_cache(maxsize=None)
def _kernel():
    """The compiled loop (numba's dispatcher; it compiles on first call), or None without a
    working numba."""
    try:
        import numba
    except Exception:  # not installed, or built for another numpy: the eager path does the work
        return None
    try:  # machine code cached on disk, in __pycache__ or numba's user cache folder
        return numba.njit(cache=True, nogil=True)(_crop_normalise_loop)
    except RuntimeError:  # no folder to cache in: compiled afresh in each process
        return numba.njit(nogil=True)(_crop_normalise_loop)


@functools.lru_cache(maxsize=None)
def _base():
    # v / 255 in float32 for every uint8 v: the bits of x.float() / 255
    return (torch.arange(256, dtype=torch.float32) / 255).numpy()


def crop_normalise(src: torch.Tensor, rows: torch.Tensor, pixels: tuple, shift: torch.Tensor | None,
                   neg_mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(n, C, oh, ow) float32 from the uint8 (N, C, H, W) `src`: image rows[i], output pixel
    (r, c) is source pixel row_table[oy[i], r] + col_table[ox[i], c] (from H * W on: the
    padding's zero) for pixels = (row_table, col_table, oy, ox) (`pixel_plan(...,
    separable=True)`), plus shift[i, c] (None: no lighting), clamped to [0, 1], minus mean, over
    std; written in NHWC order when channels_last."""
    row_table, col_table, oy, ox = (p.contiguous().numpy() for p in pixels)
    n, c, oh, ow = rows.numel(), src.shape[1], row_table.shape[1], col_table.shape[1]
    out = torch.empty((n, c, oh, ow), dtype=torch.float32,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if shift is None:
        # no lighting: + 0 and a clamp of a value already in [0, 1] change no bit
        shift = torch.zeros((n, c), dtype=torch.float32)
    _kernel()(src.contiguous().view(src.shape[0], c, -1).numpy(), rows.contiguous().numpy(),
              row_table, col_table, oy, ox, shift.contiguous().numpy(),
              neg_mean.reshape(c).numpy(), std.reshape(c).numpy(), _base(),
              out.permute(0, 2, 3, 1).numpy())  # (n, oh, ow, C) over the same memory
    return out
