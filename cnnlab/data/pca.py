"""RGB covariance eigen-decomposition for PCA lighting (Krizhevsky et al. 2012, sec. 4.1).

`rgb_pca(images)` takes the training images (uint8 (N, 3, H, W) tensor, or a torch Dataset of
(uint8 CHW tensor, label) for streamed folders), scales pixels to [0, 1] and returns the
eigenvalues (descending) and eigenvectors (columns) of their 3x3 covariance, in float64 on the CPU.

Cost is bounded: at most `max_images` images (evenly spaced, so the result is deterministic) and
at most about `max_pixels` pixels per image (a regular spatial stride on large images), summed in
chunks in float64. The covariance is the population one (divide by the pixel count). Results are
cached in memory by the tensor's shape and a fingerprint of its bytes, so rebuilding the parts of
a run on the same data does not recompute them.
"""

from __future__ import annotations

import hashlib
import math

import torch

from cnnlab.errors import UsageError

MAX_IMAGES = 10_000
MAX_PIXELS = 1024  # per image: 32x32 is read whole, 224x224 with stride 7
_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _fingerprint(images: torch.Tensor) -> str:
    n = images.shape[0]
    step = max(1, n // 64)
    sample = images[::step][:64].contiguous().cpu()
    return hashlib.sha1(sample.numpy().tobytes()).hexdigest()


def _stride(h: int, w: int, max_pixels: int) -> int:
    return max(1, math.ceil(math.sqrt(h * w / max_pixels)))


def _moments(chunks) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population covariance of the RGB pixels in an iterable of uint8 (n, 3, h, w)."""
    total = torch.zeros(3, dtype=torch.float64)
    outer = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    for chunk in chunks:
        p = chunk.to("cpu", torch.float64).div_(255).permute(1, 0, 2, 3).reshape(3, -1)
        total += p.sum(1)
        outer += p @ p.T
        count += p.shape[1]
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


def covariance(images, max_images: int = MAX_IMAGES, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """3x3 population covariance of [0, 1] RGB pixels over a deterministic subsample."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise UsageError(f"PCA lighting needs 3-channel (RGB) images; got shape {tuple(images.shape)}")
        n, _, h, w = images.shape
        idx = torch.linspace(0, n - 1, min(n, max_images)).round().long() if n else torch.zeros(0, dtype=torch.long)
        s = _stride(h, w, max_pixels)
        chunks = (images[idx[i:i + 1024]][:, :, ::s, ::s] for i in range(0, idx.numel(), 1024))
        return _moments(chunks)[1]
    # a streamed Dataset: decoding is the cost, so read fewer images
    n = len(images)
    idx = torch.linspace(0, n - 1, min(n, max_images // 10)).round().long().tolist()

    def chunks():
        for i in idx:
            img = images[i][0]
            if img.dim() != 3 or img.shape[0] != 3:
                raise UsageError(f"PCA lighting needs 3-channel (RGB) images; got shape {tuple(img.shape)}")
            s = _stride(img.shape[1], img.shape[2], max_pixels)
            yield img[None, :, ::s, ::s]

    return _moments(chunks())[1]


def rgb_pca(images, max_images: int = MAX_IMAGES, max_pixels: int = MAX_PIXELS
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigvals (3,) descending, eigvecs (3, 3) with eigenvectors as columns), float64 CPU."""
    key = None
    if isinstance(images, torch.Tensor):
        key = (tuple(images.shape), _fingerprint(images), max_images, max_pixels)
        if key in _CACHE:
            return _CACHE[key]
    vals, vecs = torch.linalg.eigh(covariance(images, max_images, max_pixels))
    vals, vecs = vals.flip(0).clamp(min=0), vecs.flip(1)  # eigh is ascending; tiny negatives are rounding
    if key is not None:
        _CACHE[key] = (vals, vecs)
    return vals, vecs
