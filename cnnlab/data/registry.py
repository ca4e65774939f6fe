"""The dataset registry: a dataset module decorates one loader with `register_dataset`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from cnnlab.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Callable[[Any], Any]  # cfg.data -> the dataset's pools (cnnlab.data.base)
    description: str
    # What the config checks may know before any file is read (None: only the files tell).
    size: Optional[int] = None  # the side of its square images when data.image_size is not set
    channels: Optional[int] = None
    needs_root: bool = False  # reads its files under data.root


DATASETS = Registry("dataset")  # cnnlab.data sets its loader


def register_dataset(name: str, description: str = "", size: Optional[int] = None,
                     channels: Optional[int] = None, needs_root: bool = False):
    return DATASETS.register(name, entry=lambda fn: DatasetEntry(
        name, fn, description or (fn.__doc__ or "").strip().splitlines()[0], size, channels, needs_root))
