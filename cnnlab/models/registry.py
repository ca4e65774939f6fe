"""The model registry: a family module decorates one constructor per architecture with
`register_model`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cnnlab.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    fn: Callable[..., Any]
    default_input: tuple[int, int, int]  # (C, H, W) the architecture was designed for
    kind: str = "classifier"  # or "block": a building block to inspect, not to train


MODELS = Registry("model")  # cnnlab.models sets its loader


def register_model(name: str, family: str, default_input=(3, 32, 32), kind: str = "classifier"):
    return MODELS.register(name, entry=lambda fn: ModelEntry(name, family, fn, tuple(default_input), kind))
