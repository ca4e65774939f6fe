"""Numeric precision of a run: the parameter dtype and the autocast context around forward passes.

The engine only calls `autocast()` and reads `param_dtype`, so the presets that later add
mixed precision and loss scaling wrap the same loop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import UsageError

DTYPES = {"float64": "float64", "float32": "float32"}


@dataclass
class Precision:
    name: str
    param_dtype: Any
    device_type: str

    def autocast(self):
        return contextlib.nullcontext()


def create(cfg: Any, device) -> Precision:
    import torch

    if cfg.dtype not in DTYPES:
        raise UsageError(f"unknown precision dtype '{cfg.dtype}'; choose from: {', '.join(DTYPES)}")
    return Precision(cfg.name, getattr(torch, DTYPES[cfg.dtype]), torch.device(device).type)
