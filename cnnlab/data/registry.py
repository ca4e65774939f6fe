"""The dataset registry: a dataset module decorates one loader with `register_dataset`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cnnlab.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Callable[[Any], Any]  # cfg.data -> the dataset's pools (cnnlab.data.base)
    description: str


DATASETS = Registry("dataset")  # cnnlab.data sets its loader


def register_dataset(name: str, description: str = ""):
    return DATASETS.register(name, entry=lambda fn: DatasetEntry(
        name, fn, description or (fn.__doc__ or "").strip().splitlines()[0]))
