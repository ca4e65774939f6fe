"""What every dataset hands the engine: three splits, class names and normalisation statistics.

Splits hold images either as one uint8 tensor (N, C, H, W) in memory or, for folders too large
for memory, as a torch Dataset that yields uint8 (C, H, W) tensors. Splitting and subsetting work
on labels and index tensors, so both kinds are cut the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class Split:
    labels: torch.Tensor  # int64 (N,)
    images: Optional[torch.Tensor] = None  # uint8 (N, C, H, W) when held in memory
    dataset: Any = None  # a torch Dataset of (uint8 CHW tensor, label) when streamed

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def take(self, index: torch.Tensor) -> "Split":
        """The samples at `index`, in that order."""
        index = index.long()
        if self.images is not None:
            return Split(labels=self.labels[index], images=self.images[index])
        from torch.utils.data import Subset

        return Split(labels=self.labels[index], dataset=Subset(self.dataset, index.tolist()))


@dataclass
class Pools:
    """What a dataset loader returns: a train pool and, when the dataset has one, a test split."""

    train: Split
    test: Optional[Split]
    class_names: list[str]
    mean: Optional[list[float]] = None  # known statistics (else computed from the train split)
    std: Optional[list[float]] = None
    source: Optional[str] = None  # where the files were read from (the bundle's info["source"])
    skipped: int = 0  # undecodable files left out (data.on_bad_image=skip): info["skipped_images"]


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    in_chans: int
    image_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def stratified_pick(labels: torch.Tensor, generator: torch.Generator, *, fraction: float | None = None,
                    per_class: int | None = None, hold_out: bool = False) -> torch.Tensor:
    """Boolean mask choosing `fraction` of each class (rounded) or `per_class` of each class.

    With `hold_out` the picked part is set aside (test or validation), so at least one image of
    every class stays behind; otherwise at least one is picked when the fraction is positive.

    Vectorised: a random permutation, then a stable sort by label groups each class in random
    order; a sample's rank inside its class decides whether it is picked.
    """
    n = labels.numel()
    perm = torch.randperm(n, generator=generator)
    order = perm[torch.sort(labels[perm], stable=True).indices]
    sorted_labels = labels[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    if per_class is not None:
        quota = torch.clamp(counts, max=per_class)
    else:
        quota = torch.round(counts.double() * float(fraction)).long()
        quota = torch.where(counts > 0, quota.clamp(min=1 if fraction > 0 else 0), quota)
        if hold_out:
            quota = torch.minimum(quota, (counts - 1).clamp(min=0))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[rank < quota[sorted_labels]]] = True
    return mask


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], in float64 and in chunks."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // c
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) tensor to size x size with antialiased bilinear filtering."""
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images
    out = []
    for i in range(0, images.shape[0], 2048):
        x = images[i:i + 2048].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
